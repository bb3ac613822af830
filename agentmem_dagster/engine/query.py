"""Reading a query before it is searched: the scoped user's own name, and time expressions.

Inside one user's scope the user's own name is in many memories (system prompts, the
assistant's greetings) and in none more than another, so it only pulls those up: it is
dropped from the query. A time expression ("last week", "in May", "3 days ago") names a
window of `created_at` relative to when the question is asked; it is taken out of the
query text and becomes a filter."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name and name != "May"})
WEEKDAYS = {name.lower(): number for number, name in enumerate(calendar.day_name)}
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "a couple of": 2, "a few": 3}
# Parts of a user id that are not a name (u_alice, user-42, usr:bob).
ID_PREFIXES = {"u", "user", "usr", "uid", "id"}
MIN_NAME = 3


@dataclass(frozen=True)
class QueryPlan:
    text: str  # what is searched
    since_us: int | None = None  # a window read from a time expression, `until` exclusive
    until_us: int | None = None
    dropped: tuple[str, ...] = ()  # the words taken out (names, the time expression)


def names_of(user_id: str) -> set[str]:
    """The name-like parts of a user id, lower case ("u_alice" -> {"alice"})."""
    parts = re.split(r"[^0-9a-z]+", user_id.lower())
    return {p for p in parts if len(p) >= MIN_NAME and p not in ID_PREFIXES and not p.isdigit()}


def drop_names(text: str, names: set[str]) -> tuple[str, list[str]]:
    """`text` without the words that are one of `names` (possessive 's too)."""
    if not names:
        return text, []
    dropped: list[str] = []

    def strip(match: re.Match) -> str:
        dropped.append(match.group(0))
        return ""

    pattern = r"\b(?:" + "|".join(re.escape(n) for n in sorted(names)) + r")(?:['\u2019]s)?\b"
    out = re.sub(pattern, strip, text, flags=re.IGNORECASE)
    return out, dropped


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def _month_start(year: int, month: int) -> dt.datetime:
    return dt.datetime(year, month, 1, tzinfo=dt.timezone.utc)


def _add_months(moment: dt.datetime, months: int) -> dt.datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return _month_start(index // 12, index % 12 + 1)


_MONTH_NAMES = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUMBER = r"(\d{1,3}|a couple of|a few|an|a|one|two|three|four|five|six)"
_EXPRESSIONS = [
    ("yesterday", r"\byesterday\b"),
    ("today", r"\b(?:earlier )?today\b"),
    ("last_week", r"\blast week\b"),
    ("this_week", r"\b(?:earlier )?this week\b"),
    ("last_month", r"\blast month\b"),
    ("this_month", r"\b(?:earlier )?this month\b"),
    ("ago", rf"\b{_NUMBER} (day|week|month)s? ago\b"),
    ("last_weekday", r"\b(?:last|on) (" + "|".join(WEEKDAYS) + r")\b"),
    ("in_month", rf"\b(?:back in|in|during|over|throughout) ({_MONTH_NAMES})\b(?: (\d{{4}}))?"),
]


def time_window(text: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime, str] | None:
    """The first time expression of `text`: (start, end exclusive, the words), or None."""
    found = []
    for kind, pattern in _EXPRESSIONS:
        match = re.search(pattern, text, flags=re.IGNORECASE)
        if match:
            found.append((match.start(), kind, match))
    if not found:
        return None
    _, kind, match = min(found, key=lambda item: item[0])
    today = _day_start(now.date())
    week = today - dt.timedelta(days=now.weekday())
    month = _month_start(now.year, now.month)
    if kind == "yesterday":
        start, end = today - dt.timedelta(days=1), today
    elif kind == "today":
        start, end = today, today + dt.timedelta(days=1)
    elif kind == "last_week":
        start, end = week - dt.timedelta(days=7), week
    elif kind == "this_week":
        start, end = week, today + dt.timedelta(days=1)
    elif kind == "last_month":
        start, end = _add_months(month, -1), month
    elif kind == "this_month":
        start, end = month, today + dt.timedelta(days=1)
    elif kind == "ago":
        raw = match.group(1).lower()
        n = int(raw) if raw.isdigit() else NUMBERS[raw]
        unit = match.group(2).lower()
        if unit == "day":  # that day, a day either side
            start, end = today - dt.timedelta(days=n + 1), today - dt.timedelta(days=n - 2)
        elif unit == "week":  # that week, half a week either side
            start = today - dt.timedelta(days=7 * n + 4)
            end = today - dt.timedelta(days=7 * n - 4)
        else:
            start, end = _add_months(month, -n), _add_months(month, -n + 1)
    elif kind == "last_weekday":
        back = (now.weekday() - WEEKDAYS[match.group(1).lower()] - 1) % 7 + 1
        start = today - dt.timedelta(days=back)
        end = start + dt.timedelta(days=1)
    else:  # in <Month> [year]: that month of the given year, else the latest one not after now
        number = MONTHS[match.group(1).lower()]
        year = int(match.group(2)) if match.group(2) else (now.year if number <= now.month else now.year - 1)
        start = _month_start(year, number)
        end = _add_months(start, 1)
    return start, min(end, now + dt.timedelta(seconds=1)) if end > now else end, match.group(0)


def understand_query(query: str, user_id: str, asked_us: int | None = None, *, names: set[str] | None = None) -> QueryPlan:
    """The query to search for `user_id`: names dropped, a time expression read relative to
    `asked_us` (microseconds since 1970, default now) into a created_at window."""
    now = (
        dt.datetime.fromtimestamp(asked_us / 1_000_000, tz=dt.timezone.utc)
        if asked_us is not None else dt.datetime.now(dt.timezone.utc)
    )
    text, dropped = drop_names(query, names_of(user_id) | set(names or ()))
    since_us = until_us = None
    window = time_window(text, now)
    if window is not None:
        start, end, words = window
        if end > start:
            since_us, until_us = _micros(start), _micros(end)
            text = text.replace(words, " ", 1)
            dropped.append(words)
    text = re.sub(r"\s+([?.!,;:])", r"\1", re.sub(r"\s+", " ", text)).strip()
    if not re.search(r"\w", text):  # nothing left to search for: search what was asked
        return QueryPlan(query, since_us, until_us, ())
    return QueryPlan(text, since_us, until_us, tuple(dropped))


def _micros(moment: dt.datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond
