"""Retrieval: vector and full-text rankings scoped to one user, fused, distinct current
memories, hydrated from the system of record."""

from __future__ import annotations

from dataclasses import dataclass

from .embedding import Embedder
from .lance_store import LanceStore, scope_filter
from .query import QueryPlan, understand_query
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
    dropped: int = 0  # candidates whose memory the system of record does not hold (never shown)


MODES = ("hybrid", "vector", "text")
# The constant of reciprocal rank fusion when it is asked for by name (`reciprocal_rank_fusion`).
RRF_K = 1


@dataclass(frozen=True)
class Fusion:
    """How "hybrid" combines the vector and full-text rankings of one query.

    `method`: "minmax" (each ranking's scores scaled to 0..1 over its candidates, a memory
    missing from a ranking scores 0 there), "zscore" (standardised over the candidates, a
    missing memory gets the ranking's lowest), "rrf" (weighted reciprocal rank, constant `k`)
    "cosine" (the vector ranking's cosine as it is, BM25 divided by its best score) or
    "calibrated" (the cosine as it is, BM25 mapped to 0..1 by bm25 / (bm25 + `tau`), so that
    a weak text match stays weak however it ranks).
    The fused score is `weight` times the vector side plus (1 - weight) times the text side.
    `context`: a memory also gets this share of the best fused score among the turns of its
    session within `context_seconds` of it (its neighbouring turns), so a turn whose reply or
    question matches is lifted too; the hit shown is still the turn itself.
    `role_penalty` is taken off the score of an assistant's or system turn: what a user's
    memory holds about them is mostly what they said, and a reply that matches lifts the
    user's turn next to it through `context`."""

    method: str = "minmax"
    weight: float = 0.5
    k: float = 60.0
    tau: float = 5.0
    context: float = 0.0
    context_seconds: float = 180.0
    role_penalty: float = 0.0


PENALIZED_ROLES = ("assistant", "system")


# Chosen per model on the tune half of the development set (`agentmem devset`) by
# benchmarks/tune_fusion.py among 1,872 fusions (min-max, z-score, cosine, calibrated, weighted
# RRF; each with or without context and a role penalty), never on the demo questions: the best
# tune MRR among those at least as good as each input on hit@1, hit@10 and MRR overall and in
# every category. A model's cosines have a scale of their own, so the weights go with the
# model; a model not listed gets the default model's. BENCHMARKS.md has the held-out figures.
FUSIONS = {
    "sentence-transformers/all-MiniLM-L6-v2": Fusion(
        method="calibrated", weight=0.8, tau=10.0, context=0.15, context_seconds=75.0, role_penalty=0.05,
    ),
    "minishlab/potion-base-8M": Fusion(method="rrf", weight=0.5, k=60.0, context=0.15, context_seconds=180.0, role_penalty=0.01),
}
DEFAULT_FUSION = FUSIONS["sentence-transformers/all-MiniLM-L6-v2"]


def fusion_for(model_name: str | None) -> Fusion:
    """The fusion tuned for the model whose index is searched."""
    return FUSIONS.get(model_name or "", DEFAULT_FUSION)


def distinct_memories(rows: list[dict]) -> list[dict]:
    """Chunk rows reduced to the best chunk of each memory, order kept."""
    best: dict[str, dict] = {}
    for row in rows:
        best.setdefault(row["memory_id"], row)
    return list(best.values())


def reciprocal_rank_fusion(*rankings: list[str], k: float = RRF_K, weights: tuple[float, ...] | None = None) -> list[tuple[str, float]]:
    """Ids ranked by the sum over rankings of weight / (k + rank); ties keep first-seen order."""
    weights = weights or (1.0,) * len(rankings)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, key in enumerate(ranking, 1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])


def cosine(row: dict) -> float:
    """The cosine similarity of a vector-ranking row (LanceDB's L2 distance of unit vectors)."""
    return 1.0 - row["_distance"] / 2.0


