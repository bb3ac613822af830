"""Retrieval quality on a labelled set: hit@k and mean reciprocal rank, overall and per category.

A question of category `unanswerable` has no evidence (the fact was never stated): it cannot
be a hit, so it is left out of hit@k and MRR and only counted under `categories`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from .records import timestamp_micros

CUTOFFS = (1, 5, 10)
UNANSWERABLE = "unanswerable"


def read_questions(path: str | Path) -> list[dict]:
    """The labelled questions of a JSON-lines file; a malformed line is a clear error."""
    questions = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not (
                isinstance(item, dict)
                and isinstance(item.get("user_id"), str)
                and isinstance(item.get("question"), str)
                and isinstance(item.get("evidence"), list)
                and (item["evidence"] or item.get("category") == UNANSWERABLE)
            ):
                raise ValueError(
                    f"{path}:{number}: needs user_id, question and a non-empty evidence list "
                    f"(empty only for category {UNANSWERABLE!r})"
                )
            for key in ("user_id", "question"):
                if not item[key].strip() or "\x00" in item[key]:
                    raise ValueError(f"{path}:{number}: {key} must be non-empty text without NUL, not {item[key]!r}")
            if not all(isinstance(e, str) and e for e in item["evidence"]):
                raise ValueError(f"{path}:{number}: evidence must list memory ids (non-empty strings)")
            if item.get("asked_at") is not None:
                try:
                    timestamp_micros(item["asked_at"])
                except (TypeError, ValueError):
                    raise ValueError(f"{path}:{number}: asked_at must be an ISO-8601 time, not {item['asked_at']!r}") from None
            questions.append(item)
    return questions


def first_relevant_rank(ranked_ids: list[str], evidence: Iterable[str]) -> int | None:
    """1-based rank of the first evidence memory among the distinct ranked memories."""
    wanted = set(evidence)
    for rank, memory_id in enumerate(ranked_ids, 1):
        if memory_id in wanted:
            return rank
    return None


def summarize(ranks: list[int | None]) -> dict:
    n = len(ranks)
    doc: dict = {"n": n}
    for cutoff in CUTOFFS:
        doc[f"hit@{cutoff}"] = round(sum(1 for r in ranks if r and r <= cutoff) / n, 4) if n else 0.0
    doc["mrr"] = round(sum(1.0 / r for r in ranks if r) / n, 4) if n else 0.0
    return doc


def evaluate(questions: list[dict], ranked_ids: Callable[[dict], list[str]]) -> dict:
    """Metrics overall and, for questions that have a `category`, per category.

    `ranked_ids(question)` returns the distinct memory ids retrieved for it, best first."""
    answerable = [q for q in questions if q["evidence"]]
    ranks = [first_relevant_rank(ranked_ids(q), q["evidence"]) for q in answerable]
    doc = summarize(ranks)
    by_category: dict[str, list] = {}
    for question, rank in zip(answerable, ranks):
        if question.get("category") is not None:
            by_category.setdefault(str(question["category"]), []).append(rank)
    categories = {name: summarize(r) for name, r in sorted(by_category.items())}
    unanswerable = len(questions) - len(answerable)
    if unanswerable:  # nothing to find: not searched, not scored
        categories[UNANSWERABLE] = {"n": unanswerable, "scored": False}
        doc["unanswerable"] = unanswerable
    if categories:
        doc["categories"] = categories
    return doc
