"""Would embedding each dialogue turn with its neighbouring turns help retrieval?

Issue 15 asked for a turn "embedded and indexed with its neighbouring turns of the same
session (while the hit shown is still the turn itself)". Search instead lifts a turn by its
neighbours' scores at query time (`Fusion.context`), which costs ingest nothing. This measures
what the embedded kind would add, on the development set, before building it:

  turn     the turn's own text, as the pipeline embeds it
  window   the turn with the turn before and the turn after it in its session, one
           "role: text" line each (a text 2-3 times as long to embed)
  both     the mean of the two cosines (the turn and its window, two vectors per turn)

Each question is ranked exactly (cosine over every turn of its user, no index), with the
query handling search uses (the user's name dropped, a time expression narrowing created_at,
no narrowing when the window is empty). Figures: hit@1, hit@10 and MRR, overall and per
category, on the tune and held-out halves.

    AGENTMEM_EMBED_MODEL=sentence-transformers/all-MiniLM-L6-v2 \
    AGENTMEM_EMBED_MODEL_PATH=../shared/models/all-MiniLM-L6-v2 python benchmarks/context_embedding.py
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from agentmem_dagster.demo.devset import generate_devset
from agentmem_dagster.engine.embedding import Embedder
from agentmem_dagster.engine.evaluation import evaluate
from agentmem_dagster.engine.query import understand_query
from agentmem_dagster.engine.records import timestamp_micros

SIDES = ("turn", "window", "both")


def windows(records: list[dict]) -> list[str]:
    """Each turn with its session's turn before and after it."""
    by_session: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_session.setdefault(record["session_id"], []).append(i)
    text = [""] * len(records)
    for turns in by_session.values():
        turns.sort(key=lambda i: records[i]["created_at"])
        for place, i in enumerate(turns):
            near = turns[max(0, place - 1) : place + 2]
            text[i] = "\n".join(f"{records[j]['role']}: {records[j]['content']}" for j in near)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    embedder = Embedder(os.environ["AGENTMEM_EMBED_MODEL"], os.environ.get("AGENTMEM_EMBED_MODEL_PATH"))
    records, questions = generate_devset()
    started = time.perf_counter()
    turn = embedder.embed([r["content"] for r in records])
    turn_s = time.perf_counter() - started
    started = time.perf_counter()
    window = embedder.embed(windows(records))
    window_s = time.perf_counter() - started
    users = np.array([r["user_id"] for r in records])
    created = np.array([timestamp_micros(r["created_at"]) for r in records])
    ids = np.array([r["memory_id"] for r in records])

    def ranked(side: str):
        def ids_for(question: dict) -> list[str]:
            asked = timestamp_micros(question["asked_at"]) if question.get("asked_at") else None
            plan = understand_query(question["question"], question["user_id"], asked)
            mine = users == question["user_id"]
            if plan.since_us is not None:
                narrow = mine & (created >= plan.since_us) & (created < plan.until_us)
                mine = narrow if narrow.any() else mine
            rows = np.flatnonzero(mine)
            query = embedder.embed([plan.text])[0]
            scores = {"turn": turn[rows] @ query, "window": window[rows] @ query}
            scores["both"] = (scores["turn"] + scores["window"]) / 2
            return list(ids[rows[np.argsort(-scores[side], kind="stable")][:10]])

        return ids_for

    out = {"model": embedder.model_name, "turns": len(records), "embed_s": {"turn": round(turn_s, 1), "window": round(window_s, 1)}}
    for split in ("tune", "heldout"):
        chosen = [q for q in questions if q["split"] == split]
        out[split] = {side: evaluate(chosen, ranked(side)) for side in SIDES}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['model']}: {out['turns']} turns; embedding took {turn_s:.1f} s for the turns, {window_s:.1f} s for the windows")
    for split in ("tune", "heldout"):
        print(f"\n{split}: hit@1 / hit@10 / MRR (overall; single-hop; multi-hop; temporal)")
        for side in SIDES:
            doc = out[split][side]
            cells = [doc] + [doc["categories"][c] for c in ("single-hop", "multi-hop", "temporal")]
            print(f"  {side:7s} " + " | ".join(f"{c['hit@1']:.3f} / {c['hit@10']:.3f} / {c['mrr']:.3f}" for c in cells))


if __name__ == "__main__":
    main()
