"""A labelled development set for retrieval: multi-session conversations, questions in four
categories, a fixed tune/held-out split.

Each user (one conversation with their assistant, ten sessions on different dates a week or
two apart) tells the assistant facts about themselves in passing, among everyday requests
and lines that touch the same topics without stating the fact. The questions ask for them
in other words:

- ``single-hop``: one fact, stated in one user turn (the evidence);
- ``multi-hop``: two turns of different sessions linked by a person's name ("my cousin
  Marta" ... "Marta moved to Lisbon"): "where did my cousin relocate to?"; both are evidence;
- ``temporal``: something that recurs (books, dishes, outings, films) asked for in a time
  window relative to the question's ``asked_at`` ("last week", "in May"); the evidence is
  the one mention in that window;
- ``unanswerable``: a fact the user never stated (empty evidence).

Half the questions name the user ("What does Maren drive?"), as a third person would ask.
The text (names, facts, templates, chatter) is package data, ``data/devset.json``,
versioned with :data:`DEVSET_VERSION`; the output is deterministic for a seed (a test pins
it by hash). Split: by conversation, alternating users, half ``tune`` and half ``heldout``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from importlib import resources
from pathlib import Path

DEVSET_VERSION = 1
DEVSET_START = dt.date(2024, 2, 5)
SESSIONS = 10
CATEGORIES = ("single-hop", "multi-hop", "temporal", "unanswerable")
SPLITS = ("tune", "heldout")
SINGLE_FACTS, MULTI_HOPS, TEMPORAL_KINDS, UNANSWERABLE = 10, 3, 2, 3
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def _data() -> dict:
    data = json.loads((resources.files(__package__) / "data" / "devset.json").read_text(encoding="utf-8"))
    if data.get("version") != DEVSET_VERSION:
        raise RuntimeError(f"devset.json is version {data.get('version')}, expected {DEVSET_VERSION}")
    return data


def max_users() -> int:
    return len(_data()["names"])


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _user(data: dict, index: int, seed: int, start: dt.date) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"devset-{DEVSET_VERSION}-{seed}-{index}")
    name = data["names"][index]
    user_id = f"u_{name.lower()}"
    split = SPLITS[index % 2]
    fill = lambda text, **slots: text.format(name=name, **slots)  # noqa: E731

    # session dates: 9-15 days apart, at some hour of the day
    day = start + dt.timedelta(days=rng.randint(0, 6))
    starts = []
    for _ in range(SESSIONS):
        starts.append(dt.datetime.combine(day, dt.time(rng.randint(7, 21), rng.randint(0, 59))))
        day += dt.timedelta(days=rng.randint(9, 15))

    # what goes where: items are (kind of item, payload) per session; plants remember their key
    items: list[list[tuple]] = [[] for _ in range(SESSIONS)]
    facts = rng.sample(data["facts"], len(data["facts"]))
    planted, unplanted = facts[:SINGLE_FACTS], facts[SINGLE_FACTS:]
    for session, fact in zip(rng.sample(range(SESSIONS), SINGLE_FACTS), planted):
        value = rng.choice(fact["values"])
        items[session].append(("plant", ("single", fact["kind"]), fill(rng.choice(fact["says"]), v=value), fact, value))
    hops = rng.sample(data["multi_hop"], MULTI_HOPS)
    hop_slots = []
    for hop in hops:
        slots = {key: rng.choice(values) for key, values in hop["slots"].items()}
        first = rng.randint(0, SESSIONS - 4)
        second = rng.randint(first + 2, SESSIONS - 1)
        items[first].append(("plant", ("hop1", hop["kind"]), fill(rng.choice(hop["first"]), **slots), None, None))
        items[second].append(("plant", ("hop2", hop["kind"]), fill(rng.choice(hop["second"]), **slots), None, slots["x"]))
        hop_slots.append(slots)
    by_month: dict[tuple[int, int], list[int]] = {}
    for session, moment in enumerate(starts):
        by_month.setdefault((moment.year, moment.month), []).append(session)
    temporals = rng.sample(data["temporal"], TEMPORAL_KINDS)
    mentions: dict[str, list[tuple[int, str]]] = {}
    for kind in temporals:
        months = sorted(by_month)
        chosen = [rng.choice(by_month[month]) for month in months]  # one session per month
        values = rng.sample(kind["values"], len(chosen))
        mentions[kind["kind"]] = list(zip(chosen, values))
        for session, value in zip(chosen, values):
            items[session].append(("plant", ("temporal", kind["kind"], session), fill(rng.choice(kind["says"]), v=value), None, value))
    for session in range(SESSIONS):
        for line in rng.sample(data["chatter"], rng.randint(3, 5)):
            items[session].append(("chat", None, line, None, None))
        for fact in rng.sample(data["facts"], 2):
            items[session].append(("chat", None, rng.choice(fact["distract"]), None, None))
        rng.shuffle(items[session])

    records: list[dict] = []
    where: dict[tuple, str] = {}
    for session, moment in enumerate(starts):
        session_id = f"{user_id}-s{session + 1:02d}"
        turns: list[tuple[str, str, tuple | None]] = []
        if session == 0:
            turns.append(("system", fill(rng.choice(data["system"])), None))
        turns.append(("assistant", fill(rng.choice(data["greetings"])), None))
        for _kind, key, text, fact, _value in items[session]:
            turns.append(("user", text, key))
            reply = rng.choice(fact["reply"]) if fact is not None else rng.choice(data["answers"])
            turns.append(("assistant", fill(reply), None))
        clock = moment
        for number, (role, content, key) in enumerate(turns, 1):
            memory_id = f"{session_id}-t{number:02d}"
            if key is not None:
                where[key] = memory_id
            records.append({
                "memory_id": memory_id, "user_id": user_id, "agent_id": data["agent"], "session_id": session_id,
                "role": role, "content": content, "created_at": _stamp(clock),
                "metadata": {"set": "devset", "turn": number},
            })
            clock += dt.timedelta(seconds=rng.randint(20, 90))

    last = starts[-1]
    questions: list[dict] = []

    def ask(category: str, text: str, evidence: list[str], answer: str | None, asked_at: dt.datetime) -> None:
        questions.append({
            "id": f"{user_id}-q{len(questions) + 1:02d}", "user_id": user_id, "conversation": user_id,
            "question": text, "category": category, "evidence": evidence, "answer": answer,
            "asked_at": _stamp(asked_at), "split": split,
        })

    later = lambda: last + dt.timedelta(days=rng.randint(1, 10), hours=rng.randint(0, 8))  # noqa: E731
    for fact in planted:
        value = next(i[4] for s in items for i in s if i[1] == ("single", fact["kind"]))
        ask("single-hop", fill(rng.choice(fact["ask"])), [where[("single", fact["kind"])]], value, later())
    for hop, slots in zip(hops, hop_slots):
        evidence = [where[("hop1", hop["kind"])], where[("hop2", hop["kind"])]]
        ask("multi-hop", fill(rng.choice(hop["ask"]), **slots), evidence, slots["x"], later())
    for kind in temporals:
        said = mentions[kind["kind"]]
        picks = rng.sample(range(len(said)), min(2, len(said)))
        for n, pick in enumerate(picks):
            session, value = said[pick]
            evidence = [where[("temporal", kind["kind"], session)]]
            moment = starts[session]
            if n == 0:  # "last week": asked in the week after the mention's week
                monday = moment.date() - dt.timedelta(days=moment.weekday()) + dt.timedelta(days=7)
                asked = dt.datetime.combine(monday + dt.timedelta(days=rng.randint(0, 4)), dt.time(rng.randint(8, 20)))
                when = "last week"
            else:  # "in <Month>": asked after the last session
                asked, when = later(), f"in {MONTHS[moment.month - 1]}"
            ask("temporal", fill(rng.choice(kind["ask"]), when=when), evidence, value, asked)
    for fact in rng.sample(unplanted, UNANSWERABLE):
        ask("unanswerable", fill(rng.choice(fact["ask"])), [], None, later())
    return records, questions


def generate_devset(seed: int = 0, users: int | None = None, start: dt.date = DEVSET_START) -> tuple[list[dict], list[dict]]:
    """The set's memories (landing records) and its labelled questions, for `users` users
    (default: all names in the data file), deterministic for `seed`."""
    data = _data()
    users = len(data["names"]) if users is None else users
    if not 2 <= users <= len(data["names"]):
        raise ValueError(f"users must be between 2 and {len(data['names'])}, not {users}")
    records, questions = [], []
    for index in range(users):
        r, q = _user(data, index, seed, start)
        records += r
        questions += q
    return records, questions


def write_devset(landing: str | Path, qa: str | Path, *, seed: int = 0, users: int | None = None) -> dict:
    """Write the set's landing files (``<landing>/<day>/devset.jsonl``) and its questions
    (JSON lines at `qa`); returns a summary."""
    records, questions = generate_devset(seed, users)
    landing, qa = Path(landing), Path(qa)
    by_day: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: (r["created_at"], r["memory_id"])):
        by_day.setdefault(record["created_at"][:10], []).append(json.dumps(record, ensure_ascii=False))
    for day, lines in by_day.items():
        (landing / day).mkdir(parents=True, exist_ok=True)
        (landing / day / "devset.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    qa.parent.mkdir(parents=True, exist_ok=True)
    qa.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
    return {
        "landing": str(landing), "qa": str(qa), "days": sorted(by_day), "memories": len(records),
        "users": len({r["user_id"] for r in records}), "questions": len(questions),
        "categories": dict(sorted(Counter(q["category"] for q in questions).items())),
        "splits": dict(sorted(Counter(q["split"] for q in questions).items())),
        "devset_version": DEVSET_VERSION, "seed": seed,
    }
