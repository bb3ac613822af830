"""Synthetic agent memories for demos, tests and benchmarks.

Everything here is deterministic for a seed and uses only the standard library.
Six users with personas talk to four agents; each user has five facts planted
at fixed early indices, and :func:`demo_questions` asks paraphrased questions
about them with the planted memory ids as evidence.

Record format (one JSON object per line in the landing files)::

    {"memory_id", "user_id", "agent_id", "session_id", "role", "content",
     "created_at": "YYYY-MM-DDTHH:MM:SSZ", "metadata": {...}}
"""

from __future__ import annotations

import bisect
import datetime as dt
import gzip
import json
import math
import os
import random
from dataclasses import dataclass, field
from itertools import accumulate, islice
from pathlib import Path
from typing import Iterator

__all__ = [
    "AGENTS",
    "DEFAULT_START",
    "USER_IDS",
    "chat_turns",
    "demo_questions",
    "generate_memories",
    "write_demo_landing",
]

DEFAULT_START = dt.date(2024, 6, 1)
AGENTS = ("assistant", "travel-planner", "coding-copilot", "health-coach")
ROLES = ("user", "assistant", "system", "note")

# Planted fact k starts its session at index PLANT_FIRST + PLANT_STEP * k.
# With 30 facts the last planted record is index 181, so any n >= 200 has them all.
PLANT_FIRST = 4
PLANT_STEP = 6


# --------------------------------------------------------------------------
# Personas
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fact:
    """A fact planted in one short session, and the question that asks for it."""

    category: str  # preference | personal | plan | work
    agent: str
    says: str  # user turn stating the fact (evidence)
    reply: str  # assistant acknowledgement (does not restate the fact)
    note: str | None  # agent note restating the fact (evidence)
    question: str
    answer: str  # short phrase found verbatim in `says`


@dataclass(frozen=True)
class _Persona:
    user_id: str
    slots: dict[str, str]  # background facts used by the chatter templates
    agents: dict[str, int]  # agent -> weight
    sign_offs: tuple[str, ...]
    facts: tuple[_Fact, ...] = field(default=())


def _fact(category, agent, says, reply, note, question, answer) -> _Fact:
    return _Fact(category, agent, says, reply, note, question, answer)


