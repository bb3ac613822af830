"""The labelled development set: deterministic, its categories and split, evidence that exists
and answers the question, questions that do not copy the evidence's words."""

import hashlib
import json
import re
from collections import Counter

import pytest

from agentmem_dagster.demo.devset import CATEGORIES, DEVSET_VERSION, generate_devset, write_devset
from agentmem_dagster.engine.query import understand_query
from agentmem_dagster.engine.records import timestamp_micros

# The set is a benchmark input: a change to the data file or the generator that changes it
# must bump DEVSET_VERSION (and this pin).
DEVSET_HASHES = {1: "9bb09277102b97e026113c3f759fee73fa6679b7e793e6f0ed5e356e05e56802"}


@pytest.fixture(scope="module")
def devset():
    return generate_devset()


def _hash(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def test_deterministic_per_seed(devset):
    assert generate_devset() == devset
    other = generate_devset(seed=1)
    assert other != devset
    assert len(other[1]) == len(devset[1])


def test_pinned_for_its_version(devset):
    assert DEVSET_VERSION in DEVSET_HASHES
    assert _hash(devset) == DEVSET_HASHES[DEVSET_VERSION]


def test_categories_and_size(devset):
    records, questions = devset
    counts = Counter(q["category"] for q in questions)
    assert set(counts) == set(CATEGORIES)
    assert len(questions) >= 300 and len(questions) - counts["unanswerable"] >= 300
    assert min(counts.values()) >= 50
    assert len({r["user_id"] for r in records}) == 20
    # multi-session conversations of user and assistant turns on different dates
    sessions = Counter((r["user_id"], r["session_id"]) for r in records)
    assert len(sessions) == 200 and min(sessions.values()) >= 8
    assert {r["role"] for r in records} == {"user", "assistant", "system"}
    days_per_user = {u: len({r["created_at"][:10] for r in records if r["user_id"] == u}) for u, _ in sessions}
    assert min(days_per_user.values()) >= 10


def test_split_is_by_conversation_half_each(devset):
    _, questions = devset
    split_of = {}
    for q in questions:
        assert q["conversation"] == q["user_id"]
        assert split_of.setdefault(q["user_id"], q["split"]) == q["split"]  # a conversation is in one half
    assert Counter(split_of.values()) == {"tune": 10, "heldout": 10}
    assert Counter(q["split"] for q in questions) == {"tune": 200, "heldout": 200}


def test_evidence_is_the_users_own_turns_and_holds_the_answer(devset):
    records, questions = devset
    by_id = {r["memory_id"]: r for r in records}
    assert len(by_id) == len(records)
    for q in questions:
        assert timestamp_micros(q["asked_at"])
        if q["category"] == "unanswerable":
            assert q["evidence"] == [] and q["answer"] is None
            continue
        evidence = [by_id[e] for e in q["evidence"]]
        assert all(e["user_id"] == q["user_id"] and e["role"] == "user" for e in evidence)
        assert q["answer"] in evidence[-1]["content"]
        assert all(e["created_at"] < q["asked_at"] for e in evidence)
        if q["category"] == "multi-hop":
            assert len(evidence) == 2 and evidence[0]["session_id"] != evidence[1]["session_id"]


def test_questions_are_paraphrased_not_copied(devset):
    records, questions = devset
    by_id = {r["memory_id"]: r for r in records}
    words = lambda text: set(re.findall(r"[a-z]{4,}", text.lower()))  # noqa: E731
    overlaps = []
    for q in questions:
        if q["category"] == "single-hop":
            assert q["answer"].lower() not in q["question"].lower()
            overlaps.append(len(words(q["question"]) & words(by_id[q["evidence"][0]]["content"])))
    assert sum(overlaps) / len(overlaps) < 0.5  # on average, less than one shared content word


def test_temporal_questions_are_answered_inside_their_window(devset):
    """The time expression of each temporal question, read relative to its asked_at, holds
    its evidence and none of the user's other mentions of the same answer kind."""
    records, questions = devset
    by_id = {r["memory_id"]: r for r in records}
    temporal = [q for q in questions if q["category"] == "temporal"]
    assert {("last week" in q["question"]) for q in temporal} == {True, False}
    for q in temporal:
        plan = understand_query(q["question"], q["user_id"], timestamp_micros(q["asked_at"]))
        assert plan.since_us is not None, q["question"]
        created = timestamp_micros(by_id[q["evidence"][0]]["created_at"])
        assert plan.since_us <= created < plan.until_us, q


def test_write_devset(tmp_path):
    summary = write_devset(tmp_path / "landing", tmp_path / "qa.jsonl", users=4)
    assert summary["users"] == 4 and summary["questions"] == 80
    assert summary["splits"] == {"heldout": 40, "tune": 40}
    lines = [json.loads(line) for day in summary["days"] for line in (tmp_path / "landing" / day / "devset.jsonl").open()]
    assert len(lines) == summary["memories"]
    assert all(line["created_at"].startswith(day) for day in summary["days"] for line in map(json.loads, (tmp_path / "landing" / day / "devset.jsonl").open()))
    assert len((tmp_path / "qa.jsonl").read_text().splitlines()) == 80
    with pytest.raises(ValueError, match="users must be between 2 and 20"):
        generate_devset(users=21)
