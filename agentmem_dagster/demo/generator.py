"""Synthetic agent memories for demos, tests and benchmarks.

Everything here is deterministic for a seed and uses only the standard library.
The personas, vocabulary and templates are package data (``data/personas.json`` and
``data/templates.json``), versioned together as :data:`CORPUS_VERSION`: a change to them
that changes the generated corpus must bump it, so that benchmark corpora stay reproducible
(a test pins the output of each version by hash). Six users with personas talk to four agents; each user has five facts planted
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from itertools import accumulate, islice
from pathlib import Path

__all__ = [
    "AGENTS",
    "CORPUS_VERSION",
    "DEFAULT_START",
    "USER_IDS",
    "chat_turns",
    "demo_questions",
    "generate_memories",
    "write_demo_landing",
]

# The version of the data files; write_demo_landing reports it with the corpus it wrote.
CORPUS_VERSION = 1
DEFAULT_START = dt.date(2024, 6, 1)
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


def _load(name: str) -> dict:
    data = json.loads((resources.files(__package__) / "data" / f"{name}.json").read_text(encoding="utf-8"))
    if data.get("version") != CORPUS_VERSION:
        raise RuntimeError(f"demo data file {name}.json is version {data.get('version')}, expected {CORPUS_VERSION}")
    return data


_PERSONA_DATA = _load("personas")
_TEXT = _load("templates")

AGENTS: tuple[str, ...] = tuple(_PERSONA_DATA["agents"])
PERSONAS: tuple[_Persona, ...] = tuple(
    _Persona(
        p["user_id"],
        p["slots"],
        p["agents"],
        tuple(p["sign_offs"]),
        tuple(_Fact(**f) for f in p["facts"]),
    )
    for p in _PERSONA_DATA["personas"]
)
USER_IDS = tuple(p.user_id for p in PERSONAS)


def _tuples(mapping: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {key: tuple(values) for key, values in mapping.items()}


# Vocabulary and templates (chatter never mentions a planted fact)
VOCAB = _tuples(_TEXT["vocab"])
AGENT_TOPICS = _tuples(_TEXT["agent_topics"])
USER_TEMPLATES = _tuples(_TEXT["user_templates"])
ASSISTANT_TEMPLATES = _tuples(_TEXT["assistant_templates"])
NOTE_TEMPLATES = tuple(_TEXT["note_templates"])
SYSTEM_TEMPLATES = tuple(_TEXT["system_templates"])
OPENERS = tuple(_TEXT["openers"])
USER_FOLLOW_UPS = tuple(_TEXT["user_follow_ups"])
ASSISTANT_FOLLOW_UPS = tuple(_TEXT["assistant_follow_ups"])
ACKS = tuple(_TEXT["acks"])
CLIENTS = tuple(_TEXT["clients"])


@dataclass(frozen=True)
class _LongKind:
    role: str
    title: str
    headers: tuple[str, ...]  # cycled section headers; empty: none (or generated days)
    sentences: tuple[str, ...]
    pinned: tuple[str, ...] = ()  # slots fixed for the whole memory


LONG_KINDS: dict[str, _LongKind] = {
    kind: _LongKind(
        spec["role"], spec["title"], tuple(spec["headers"]), tuple(spec["sentences"]), tuple(spec["pinned"])
    )
    for kind, spec in _TEXT["long_kinds"].items()
}
AGENT_LONG_KIND: dict[str, str] = dict(_TEXT["agent_long_kind"])

_PARTS_OF_DAY = tuple(_TEXT["parts_of_day"])


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
        "corpus_version": CORPUS_VERSION,
    }