PERSONAS: tuple[_Persona, ...] = (
    _Persona(
        "u_alice",
        {
            "name": "Alice Martin", "first": "Alice", "city": "Lisbon",
            "neighbourhood": "Alfama", "tz": "Europe/Lisbon", "job": "product designer",
            "employer": "a small fintech startup", "family_rel": "sister",
            "family_name": "Claire", "hobby": "pottery", "tool": "Figma",
            "project_bg": "the design-system audit",
        },
        {"assistant": 3, "travel-planner": 2, "coding-copilot": 1, "health-coach": 1},
        ("obrigada!", "brilliant, thanks ✨"),
        (
            _fact("personal", "health-coach",
                  "Before you suggest any recipes: I can't eat anything with peanuts, "
                  "even a trace makes my throat swell up.",
                  "Thanks for telling me. I'll leave them out of every meal plan and "
                  "flag dishes that might contain traces.",
                  "User has a severe peanut allergy.",
                  "What food allergy does Alice have?", "peanut"),
            _fact("preference", "travel-planner",
                  "On long flights I always grab a window seat so I can lean against "
                  "the wall and sleep.",
                  "Got it, I'll filter for those when I look at seat maps.",
                  "User prefers window seats on flights.",
                  "Which seat does Alice like to book on planes?", "window seat"),
            _fact("plan", "travel-planner",
                  "It's official, we're going to Kyoto! Flying out on 12 October for "
                  "ten days, mostly temples and moss gardens 🍵",
                  "How exciting! I'll start a list of gardens that need advance booking.",
                  None,
                  "When is Alice going to Japan, and for how long?",
                  "12 October for ten days"),
            _fact("work", "assistant",
                  "At work I'm leading Project Lighthouse, the redesign of our "
                  "onboarding flow, and the deadline is the end of July.",
                  "Noted. Want me to block focus time on your calendar until then?",
                  "User leads Project Lighthouse (onboarding redesign), due end of July.",
                  "What project is Alice in charge of at her job?", "Project Lighthouse"),
            _fact("personal", "assistant",
                  "My cat Miso just knocked my coffee onto the keyboard again 😾 "
                  "Can you find me a spill-proof mug?",
                  "Oh no! Here are three mugs with locking lids that get good reviews.",
                  "User has a cat named Miso.",
                  "What is the name of Alice's pet?", "Miso"),
        ),
    ),
    _Persona(
        "u_bob",
        {
            "name": "Bob Okafor", "first": "Bob", "city": "Manchester",
            "neighbourhood": "Chorlton", "tz": "Europe/London",
            "job": "secondary school teacher", "employer": "a school in south Manchester",
            "family_rel": "daughter", "family_name": "Ada", "hobby": "growing tomatoes",
            "tool": "Google Classroom", "project_bg": "the new Year 9 curriculum",
        },
        {"assistant": 4, "travel-planner": 1, "coding-copilot": 0, "health-coach": 2},
        ("cheers!", "ta, that's great"),
        (
            _fact("personal", "assistant",
                  "Biscuit, my beagle, needs his walk at 6 every morning, so please "
                  "don't book anything before 7.",
                  "Understood, I'll keep your mornings clear until 7.",
                  "User has a beagle called Biscuit; walks him at 6am.",
                  "What breed is Bob's dog?", "beagle"),
            _fact("preference", "assistant",
                  "I take my coffee black, dark roast only. The light stuff tastes "
                  "like weak tea to me ☕",
                  "Noted! I'll skip the fruity single-origin recommendations.",
                  "User drinks black dark-roast coffee.",
                  "How does Bob like his coffee?", "black, dark roast"),
            _fact("personal", "health-coach",
                  "Milk and I don't get along, so please keep the meal plan free of dairy.",
                  "Will do. I'll use oat or soy alternatives where a recipe needs them.",
                  "User is lactose intolerant; avoid dairy.",
                  "Which dietary restriction should Bob's meal plans respect?", "dairy"),
            _fact("plan", "travel-planner",
                  "Christmas this year is in Lagos with my mum. We land on 20 December "
                  "and stay until the new year.",
                  "Lovely. I'll watch fares and tell you if they drop.",
                  "User travels to Lagos for Christmas, arriving 20 December.",
                  "Where will Bob spend the Christmas holidays?", "Lagos"),
            _fact("work", "assistant",
                  "I teach chemistry to Year 11, so marking eats most of my Sunday evenings.",
                  "That's a lot of marking. Shall I set a two-hour block on Sundays "
                  "and protect the rest of the evening?",
                  None,
                  "What subject does Bob teach?", "chemistry"),
        ),
    ),
    _Persona(
        "u_chen",
        {
            "name": "Chen Wei (陈伟)", "first": "Chen", "city": "Singapore",
            "neighbourhood": "Tiong Bahru", "tz": "Asia/Singapore",
            "job": "backend engineer", "employer": "a logistics company",
            "family_rel": "wife", "family_name": "Mei", "hobby": "bouldering",
            "tool": "PostgreSQL", "project_bg": "the on-call runbook cleanup",
        },
        {"assistant": 2, "travel-planner": 1, "coding-copilot": 5, "health-coach": 1},
        ("谢谢!", "好的，明天见。", "ok, 我明天再看一下"),
        (
            _fact("work", "coding-copilot",
                  "This quarter I'm migrating our billing service from Django to Go; "
                  "the cut-over is planned for September.",
                  "Big job. Happy to help on the new side. Do you want to start with "
                  "invoice generation?",
                  "User is migrating the billing service from Django to Go "
                  "(cut-over in September).",
                  "Which system is Chen rewriting, and in what language?",
                  "billing service from Django to Go"),
            _fact("personal", "assistant",
                  "No prawns or crab for me please, shellfish sends me straight to hospital.",
                  "Understood, I'll check menus carefully before suggesting anything.",
                  "User is allergic to shellfish.",
                  "What should Chen never be served at a restaurant?", "shellfish"),
            _fact("preference", "assistant",
                  "I don't drink coffee at all; a pot of oolong in the afternoon is my ritual.",
                  "Noted. I'll point you to tea houses instead of cafés.",
                  "User prefers oolong tea and does not drink coffee.",
                  "What is Chen's favourite afternoon drink?", "oolong"),
            _fact("plan", "travel-planner",
                  "I'm speaking at KubeCon in Paris next March, about running Postgres "
                  "on Kubernetes.",
                  "Congratulations! I'll look for hotels within walking distance of the venue.",
                  "User is speaking at KubeCon Paris in March.",
                  "Which conference is Chen presenting at?", "KubeCon"),
            _fact("preference", "coding-copilot",
                  "I live in Neovim, so give me keybindings and commands rather than "
                  "menu clicks.",
                  "Got it. I'll stick to terminal commands and keyboard shortcuts.",
                  "User's editor is Neovim.",
                  "Which code editor does Chen use?", "Neovim"),
        ),
    ),
    _Persona(
        "u_dara",
        {
            "name": "Dara Nguyen", "first": "Dara", "city": "Toronto",
            "neighbourhood": "Leslieville", "tz": "America/Toronto", "job": "nurse",
            "employer": "a downtown hospital", "family_rel": "brother",
            "family_name": "Minh", "hobby": "climbing", "tool": "Strava",
            "project_bg": "the new shift handover checklist",
        },
        {"assistant": 2, "travel-planner": 1, "coding-copilot": 0, "health-coach": 5},
        ("thank you!! 🙏", "amazing"),
        (
            _fact("personal", "health-coach",
                  "I'm allergic to penicillin, so flag it if anything you suggest "
                  "involves antibiotics.",
                  "Thanks, that's important. I'll always flag it.",
                  "User is allergic to penicillin.",
                  "Which medication is Dara allergic to?", "penicillin"),
            _fact("plan", "health-coach",
                  "I signed up for the Toronto Waterfront half marathon on 20 October 😅 "
                  "Help me build a plan?",
                  "Love it! Let's start with three runs a week and build up slowly.",
                  "User is training for a half marathon on 20 October.",
                  "What race is Dara training for?", "half marathon"),
            _fact("personal", "assistant",
                  "My two rabbits, Pho and Bánh, chewed through the laptop charger again 🐇",
                  "Oh no! I'll find a chew-proof cable cover and a replacement charger.",
                  "User has two rabbits named Pho and Bánh.",
                  "What pets does Dara have?", "rabbits"),
            _fact("work", "health-coach",
                  "Twelve-hour night shifts in the ICU this week, so workouts have to "
                  "fit after 2 pm.",
                  "Understood. I'll schedule short sessions in the late afternoon and "
                  "keep them easy.",
                  "User works night shifts in the ICU.",
                  "Which hospital unit does Dara work in?", "ICU"),
            _fact("preference", "health-coach",
                  "I eat fully plant-based (no eggs, no dairy, no honey), so keep all "
                  "recipes that way.",
                  "Perfect, I'll only suggest recipes that fit.",
                  "User follows a vegan diet.",
                  "What kind of diet does Dara follow?", "plant-based"),
        ),
    ),
    _Persona(
        "o'brien",
        {
            "name": "Siobhán O'Brien", "first": "Siobhán", "city": "Dublin",
            "neighbourhood": "Stoneybatter", "tz": "Europe/Dublin",
            "job": "freelance journalist", "employer": "several newspapers",
            "family_rel": "mother", "family_name": "Nora", "hobby": "sea swimming",
            "tool": "Scrivener", "project_bg": "a long feature on housing",
        },
        {"assistant": 4, "travel-planner": 3, "coding-copilot": 0, "health-coach": 1},
        ("grand, thanks", "go raibh maith agat!"),
        (
            _fact("preference", "travel-planner",
                  "I'd rather take the train than fly whenever the journey is under "
                  "eight hours.",
                  "Noted, I'll check rail options first.",
                  "User prefers rail over flights for trips under eight hours.",
                  "How does Siobhán prefer to travel?", "take the train"),
            _fact("work", "assistant",
                  "The book on Irish lighthouses is due to my editor at the end of "
                  "November, so I'm guarding my mornings for writing.",
                  "Understood. I'll keep mornings meeting-free until it's delivered.",
                  "User is writing a book about Irish lighthouses, due end of November.",
                  "What is Siobhán's book about?", "Irish lighthouses"),
            _fact("personal", "assistant",
                  "I can't be around cats for long, my eyes stream within minutes, "
                  "so no cat cafés please!",
                  "Ha, noted. I'll check listings for pets before suggesting anywhere to stay.",
                  "User is allergic to cats.",
                  "What animal is Siobhán allergic to?", "cats"),
            _fact("plan", "travel-planner",
                  "I'm heading to the Frankfurt Book Fair in mid-October to meet publishers.",
                  "Great. Hotels fill up early that week, so let's book soon.",
                  None,
                  "Which event is Siobhán attending in October?", "Frankfurt Book Fair"),
            _fact("personal", "assistant",
                  "My parrot Captain has learned to imitate the kettle, so now I never "
                  "know when the tea is ready 🦜",
                  "That's brilliant. Maybe a kettle with a light would help.",
                  "User has a parrot named Captain.",
                  "What is the name of Siobhán's bird?", "Captain"),
        ),
    ),
    _Persona(
        "u_eve",
        {
            "name": "Eve Müller", "first": "Eve", "city": "Zürich",
            "neighbourhood": "Wiedikon", "tz": "Europe/Zurich", "job": "data scientist",
            "employer": "a climate NGO", "family_rel": "partner", "family_name": "José",
            "hobby": "cross-country skiing", "tool": "Jupyter",
            "project_bg": "the quarterly emissions report",
        },
        {"assistant": 2, "travel-planner": 2, "coding-copilot": 4, "health-coach": 1},
        ("Danke!", "merci vielmals 🙂"),
        (
            _fact("personal", "health-coach",
                  "Since my coeliac diagnosis I can't have any gluten, not even a little.",
                  "Thanks for letting me know; I'll double-check every recipe.",
                  "User has coeliac disease; strictly gluten-free.",
                  "What condition limits what Eve can eat?", "coeliac"),
            _fact("preference", "assistant",
                  "Keep answers short please: bullet points, no fluff.",
                  "Will do.",
                  "User prefers short bullet-point answers.",
                  "How does Eve like responses to be formatted?", "bullet points"),
            _fact("work", "coding-copilot",
                  "I'm building a model that forecasts solar output for our rooftop "
                  "installations, in PyTorch for now.",
                  "Nice. Happy to look at the data loader when you're ready.",
                  "User is building a solar output forecasting model in PyTorch.",
                  "What does Eve's forecasting model predict?", "solar output"),
            _fact("plan", "travel-planner",
                  "José and I are driving the Ring Road in Iceland in August 🚗",
                  "Amazing trip! I'll map out fuel stops and guesthouses along the way.",
                  "User plans a Ring Road trip in Iceland in August with José.",
                  "Where is Eve going on her road trip?", "Iceland"),
            _fact("personal", "assistant",
                  "Newton, my goldfish, turns five next week 🐟 Is that old?",
                  "Not at all. With good care they can live well past ten.",
                  "User has a goldfish named Newton.",
                  "What kind of pet does Eve have?", "goldfish"),
        ),
    ),
)

USER_IDS = tuple(p.user_id for p in PERSONAS)

# --------------------------------------------------------------------------
# Vocabulary and templates (chatter never mentions a planted fact)
# --------------------------------------------------------------------------

VOCAB: dict[str, tuple[str, ...]] = {
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "time": ("8:30", "9:00", "10:15", "11:00", "13:30", "15:00", "16:45", "18:00"),
    "minutes": ("10", "15", "20", "25", "30", "45"),
    "hours": ("5", "6", "6.5", "7", "8"),
    "price": ("40", "60", "80", "120", "150", "200"),
    "doc": ("slides", "budget sheet", "draft report", "invoice", "meeting agenda", "contract"),
    "gift": ("a good notebook", "a big houseplant", "a cooking class voucher",
             "concert tickets", "a framed print", "a warm scarf"),
    "dish": ("lentil soup", "a chickpea and spinach curry with rice",
             "roasted vegetables with quinoa", "a tomato and white bean stew",
             "stir-fried greens with tofu and rice", "a big grain salad",
             "baked sweet potatoes with black beans", "a mushroom and leek soup"),
    "dish_kind": ("one-pot", "make-ahead", "summery", "spicy", "cosy"),
    "cuisine": ("Lebanese", "Korean", "Ethiopian", "Mexican", "Georgian", "Peruvian"),
    "ingredient": ("rice", "chickpeas", "spinach", "tomatoes", "potatoes",
                   "courgettes", "lentils", "peppers"),
    "destination": ("Porto", "Edinburgh", "Copenhagen", "Seville", "Ljubljana",
                    "Montréal", "Hội An", "Tallinn", "Bologna", "Kraków"),
    "month": ("May", "June", "July", "September", "November"),
    "activity": ("run", "swim", "yoga class", "bike ride", "strength session", "long walk"),
    "feeling": ("tired", "great", "a bit flat", "sore", "rested", "wired"),
    "weather": ("hot", "humid", "rainy", "windy", "cold", "sunny"),
    "func": ("parse_events", "load_config", "merge_batches", "build_index",
             "normalize_text", "fetch_page"),
    "module": ("ingest", "search", "auth", "export", "scheduler", "notifications"),
    "thing": ("input list", "response", "queue", "config", "batch"),
    "error": ("ModuleNotFoundError: No module named 'yaml'", "exit code 137",
              "connection refused", "TypeError: 'NoneType' object is not iterable",
              "AssertionError: 3 != 4"),
    "db": ("SQLite", "DuckDB", "MySQL", "Redis"),
    "concept_pair": ("a process and a thread", "a list and a tuple",
                     "a generator and an iterator", "a mutex and a semaphore",
                     "a join and a subquery"),
    "emoji": ("🙂", "🙏", "😅", "🎉", "👍", "🤔", "✨", "☀️"),
    "home_task": ("fix the dripping tap", "repaint the hallway", "sort out the balcony plants",
                  "replace the shower head", "hang some shelves"),
    "colleague": ("Priya", "Marco", "Ingrid", "Tomás", "Yuki", "Fatima", "Jonas",
                  "Aoife", "Kwame", "Léa", "Hannah", "Rafael"),
    "metric": ("activation rate", "weekly churn", "support backlog", "page load time",
               "conversion", "error rate"),
    "direction": ("up", "down", "flat"),
    "risk": ("the data migration", "hiring delays", "the vendor contract",
             "accessibility gaps", "the holiday freeze"),
    "topic_work": ("the roadmap for next quarter", "the support rota", "the pricing page",
                   "the analytics dashboard", "the hiring plan", "the customer interviews"),
    "reason": ("the requirements changed halfway through",
               "nobody owned the final decision", "the test data was unrealistic",
               "we underestimated the review time"),
    "decision": ("we ship a smaller first version", "the old flow stays behind a flag",
                 "weekly demos replace the status emails", "the launch moves by one week"),
    "legal_thing": ("the new consent text", "storing data outside the EU",
                    "the partner agreement"),
    "mood": ("upbeat", "tense", "focused", "a bit tired", "constructive"),
    "landmark": ("the old cathedral", "the botanical garden", "the castle hill",
                 "the covered market", "the harbour viewpoint", "the main square",
                 "the riverside park"),
    "museum": ("city museum", "modern art gallery", "maritime museum", "design museum"),
    "transport": ("tram", "ferry", "funicular", "bus", "metro"),
    "hotel_kind": ("small guesthouse", "design hotel", "family-run B&B", "serviced flat"),
    "pr_ref": ("PR #482", "PR #517", "PR #1033", "PR #1290", "MR !77"),
    "loc": ("120", "240", "380", "650"),
    "file": ("settings.py", "models.py", "pipeline.yaml", "README.md", "utils/io.py",
             "api/routes.py"),
    "percent": ("8", "12", "18", "25", "40"),
    "liters": ("1.5", "2", "2.5"),
    "book": ("a detective novel", "a history of maps", "a short story collection",
             "a memoir about sailing"),
}

