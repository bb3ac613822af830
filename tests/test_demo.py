"""Tests for the synthetic demo data generator (fast, standard library only)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from agentmem_dagster import demo

FIELDS = (
    "memory_id", "user_id", "agent_id", "session_id", "role", "content", "created_at", "metadata",
)
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture(scope="module")
def memories() -> list[dict]:
    return demo.generate_memories(400)


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line for line in fh.read().split("\n") if line]


def _is_valid(line: str) -> bool:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return False
    return (
        all(k in rec for k in FIELDS)
        and bool(rec["content"])
        and bool(STAMP.match(rec["created_at"]))
        and isinstance(rec["metadata"], dict)
    )


def test_records_are_well_formed(memories):
    assert len(memories) == 400
    assert [m["memory_id"] for m in memories] == [f"demo-0-{i:06d}" for i in range(400)]
    for m in memories:
        assert tuple(m) == FIELDS
        assert m["role"] in demo.ROLES
        assert m["agent_id"] in demo.AGENTS
        assert m["user_id"] in demo.USER_IDS
        assert m["content"].strip()
        assert STAMP.match(m["created_at"])
        assert isinstance(m["metadata"], dict)
        json.dumps(m)
    assert set(demo.USER_IDS) == {m["user_id"] for m in memories}
    assert "o'brien" in demo.USER_IDS
    assert {"user", "assistant", "note"} <= {m["role"] for m in memories}


def test_deterministic_per_seed(memories):
    assert demo.generate_memories(400) == memories
    assert demo.generate_memories(400, seed=1) != memories
    assert demo.chat_turns(500, seed=3) == demo.chat_turns(500, seed=3)


def test_record_content_does_not_depend_on_n(memories):
    def key(m):
        return m["memory_id"], m["user_id"], m["session_id"], m["role"], m["content"]

    assert [key(m) for m in demo.generate_memories(200)] == [key(m) for m in memories[:200]]


def test_days_and_sessions(memories):
    days = sorted({m["created_at"][:10] for m in memories})
    assert days == [(dt.date(2024, 6, 1) + dt.timedelta(days=d)).isoformat() for d in range(14)]
    sessions: dict[str, set[str]] = {}
    for m in memories:
        sessions.setdefault(m["session_id"], set()).add((m["user_id"], m["created_at"][:10]))
    assert all(len(v) == 1 for v in sessions.values())  # one user, one day per session
    custom = demo.generate_memories(30, start=dt.date(2025, 1, 30), days=3)
    assert {m["created_at"][:10] for m in custom} == {"2025-01-30", "2025-01-31", "2025-02-01"}


def test_long_and_non_ascii_content(memories):
    long = [m for m in memories if len(m["content"]) > 2000]
    assert 5 <= len(long) <= 40
    assert all(len(m["content"].split()) >= 400 for m in long)
    text = "".join(m["content"] for m in memories)
    assert re.search("[\u4e00-\u9fff]", text)  # CJK
    assert re.search("[\U0001F300-\U0001FAFF]", text)  # emoji
    assert re.search("[áéíóúüñ]", text)  # accents
    assert all(len(m["content"]) < 1000 for m in demo.generate_memories(400, long_share=0.0))


def test_chat_turns_speed_and_spread():
    t0 = time.process_time()  # CPU time: robust to other processes on the machine
    turns = demo.chat_turns(100_000)
    assert time.process_time() - t0 < 2.0
    assert len(turns) == 100_000
    words = [len(t.split()) for t in turns]
    typical = sum(5 <= w <= 60 for w in words) / len(words)
    long = sum(w >= 400 for w in words) / len(words)
    assert typical > 0.8
    assert 0.03 < long < 0.07
    assert max(words) <= 1700
    assert len(set(turns)) > 10_000
    assert turns[:1000] == [m["content"] for m in demo.generate_memories(1000)]


def test_demo_questions_evidence(memories):
    by_id = {m["memory_id"]: m for m in memories}
    questions = demo.demo_questions()
    assert 25 <= len(questions) <= 35
    assert {"preference", "personal", "plan", "work"} == {q["category"] for q in questions}
    assert set(Counter(q["user_id"] for q in questions)) == set(demo.USER_IDS)
    small = {m["memory_id"] for m in demo.generate_memories(200)}
    for q in questions:
        assert q["evidence"] and set(q["evidence"]) <= small
        for mid in q["evidence"]:
            assert by_id[mid]["user_id"] == q["user_id"]
        # the answer is stated in the evidence but not copied into the question
        assert q["answer"].lower() in by_id[q["evidence"][0]]["content"].lower()
        assert q["answer"].lower() not in q["question"].lower()
    assert demo.demo_questions(seed=5)[0]["evidence"][0].startswith("demo-5-")


def test_planted_answers_are_unique_to_evidence():
    """No other memory of the same user repeats a planted answer (clean retrieval labels)."""
    memories = demo.generate_memories(1500)
    for q in demo.demo_questions():
        pattern = re.compile(rf"\b{re.escape(q['answer'])}\b", re.IGNORECASE)
        hits = {
            m["memory_id"] for m in memories
            if m["user_id"] == q["user_id"] and pattern.search(m["content"])
        }
        assert hits <= set(q["evidence"]), (q["question"], hits)


def test_write_demo_landing(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "keep.txt").write_text("not ours")
    result = demo.write_demo_landing(landing)
    assert result["landing"] == str(landing)
    assert result["memories"] == 400 and result["bad_lines"] == 5
    assert result["days"] == sorted(p.name for p in landing.iterdir() if p.is_dir())
    assert len(result["days"]) == 14

    files = sorted(landing.glob("*/*.jsonl*"))
    assert len(files) == result["files"]
    gz = [f for f in files if f.name.endswith(".jsonl.gz")]
    assert len(gz) == 1
    assert all(_is_valid(line) or "bad" in line for line in _read_lines(gz[0]))

    lines = [(f.parent.name, line) for f in files for line in _read_lines(f)]
    valid = [line for _, line in lines if _is_valid(line)]
    bad_days = [day for day, line in lines if not _is_valid(line)]
    assert len(valid) == 400
    assert len(bad_days) == 5 and len(set(bad_days)) >= 4
    for day, line in lines:  # each file holds its own day only
        if _is_valid(line):
            assert json.loads(line)["created_at"].startswith(day)

    # one bad line of each kind
    parsed = []
    for _, line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            parsed.append(None)
    assert parsed.count(None) == 1
    records = [p for p in parsed if p is not None]
    assert sum("user_id" not in r for r in records) == 1
    assert sum(r.get("content") == "" for r in records) == 1
    assert sum(r.get("created_at") == "not-a-date" for r in records) == 1
    assert sum(isinstance(r.get("metadata"), list) for r in records) == 1

    # idempotent: same bytes, no extra files, foreign files untouched
    before = {f: f.read_bytes() for f in files}
    assert demo.write_demo_landing(landing) == result
    assert {f: f.read_bytes() for f in sorted(landing.glob("*/*.jsonl*"))} == before
    assert (landing / "keep.txt").read_text() == "not ours"
    assert not list(landing.rglob("*.tmp"))


def test_write_demo_landing_small_and_custom(tmp_path):
    result = demo.write_demo_landing(
        tmp_path / "l", start=dt.date(2024, 1, 1), days=2, memories=20, bad_lines=0, seed=3
    )
    assert result["days"] == ["2024-01-01", "2024-01-02"]
    assert result["memories"] == 20 and result["bad_lines"] == 0
    lines = [line for f in (tmp_path / "l").glob("*/*.jsonl*") for line in _read_lines(f)]
    assert len(lines) == 20 and all(_is_valid(line) for line in lines)


def _landing_hash(root: Path, **kwargs) -> str:
    demo.write_demo_landing(root, **kwargs)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _json_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


# The corpus of each data version, pinned by hash: benchmark corpora are reproducible only if
# the same seed gives the same bytes. A change to the generator or its data files that changes
# these must bump CORPUS_VERSION and add its hashes here (the old ones stay in git).
CORPUS_HASHES = {
    1: {
        "landing_default": "9b01a46530ec6a9060d77679cfbfd0780eb64f46a57698107db981054f64d4a2",
        "landing_seed7": "d076c4e8b2214323e45b49ab257038ae54f2a66130eee5b0dcfd518881dc536a",
        "landing_1day": "b81cab21bd3d9eede4510bf5bdfd5da634067c2d2ad4ca88e85254cb90de6a12",
        "questions_0": "179a2cd7152c2717937725eae56badd66c0b1b40d4d56904c9e8cda859d9bb78",
        "questions_7": "2581603925df4bafab42cbff7c6f7d1b548d561b279aa205201f834aec2fba12",
        "memories_long": "d41bef59984d5bdd4e110b5ae877b6f7ede01565799955e2b388bf84f6c2aad8",
        "chat_turns": "0093e2fe9040e8c14c6a02d249d03fb116f417890b65352ef1ddf94712ab6cad",
    },
}


def test_corpus_is_byte_identical_for_its_version(tmp_path):
    version = demo.CORPUS_VERSION
    got = {
        "landing_default": _landing_hash(tmp_path / "a"),
        "landing_seed7": _landing_hash(
            tmp_path / "b", seed=7, memories=3000, days=30, bad_lines=12, start=dt.date(2023, 1, 5)
        ),
        "landing_1day": _landing_hash(tmp_path / "c", days=1, memories=300, start=dt.date(2024, 6, 1)),
        "questions_0": _json_hash(demo.demo_questions()),
        "questions_7": _json_hash(demo.demo_questions(7)),
        "memories_long": _json_hash(demo.generate_memories(2000, seed=3, long_share=0.3)),
        "chat_turns": _json_hash(demo.chat_turns(5000, seed=2)),
    }
    assert got == CORPUS_HASHES[version]
