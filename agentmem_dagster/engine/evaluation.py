"""Retrieval quality on a labelled set: hit@k and mean reciprocal rank."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

CUTOFFS = (1, 5, 10)


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
                and item["evidence"]
            ):
                raise ValueError(f"{path}:{number}: needs user_id, question and a non-empty evidence list")
            for key in ("user_id", "question"):
                if not item[key].strip() or "\x00" in item[key]:
                    raise ValueError(f"{path}:{number}: {key} must be non-empty text without NUL, not {item[key]!r}")
            if not all(isinstance(e, str) and e for e in item["evidence"]):
                raise ValueError(f"{path}:{number}: evidence must list memory ids (non-empty strings)")
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
    ranks = [first_relevant_rank(ranked_ids(q), q["evidence"]) for q in questions]
    doc = summarize(ranks)
    by_category: dict[str, list] = {}
    for question, rank in zip(questions, ranks):
        if question.get("category") is not None:
            by_category.setdefault(str(question["category"]), []).append(rank)
    if by_category:
        doc["categories"] = {name: summarize(r) for name, r in sorted(by_category.items())}
    return doc