AGENT_TOPICS: dict[str, tuple[str, ...]] = {
    "assistant": ("schedule", "family", "home", "food"),
    "travel-planner": ("travel",),
    "coding-copilot": ("code",),
    "health-coach": ("health", "food"),
}

USER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "schedule": (
        "Can you move my {weekday} call about {project_bg} to {time}?",
        "What does my {weekday} look like? I need an hour to focus on {project_bg}.",
        "Remind me to send the {doc} to {family_name} before {time} tomorrow.",
        "I have a dentist appointment on {weekday} at {time}, please block it.",
        "Draft a short email to my manager saying I'll be {minutes} minutes late on {weekday}.",
        "Is there a free slot this week for a {activity}? Mornings are best.",
    ),
    "family": (
        "It's {family_name}'s birthday next {weekday}, any gift ideas under {price} euros?",
        "My {family_rel} {family_name} wants to visit {city} in {month}; what should we do together?",
        "Help me write a card for {family_name}, something warm but not cheesy.",
        "We're having dinner with {family_name} on {weekday}, suggest a {dish_kind} recipe "
        "that works for everyone.",
    ),
    "home": (
        "I need to {home_task} this weekend, what tools do I need?",
        "Can you find a reliable plumber in {neighbourhood}? Something's wrong with the boiler.",
        "Remind me to water the plants on {weekday}, I keep forgetting.",
        "How do I get rid of the damp smell in the bathroom without harsh chemicals?",
    ),
    "food": (
        "Suggest a quick dinner, I only have {ingredient} and {ingredient} at home.",
        "Any good {cuisine} places in {city} that are open late?",
        "Plan my lunches for the week, something I can prep on {weekday} evening.",
        "Would {dish} be filling enough after a {activity}?",
    ),
    "travel": (
        "Look for flights to {destination} in {month}, direct if possible.",
        "Which neighbourhood in {destination} is best for a first visit?",
        "Can you compare two hotels near the station in {destination}? Budget is about "
        "{price} euros a night.",
        "What should I pack for {destination} in {month}?",
        "Make a rough three-day plan for {destination} with one slow day.",
    ),
    "code": (
        "Why does `{func}()` return None when the {thing} is empty?",
        "Write a test for the {module} module, something small I can run locally.",
        "The CI job fails with `{error}`, any idea?",
        "Refactor this please, it's getting long: def {func}(items): ...",
        "How do I profile a slow query in {db}?",
        "Explain the difference between {concept_pair} in two sentences.",
    ),
    "health": (
        "I slept {hours} hours last night and feel {feeling}, should I still work out?",
        "Log a {minutes}-minute {activity} for today, it felt {feeling}.",
        "Give me a 20-minute stretching routine for after a {activity}.",
        "How much water should I drink on a {weather} day with a {activity}?",
        "My knee hurts a bit after the {activity}; what can I do instead this week?",
    ),
}