def _scaled(values: list[float], how: str) -> tuple[list[float], float]:
    """Scores scaled over one ranking's candidates, and the value a missing memory gets."""
    if not values:
        return [], 0.0
    if how == "minmax":
        low, high = min(values), max(values)
        return [(v - low) / (high - low) if high > low else 1.0 for v in values], 0.0
    if how == "zscore":
        mean = sum(values) / len(values)
        spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 or 1.0
        scaled = [(v - mean) / spread for v in values]
        return scaled, min(scaled)
    raise ValueError(f"unknown scaling {how!r}")


def fuse(vector_rows: list[dict], text_rows: list[dict], fusion: Fusion = DEFAULT_FUSION) -> list[tuple[dict, float]]:
    """The distinct-memory rows of both rankings, best first, scored by `fusion`.

    The row shown for a memory is the vector ranking's chunk when it has one."""
    rows = {row["memory_id"]: row for row in text_rows + vector_rows}  # the vector ranking's chunk wins
    vector_ids = [r["memory_id"] for r in vector_rows]
    text_ids = [r["memory_id"] for r in text_rows]
    w = fusion.weight
    if fusion.method == "rrf":
        scores = dict(reciprocal_rank_fusion(vector_ids, text_ids, k=fusion.k, weights=(w, 1.0 - w)))
    else:
        if fusion.method == "cosine":
            best = max((r["_score"] for r in text_rows), default=0.0) or 1.0
            vec, vec_missing = [cosine(r) for r in vector_rows], 0.0
            txt, txt_missing = [r["_score"] / best for r in text_rows], 0.0
        elif fusion.method == "calibrated":
            vec, vec_missing = [cosine(r) for r in vector_rows], 0.0
            txt, txt_missing = [r["_score"] / (r["_score"] + fusion.tau) for r in text_rows], 0.0
        elif fusion.method in ("minmax", "zscore"):
            vec, vec_missing = _scaled([cosine(r) for r in vector_rows], fusion.method)
            txt, txt_missing = _scaled([r["_score"] for r in text_rows], fusion.method)
        else:
            raise ValueError(f"unknown fusion method {fusion.method!r}")
        v_of, t_of = dict(zip(vector_ids, vec)), dict(zip(text_ids, txt))
        scores = {
            key: w * v_of.get(key, vec_missing) + (1.0 - w) * t_of.get(key, txt_missing) for key in rows
        }
    if fusion.context:
        scores = with_context(scores, rows, fusion.context, fusion.context_seconds)
    if fusion.role_penalty:
        scores = {key: score - fusion.role_penalty * (rows[key].get("role") in PENALIZED_ROLES) for key, score in scores.items()}
    order = {key: i for i, key in enumerate(dict.fromkeys(vector_ids + text_ids))}  # ties: first seen
    return [(rows[key], score) for key, score in sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))]


def with_context(scores: dict[str, float], rows: dict[str, dict], share: float, seconds: float) -> dict[str, float]:
    """Each memory's score plus `share` of the best score among the candidates of its session
    created within `seconds` of it (its neighbouring turns)."""
    by_session: dict[str, list[tuple[int, str]]] = {}
    for key in scores:
        row = rows[key]
        if row.get("session_id") is not None and row.get("created_at_us") is not None:
            by_session.setdefault(row["session_id"], []).append((row["created_at_us"], key))
    window = int(seconds * 1_000_000)
    out = dict(scores)
    for turns in by_session.values():
        if len(turns) < 2:
            continue
        for at, key in turns:
            near = [scores[other] for when, other in turns if other != key and abs(when - at) <= window]
            if near:
                out[key] = scores[key] + share * max(near)
    return out


def rank(mode: str, vector_rows: list[dict], text_rows: list[dict], fusion: Fusion = DEFAULT_FUSION) -> list[tuple[dict, float]]:
    """The ranked (row, score) pairs of a mode over distinct-memory rankings."""
    if mode == "vector":
        return [(row, cosine(row)) for row in vector_rows]
    if mode == "text":
        return [(row, row["_score"]) for row in text_rows]
    return fuse(vector_rows, text_rows, fusion)


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
    asked_at: str | None = None,
    understand: bool = True,
    fusion: Fusion | None = None,
) -> SearchResult:
    """The `k` best distinct memories of `user_id` for `query`, best first.

    `since`/`until` (ISO-8601) bound `created_at`, `until` exclusive. `mode` is "hybrid"
    (vector and full-text rankings fused, see `Fusion`), "vector" or "text". Scores are the
    cosine similarity for "vector", BM25 for "text" and the fused score for "hybrid".

    With `understand` (the default) the query is read first (`understand_query`): the
    scoped user's own name is dropped from it, and a time expression ("last week", "in May")
    narrows `created_at` to its window relative to `asked_at` (default: now), falling back
    to no narrowing when the window holds nothing."""
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
    asked_us = timestamp_micros(asked_at) if asked_at else None
    query = query[:MAX_QUERY_CHARS]
    plan = understand_query(query, user_id, asked_us) if understand else QueryPlan(query)
    base = scope_filter(user_id, agent_id, session_id, since_us, until_us)
    where = base
    if plan.since_us is not None:
        narrow_since = plan.since_us if since_us is None else max(since_us, plan.since_us)
        narrow_until = plan.until_us if until_us is None else min(until_us, plan.until_us)
        where = scope_filter(user_id, agent_id, session_id, narrow_since, narrow_until)
    model = query_embedder(embedder, lance)
    vector = model.embed([plan.text])[0] if mode != "text" else None
    fusion = fusion or fusion_for(model.model_name)
    # Several chunks of one memory may rank high, and older versions or expired memories are
    # left out: over-fetch so k distinct memories remain, and fetch more while some are missing.
    limit = k * 4
    while True:
        vector_rows, text_rows = lance.rankings(
            vector=vector, text=plan.text if mode != "vector" else None, where=where, limit=limit,
        )
        if where != base and not vector_rows and not text_rows:
            where = base  # the time window holds nothing: the expression was not about created_at
            continue
        full = max(len(vector_rows), len(text_rows)) >= limit
        result = _ranked(libsql, user_id, mode, vector_rows, text_rows, k, fusion)
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


def _ranked(libsql: SystemOfRecord, user_id: str, mode: str, vector_rows, text_rows, k: int, fusion: Fusion) -> SearchResult:
    """The hits of two rankings: their current memories ranked, the best `k`."""
    found = current_memories(libsql, user_id, vector_rows, text_rows)
    ranked = rank(mode, *found.rankings, fusion)[:k]
    return SearchResult(hits=[_hit(row, found.records[row["day"], row["memory_id"]], score) for row, score in ranked], dropped=found.missing)


@dataclass
class Current:
    rankings: list[list[dict]]  # each ranking's rows: distinct memories, current versions only
    records: dict[tuple[str, str], dict]  # their full rows by (day, memory_id)
    missing: int  # candidates the system of record does not hold (for this user)


def current_memories(libsql: SystemOfRecord, user_id: str, *rankings: list[dict]) -> Current:
    """The rankings' rows reduced to what search may show, with one query to the system of
    record for every candidate's row: old versions (marked `superseded` when a newer one was
    committed), expired memories and rows it does not hold are left out, then each memory's
    best chunk is kept."""
    from .lifecycle import now_us

    records = libsql.memories({(row["day"], row["memory_id"]) for rows in rankings for row in rows})
    now, missing = now_us(), set()

    def shown(row: dict) -> bool:
        key = row["day"], row["memory_id"]
        record = records.get(key)
        if record is None or record["user_id"] != user_id:
            missing.add(key)
            return False
        expires = record["expires_at_us"]
        return not record["superseded"] and (expires is None or expires > now)

    kept = [distinct_memories([row for row in rows if shown(row)]) for rows in rankings]
    return Current(kept, records, len(missing))


def _hit(row: dict, record: dict, score: float) -> Hit:
    """A hit: the memory's full row from the system of record, the chunk that matched."""
    return Hit(
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
