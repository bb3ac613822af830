"""Retrieval: vector search scoped to one user, distinct memories, hydrated from LibSQL."""

from __future__ import annotations

from dataclasses import dataclass

from .embedding import Embedder
from .lance_store import LanceStore, scope_filter
from .record_store import SystemOfRecord
from .records import timestamp_micros

MAX_QUERY_CHARS = 10_000


@dataclass
class Hit:
    memory_id: str
    chunk_id: str
    user_id: str
    agent_id: str | None
    session_id: str | None
    role: str | None
    content: str
    chunk_text: str
    created_at: str
    metadata: dict
    score: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SearchResult:
    hits: list[Hit]
    dropped: int = 0  # vector hits whose memory LibSQL does not hold (never shown)


MODES = ("hybrid", "vector", "text")
# The constant of reciprocal rank fusion, score = sum of 1 / (RRF_K + rank). The classic 60
# (Cormack et al., 2009, fusing many long ranked runs) flattens ranks so much that a memory
# both rankings place mid-list beats one that either places first; on our labelled set
# 1 gives the best MRR with both models and 60 the worst (BENCHMARKS.md).
RRF_K = 1


def distinct_memories(rows: list[dict]) -> list[dict]:
    """Chunk rows reduced to the best chunk of each memory, order kept."""
    best: dict[str, dict] = {}
    for row in rows:
        best.setdefault(row["memory_id"], row)
    return list(best.values())


def reciprocal_rank_fusion(*rankings: list[str], k: int = RRF_K) -> list[tuple[str, float]]:
    """Ids ranked by the sum over rankings of 1 / (k + rank); ties keep first-seen order."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def search(
    embedder: Embedder,
    lance: LanceStore,
    libsql: SystemOfRecord,
    query: str,
    *,
    user_id: str,
    agent_id: str | None = None,
    session_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    k: int = 10,
    mode: str = "hybrid",
) -> SearchResult:
    """The `k` best distinct memories of `user_id` for `query`, best first.

    `since`/`until` (ISO-8601) bound `created_at`, `until` exclusive. `mode` is "hybrid"
    (vector and full-text rankings fused by RRF), "vector" or "text". Scores are the
    cosine similarity for "vector", BM25 for "text" and the RRF sum for "hybrid"."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id is required")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must not be empty")
    if not 1 <= k <= 1000:
        raise ValueError("k must be between 1 and 1000")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    since_us = timestamp_micros(since) if since else None
    until_us = timestamp_micros(until) if until else None
    where = scope_filter(user_id, agent_id, session_id, since_us, until_us)
    query = query[:MAX_QUERY_CHARS]
    vector = query_embedder(embedder, lance).embed([query])[0] if mode != "text" else None
    # Several chunks of one memory may rank high, and older versions or expired memories are
    # left out: over-fetch so k distinct memories remain, and fetch more while some are missing.
    limit = k * 4
    while True:
        vector_rows, text_rows = lance.rankings(
            vector=vector, text=query if mode != "vector" else None, where=where, limit=limit,
        )
        full = max(len(vector_rows), len(text_rows)) >= limit
        result = _ranked(libsql, lance, user_id, mode, vector_rows, text_rows, k)
        if len(result.hits) == k or not full or limit >= MAX_FETCH:
            return result
        limit = min(limit * 4, MAX_FETCH)


# The most chunk rows one ranking fetches, however many are left out as old versions or expired.
MAX_FETCH = 4096


def query_embedder(embedder: Embedder, lance: LanceStore) -> Embedder:
    """The model that built the index searches read (during a migration, the old one)."""
    info = lance.search_table_info() if lance.model is not None else None
    if info is None:
        return embedder
    if info["model"] is None:  # made before models were recorded: taken as the configured one
        if embedder.dim != info["dim"]:
            raise ValueError(
                f"the search index was built by an unrecorded model of dimension {info['dim']}, not by "
                f"{embedder.model_name} ({embedder.dim}): set AGENTMEM_EMBED_MODEL back, or re-run every day"
            )
        return embedder
    if info["model"] == embedder.model_key:
        return embedder
    return Embedder(info["model_name"], info["model_path"])


def _ranked(libsql, lance, user_id, mode, vector_rows, text_rows, k) -> SearchResult:
    """The hits of two rankings: current versions only, distinct memories, hydrated."""
    from .lifecycle import current_rows

    vector_rows = distinct_memories(current_rows(lance, user_id, vector_rows))
    text_rows = distinct_memories(current_rows(lance, user_id, text_rows))
    if mode == "vector":
        ranked = [(row, 1.0 - row["_distance"] / 2.0) for row in vector_rows]
    elif mode == "text":
        ranked = [(row, row["_score"]) for row in text_rows]
    else:
        rows = {row["memory_id"]: row for row in reversed(text_rows + vector_rows)}  # vector's chunk wins
        fused = reciprocal_rank_fusion([r["memory_id"] for r in vector_rows], [r["memory_id"] for r in text_rows])
        ranked = [(rows[memory_id], score) for memory_id, score in fused]
    return _hydrate(libsql, ranked, user_id, k)


def _hydrate(libsql: SystemOfRecord, ranked: list[tuple[dict, float]], user_id: str, k: int) -> SearchResult:
    """Hits for the ranked chunk rows, from LibSQL's full rows; rows it lacks are dropped."""
    from .lifecycle import now_us

    records = libsql.memories((row["day"], row["memory_id"]) for row, _ in ranked)
    hits, dropped = [], 0
    now = now_us()
    for row, score in ranked:
        record = records.get((row["day"], row["memory_id"]))
        if record is None or record["user_id"] != user_id:
            dropped += 1
            continue
        if record["expires_at_us"] is not None and record["expires_at_us"] <= now:  # never shown past it
            dropped += 1
            continue
        hits.append(
            Hit(
                memory_id=row["memory_id"],
                chunk_id=row["chunk_id"],
                user_id=record["user_id"],
                agent_id=record["agent_id"],
                session_id=record["session_id"],
                role=record["role"],
                content=record["content"],
                chunk_text=row["text"],
                created_at=record["created_at"],
                metadata=record["metadata"],
                score=float(score),
            )
        )
        if len(hits) == k:
            break
    return SearchResult(hits=hits, dropped=dropped)