ASSISTANT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "schedule": (
        "Done. I moved it to {time} on {weekday} and let everyone know.",
        "Your {weekday} is fairly open after {time}. I blocked {minutes} minutes for {project_bg}.",
        "Here's a draft: \"Hi, I'm running about {minutes} minutes late on {weekday}, "
        "I'll join as soon as I can. Thanks for understanding!\"",
        "Reminder set for {time} tomorrow. Want me to attach the latest version of the {doc}?",
    ),
    "family": (
        "A few ideas for {family_name}: {gift}, {gift}, or a day trip somewhere close to {city}.",
        "Here's a short note you could write: \"Thinking of you today, {family_name}. "
        "Can't wait to celebrate together.\"",
        "For dinner with {family_name}, {dish} works well and can be made ahead.",
    ),
    "home": (
        "You'll need a screwdriver, a spanner and some tape; plan on about {minutes} minutes.",
        "I found two plumbers in {neighbourhood} with good reviews; one can come on {weekday} morning.",
        "Reminder set for {weekday} at {time} 🌱",
        "Open the window after showers, wipe the tiles, and leave a bowl of baking soda in the corner.",
    ),
    "food": (
        "How about {dish}? It takes about {minutes} minutes.",
        "Here's a plan: {dish} on Monday, {dish} on Tuesday, and leftovers on Wednesday.",
        "There are a couple of {cuisine} spots near the centre of {city} that stay open until midnight.",
    ),
    "travel": (
        "I found a direct option to {destination} in {month} for around {price} euros.",
        "For a first visit to {destination}, staying near the old town keeps everything walkable.",
        "Pack layers: {month} evenings in {destination} can get cool, and bring comfortable shoes.",
        "Day one: arrive and wander. Day two: the main sights early, then a long lunch. "
        "Day three: nothing planned on purpose.",
    ),
    "code": (
        "The function falls through without a return when the {thing} is empty; add "
        "`return []` at the end.",
        "That `{error}` usually means a dependency changed; pin it in the lock file and rerun.",
        "Here's a test: it builds a small fixture, calls `{func}()`, and checks the length "
        "of the result.",
        "In {db}, run the query with EXPLAIN first and look for full scans on large tables.",
    ),
    "health": (
        "With {hours} hours of sleep, keep today easy: a light {activity} and some mobility work.",
        "Logged: {minutes} minutes of {activity}. Nice consistency this week 💪",
        "Swap the {activity} for swimming or cycling for a few days and see if the knee settles.",
        "Aim for about two litres, more if it's {weather}, and add a pinch of salt after long sessions.",
    ),
}

NOTE_TEMPLATES = (
    "User lives in {city} ({neighbourhood}).",
    "User works as a {job} at {employer}.",
    "User's {family_rel} is called {family_name}.",
    "User uses {tool} for most of their work.",
    "User enjoys {hobby} at weekends.",
    "User's local timezone is {tz}.",
    "User asked for reminders {minutes} minutes before meetings.",
    "User is currently busy with {project_bg}.",
)

SYSTEM_TEMPLATES = (
    "You are the {agent} agent for {name}. Local timezone: {tz}. Be friendly and concise.",
    "Session resumed for {first} on {agent}. Earlier context was summarised.",
)

OPENERS = ("Hi!", "Morning!", "Quick question:", "Okay, next one.", "Hey!", "Another thing:")
USER_FOLLOW_UPS = (
    "No rush, whenever you get a chance.",
    "Keep it simple please.",
    "Thanks in advance {emoji}",
    "I'm a {job}, so my weeks are a bit unpredictable.",
    "Last time that worked well, so let's do the same.",
    "{family_name} might join too.",
    "It's been a long week in {city} and I'd like to get this off my list.",
)
ASSISTANT_FOLLOW_UPS = (
    "Want me to add it to your calendar?",
    "Let me know if you'd like a few alternatives.",
    "I can send you a summary by email as well.",
    "Shall I set a reminder for {weekday}?",
    "Happy to adjust if anything changes.",
)
ACKS = ("thanks!", "perfect 👍", "ok", "great, thank you", "hmm, let me think", "yes please")
CLIENTS = ("web", "ios", "android", "slack", "cli")


@dataclass(frozen=True)
class _LongKind:
    role: str
    title: str
    headers: tuple[str, ...]  # cycled section headers; empty: none (or generated days)
    sentences: tuple[str, ...]
    pinned: tuple[str, ...] = ()  # slots fixed for the whole memory


LONG_KINDS: dict[str, _LongKind] = {
    "meeting_notes": _LongKind(
        "note",
        "Meeting notes: {project_bg}, {weekday} {time}\nAttendees: {first}, {colleague}, "
        "{colleague}, {colleague}",
        ("Updates", "Discussion", "Decisions", "Action items", "Open questions", "Risks"),
        (
            "{colleague} walked through the latest numbers and said the {metric} is "
            "trending {direction} since the last review.",
            "We agreed to revisit the timeline for {project_bg} once {colleague} has "
            "finished the vendor comparison.",
            "{colleague} raised a concern about {risk}, and nobody had a clean answer yet.",
            "Action: {colleague} to share a one-page summary with the group by {weekday}.",
            "The group spent most of the time on {topic_work}, which took longer than planned.",
            "{first} pointed out that the previous attempt failed because {reason}.",
            "There was broad agreement that {decision}.",
            "{colleague} will check with legal whether {legal_thing} is a blocker.",
            "We parked {topic_work} until the next meeting, since half of the people "
            "involved were out.",
            "Budget is still tight, so any new request above {price} euros needs sign-off "
            "from {colleague}.",
            "The next check-in is on {weekday} at {time}, same room, with the dial-in link "
            "in the invite.",
            "{colleague} noted that customers in {destination} keep asking for the same "
            "feature, which is worth a closer look.",
            "Overall the mood was {mood}, although the deadline is still ambitious.",
            "We should write down the assumptions behind the estimate, because they keep "
            "changing between meetings.",
            "{first} volunteered to draft the rollout plan and circulate it before {weekday}.",
            "Someone asked whether {topic_work} really belongs in this quarter; the answer "
            "was a cautious yes.",
        ),
    ),
    "trip_itinerary": _LongKind(
        "assistant",
        "Draft itinerary for {first}: {destination} in {month}",
        (),  # "Day N: Morning/Afternoon/Evening" headers are generated
        (
            "Start at {landmark}, ideally before {time} when the tour groups arrive.",
            "Lunch at a small {cuisine} place two streets from the market; they don't take "
            "reservations, so go early.",
            "Take the {transport} to {landmark} and walk back along the river.",
            "If it rains, swap the walk for the {museum} and budget about two hours.",
            "Dinner is booked at {time} for two; the tasting menu is optional.",
            "The hotel is a {hotel_kind} in the old quarter, about {minutes} minutes on "
            "foot from the station.",
            "Check-out is at 11:00, but they can keep your luggage until the evening.",
            "Buy a day pass for public transport in {destination}; it pays off after three rides.",
            "Keep this part free: you'll be tired, and the neighbourhood is nice for a slow walk.",
            "Sunset from {landmark} is worth it, but bring a jacket because it gets windy up there.",
            "The train leaves at {time}; arrive twenty minutes early because the platform "
            "often changes.",
            "Estimated cost so far is around {price} euros, excluding dinner.",
            "Optional: a {minutes}-minute bike tour that covers the harbour and the old warehouses.",
            "Locals recommend the bakery next to {landmark} for breakfast.",
            "The {museum} is closed on {weekday}s, so the order of the days matters.",
        ),
        pinned=("destination", "month"),
    ),
    "code_review": _LongKind(
        "assistant",
        "Code review summary: {module} module ({pr_ref})",
        ("Overview", "What works well", "Issues", "Suggestions", "Tests", "Next steps"),
        (
            "The change touches the {module} module and adds about {loc} lines, most of them in tests.",
            "The new `{func}()` helper is easy to read, but it swallows exceptions from the "
            "{thing} layer.",
            "Consider splitting `{func}()` in two: one function that fetches and one that transforms.",
            "There's an off-by-one error in the pagination loop when the last page is exactly full.",
            "The retry logic should use exponential backoff with jitter instead of a fixed "
            "{minutes}-second sleep.",
            "Naming is mostly consistent, although `data`, `items` and `rows` are used for "
            "the same thing.",
            "Tests cover the happy path well; please add a case for an empty {thing} and one "
            "for a timeout.",
            "The migration is not reversible as written, which will hurt if we need to roll back.",
            "Logging at INFO inside the hot loop will flood the logs in production; move it to DEBUG.",
            "Type hints on the public functions would help, especially for the return value "
            "of `{func}()`.",
            "The config now reads from environment variables, which is good, but the defaults "
            "should live in one place.",
            "Performance looks fine for small inputs; with {loc} thousand rows the query in "
            "{db} does a full scan.",
            "Please rebase before merging, there is a conflict in {file}.",
            "Overall this is a solid improvement and I'd approve once the error handling is fixed.",
            "The docstring for `{func}()` still describes the old behaviour.",
            "I ran the benchmark locally and saw a {percent}% speed-up on the large fixture.",
        ),
        pinned=("module", "func", "pr_ref"),
    ),
    "journal": _LongKind(
        "note",
        "Journal, {weekday} evening ({city})",
        (),
        (
            "Woke up at {time} after about {hours} hours of sleep and felt {feeling}.",
            "The {activity} this morning went better than expected; I kept a steady pace "
            "for {minutes} minutes.",
            "Lunch was {dish}, eaten too quickly at my desk again.",
            "Work was {mood}; the afternoon disappeared into meetings.",
            "I called {family_name} in the evening and we talked for almost an hour.",
            "The weather in {city} was {weather}, so I took the long way home.",
            "I want to be more consistent with stretching, even if it's only ten minutes.",
            "Energy dipped around {time}, probably because I skipped the afternoon snack.",
            "Drank about {liters} litres of water, which is close to the goal.",
            "Tomorrow: an easy {activity}, an early night, and no screens after ten.",
            "I noticed I sleep worse when I eat late, so dinner should move earlier.",
            "Read a few chapters of {book} before bed, which helped me switch off.",
            "Small win: took the stairs every time today.",
            "Feeling {feeling} about the week overall, though the to-do list is still long.",
            "I keep thinking about {hobby}; maybe I should block a proper afternoon for it "
            "at the weekend.",
        ),
    ),
}
AGENT_LONG_KIND = {
    "assistant": "meeting_notes",
    "travel-planner": "trip_itinerary",
    "coding-copilot": "code_review",
    "health-coach": "journal",
}
_PARTS_OF_DAY = ("Morning", "Afternoon", "Evening")


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------


class _Slots(dict):
    """Template slots: persona facts, with vocabulary words drawn on demand."""

    __slots__ = ("random",)

    def __missing__(self, key: str) -> str:
        words = VOCAB[key]
        return words[int(self.random() * len(words))]


# (session_no, user_id, agent_id, role, content, metadata)
_Raw = tuple[int, str, str, str, str, dict]


def _planted_layout(seed: int) -> list[tuple[int, _Persona, _Fact]]:
    """(start index, persona, fact) for every planted fact; order shuffled by seed."""
    pairs = [(p, f) for k in range(5) for p in PERSONAS for f in p.facts[k:k + 1]]
    random.Random(f"demo-plant-{seed}").shuffle(pairs)
    return [(PLANT_FIRST + PLANT_STEP * k, p, f) for k, (p, f) in enumerate(pairs)]


def _coprimes(n: int) -> tuple[int, ...]:
    return tuple(s for s in range(1, n) if math.gcd(s, n) == 1) or (1,)


class _Stream:
    """Endless stream of raw records for one seed; record i never depends on n.

    Draws use ``seq[int(random() * len(seq))]`` instead of ``Random.choice``:
    it is several times faster, which keeps :func:`chat_turns` quick.
    """

    def __init__(self, seed: int, long_share: float):
        self.random = random.Random(seed).random
        self.long_share = long_share
        self.slots = {}
        for p in PERSONAS:
            s = _Slots(p.slots)
            s.random = self.random
            self.slots[p.user_id] = s
        self.agent_cum = [list(accumulate(p.agents[a] for a in AGENTS)) for p in PERSONAS]
        self.plants = {start: (p, f) for start, p, f in _planted_layout(seed)}
        self.plant_starts = sorted(self.plants)

    def pick(self, seq):
        return seq[int(self.random() * len(seq))]

    def __iter__(self) -> Iterator[_Raw]:
        i = session = 0
        while True:
            if i in self.plants:
                records = self._planted(*self.plants[i])
            else:
                k = bisect.bisect_right(self.plant_starts, i)
                room = self.plant_starts[k] - i if k < len(self.plant_starts) else 99
                records = self._session(min(2 + int(self.random() * 7), room))
            for rec in records:
                yield (session, *rec)
            i += len(records)
            session += 1

    def _planted(self, persona: _Persona, fact: _Fact) -> list[tuple]:
        client = self.pick(CLIENTS)
        topic = AGENT_TOPICS[fact.agent][0]
        turns = [("user", fact.says), ("assistant", fact.reply)]
        if fact.note:
            turns.append(("note", fact.note))
        return [
            (persona.user_id, fact.agent, role, text,
             {"topic": topic, "turn": j, "client": client,
              "kind": "note" if role == "note" else "turn"})
            for j, (role, text) in enumerate(turns)
        ]

    def _session(self, length: int) -> list[tuple]:
        rnd, pick = self.random, self.pick
        idx = int(rnd() * len(PERSONAS))
        persona = PERSONAS[idx]
        cum = self.agent_cum[idx]
        agent = AGENTS[bisect.bisect_right(cum, rnd() * cum[-1])]
        topic = pick(AGENT_TOPICS[agent])
        client = pick(CLIENTS)
        slots = self.slots[persona.user_id]
        slots["agent"] = agent
        out = []
        role = "user"  # next dialogue role
        for j in range(length):
            if j == 0 and length >= 3 and rnd() < 0.1:
                kind, role_j, text = "turn", "system", pick(SYSTEM_TEMPLATES).format_map(slots)
            elif rnd() < self.long_share:
                kind = AGENT_LONG_KIND[agent]
                role_j, text = LONG_KINDS[kind].role, self._long(kind, slots)
            elif role == "assistant" and rnd() < 0.15:
                kind, role_j, text = "note", "note", pick(NOTE_TEMPLATES).format_map(slots)
            elif role == "user":
                kind, role_j, role = "turn", "user", "assistant"
                text = self._user(topic, persona, slots)
            else:
                kind, role_j, role = "turn", "assistant", "user"
                text = self._assistant(topic, slots)
            meta = {"topic": topic, "turn": j, "client": client, "kind": kind}
            if kind in LONG_KINDS:
                meta["words"] = text.count(" ") + text.count("\n") + 1
            out.append((persona.user_id, agent, role_j, text, meta))
        return out

    def _two(self, templates: tuple[str, ...], slots: _Slots) -> str:
        """Two different templates, joined."""
        first = int(self.random() * len(templates))
        second = (first + 1 + int(self.random() * (len(templates) - 1))) % len(templates)
        return f"{templates[first].format_map(slots)} {templates[second].format_map(slots)}"

    def _user(self, topic: str, persona: _Persona, slots: _Slots) -> str:
        rnd, pick = self.random, self.pick
        r = rnd()
        if r < 0.08:
            return pick(ACKS + persona.sign_offs)
        templates = USER_TEMPLATES[topic]
        text = self._two(templates, slots) if rnd() < 0.12 else pick(templates).format_map(slots)
        if r < 0.35:
            text = f"{pick(OPENERS)} {text}"
        if rnd() < 0.3:
            text = f"{text} {pick(USER_FOLLOW_UPS).format_map(slots)}"
        return text

    def _assistant(self, topic: str, slots: _Slots) -> str:
        rnd, pick = self.random, self.pick
        templates = ASSISTANT_TEMPLATES[topic]
        text = self._two(templates, slots) if rnd() < 0.2 else pick(templates).format_map(slots)
        if rnd() < 0.4:
            text = f"{text} {pick(ASSISTANT_FOLLOW_UPS).format_map(slots)}"
        return text

    def _long(self, kind: str, slots: _Slots) -> str:
        """A 400-1,500 word memory: a title and sections of template sentences.

        Sentences are taken in a random coprime stride through the templates, so none
        repeats before all have been used.
        """
        rnd = self.random
        spec = LONG_KINDS[kind]
        if spec.pinned:
            slots = _Slots(slots)
            slots.random = rnd
            for key in spec.pinned:
                slots[key] = self.pick(VOCAB[key])
        sentences = spec.sentences
        size = len(sentences)
        pos, stride = int(rnd() * size), self.pick(_STRIDES[kind])
        target = 400 + int(1100 * rnd() ** 2)  # 400-1,500 words, mostly under 900
        parts = [spec.title.format_map(slots)]
        words = section = 0
        while words < target:
            chunk = []
            for _ in range(3 + int(rnd() * 5)):
                chunk.append(sentences[pos])
                pos = (pos + stride) % size
            para = " ".join(chunk).format_map(slots)  # one call per paragraph is faster
            words += para.count(" ") + 1
            if spec.headers:
                para = f"{spec.headers[section % len(spec.headers)]}\n{para}"
            elif kind == "trip_itinerary":
                para = f"Day {section // 3 + 1}, {_PARTS_OF_DAY[section % 3]}\n{para}"
            parts.append(para)
            section += 1
        return "\n\n".join(parts)


_STRIDES = {kind: _coprimes(len(spec.sentences)) for kind, spec in LONG_KINDS.items()}


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def generate_memories(
    n: int,
    *,
    seed: int = 0,
    start: dt.date | None = None,
    days: int = 14,
    long_share: float = 0.05,
) -> list[dict]:
    """Return ``n`` memory records spread over ``days`` days from ``start``.

    Record ``i`` has id ``demo-{seed}-{i:06d}`` and the same content for any ``n``;
    only its day depends on ``n``. Sessions never straddle days.
    """
    if n < 0 or days < 1:
        raise ValueError("n must be >= 0 and days >= 1")
    start = start or DEFAULT_START
    clock = random.Random(f"demo-clock-{seed}")
    out: list[dict] = []
    current, day, secs = -1, start, 0
    stream = islice(_Stream(seed, long_share), n)
    for i, (session, user_id, agent, role, content, meta) in enumerate(stream):
        if session != current:
            current = session
            day = start + dt.timedelta(days=i * days // n)
            secs = clock.randint(7 * 3600, 21 * 3600 + 1800)
        else:
            secs = min(secs + clock.randint(20, 420), 86399)
        out.append({
            "memory_id": f"demo-{seed}-{i:06d}",
            "user_id": user_id,
            "agent_id": agent,
            "session_id": f"sess-{seed}-{session:05d}",
            "role": role,
            "content": content,
            "created_at": f"{day}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}Z",
            "metadata": meta,
        })
    return out


def chat_turns(n: int, *, seed: int = 0) -> list[str]:
    """Return ``n`` memory contents only (same distribution as :func:`generate_memories`)."""
    return [rec[4] for rec in islice(_Stream(seed, 0.05), n)]


def demo_questions(seed: int = 0) -> list[dict]:
    """Labelled questions about the facts planted by :func:`generate_memories` (same seed).

    Each item: ``user_id``, ``question``, ``evidence`` (memory ids), ``category`` and
    ``answer`` (a short phrase found in the first evidence memory). Valid for n >= 200.
    """
    out = []
    for start, persona, fact in sorted(_planted_layout(seed), key=lambda t: t[0]):
        evidence = [f"demo-{seed}-{start:06d}"]
        if fact.note:
            evidence.append(f"demo-{seed}-{start + 2:06d}")
        out.append({
            "user_id": persona.user_id,
            "question": fact.question,
            "evidence": evidence,
            "category": fact.category,
            "answer": fact.answer,
        })
    return out


BAD_KINDS = ("invalid_json", "missing_user_id", "empty_content", "bad_created_at", "metadata_list")


def _bad_line(kind: str, k: int, seed: int, day: str, agent: str) -> str:
    rec = {
        "memory_id": f"demo-{seed}-bad-{k:03d}",
        "user_id": USER_IDS[k % len(USER_IDS)],
        "agent_id": agent,
        "session_id": f"sess-{seed}-bad",
        "role": "user",
        "content": "This line is deliberately broken for the demo.",
        "created_at": f"{day}T12:00:00Z",
        "metadata": {"topic": "schedule", "turn": 0, "client": "web", "kind": "turn"},
    }
    if kind == "invalid_json":
        return json.dumps(rec)[:-40]  # truncated mid-object
    if kind == "missing_user_id":
        del rec["user_id"]
    elif kind == "empty_content":
        rec["content"] = ""
    elif kind == "bad_created_at":
        rec["created_at"] = "not-a-date"
    elif kind == "metadata_list":
        rec["metadata"] = ["demo", "not-an-object"]
    return json.dumps(rec, ensure_ascii=False)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_demo_landing(
    landing: str | Path,
    *,
    start: dt.date | None = None,
    days: int = 14,
    memories: int = 400,
    bad_lines: int = 5,
    seed: int = 0,
) -> dict:
    """Write ``<landing>/<YYYY-MM-DD>/<agent>.jsonl`` files with demo memories.

    The first file of the second day is gzipped (``.jsonl.gz``). ``bad_lines`` broken
    lines (cycling through :data:`BAD_KINDS`) are spread over the days. Rerunning
    overwrites the same files byte for byte; other files are left alone (except the
    plain/gzip twin of a file written here, so a day never holds both).
    """
    landing = Path(landing)
    records = generate_memories(memories, seed=seed, start=start, days=days)
    files: dict[tuple[str, str], list[str]] = {}
    for rec in sorted(records, key=lambda r: (r["created_at"], r["memory_id"])):
        key = (rec["created_at"][:10], rec["agent_id"])
        files.setdefault(key, []).append(json.dumps(rec, ensure_ascii=False))
    keys = sorted(files)
    day_list = sorted({day for day, _ in keys})
    if bad_lines and not keys:
        # No memories at all: still give the bad lines somewhere to live.
        day_list = [(start or DEFAULT_START).isoformat()]
        keys = [(day_list[0], "assistant")]
        files[keys[0]] = []
    rng = random.Random(f"demo-landing-{seed}")
    for k in range(bad_lines):
        day = day_list[k * len(day_list) // bad_lines]
        key = rng.choice([key for key in keys if key[0] == day])
        lines = files[key]
        bad = _bad_line(BAD_KINDS[k % len(BAD_KINDS)], k, seed, day, key[1])
        lines.insert(rng.randint(0, len(lines)), bad)
    gz_day = day_list[min(1, len(day_list) - 1)] if day_list else None
    gz_key = next((key for key in keys if key[0] == gz_day), None)
    for key in keys:
        day, agent = key
        folder = landing / day
        folder.mkdir(parents=True, exist_ok=True)
        data = ("\n".join(files[key]) + "\n").encode("utf-8")
        plain, packed = folder / f"{agent}.jsonl", folder / f"{agent}.jsonl.gz"
        if key == gz_key:
            # mtime=0 and no file name in the header keep the bytes reproducible.
            data = gzip.compress(data, mtime=0)
            target, twin = packed, plain
        else:
            target, twin = plain, packed
        _write_atomic(target, data)
        twin.unlink(missing_ok=True)
    return {
        "landing": str(landing),
        "days": day_list,
        "memories": len(records),
        "bad_lines": bad_lines,
        "files": len(keys),
    }

