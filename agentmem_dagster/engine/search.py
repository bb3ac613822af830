"""Retrieval: vector search scoped to one user, distinct memories, hydrated from LibSQL."""

from __future__ import annotations

from dataclasses import dataclass

from .embedding import Embedder
from .lance_store import LanceStore, scope_filter
from .libsql_store import LibsqlStore

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


def search(
    embedder: Embedder,
    lance: LanceStore,
    libsql: LibsqlStore,
    query: str,
    *,
    user_id: str,
    agent_id: str | None = None,
    session_id: str | None = None,
    k: int = 10,
) -> SearchResult:
    """The `k` best distinct memories of `user_id` for `query`, best first."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id is required")
    if not query or not query.strip():
        raise ValueError("query must not be empty")
    if not 1 <= k <= 1000:
        raise ValueError("k must be between 1 and 1000")
    where = scope_filter(user_id, agent_id, session_id)
    vector = embedder.embed([query[:MAX_QUERY_CHARS]])[0]
    # Several chunks of one memory may rank high: over-fetch so k distinct memories remain.
    rows = lance.search(vector, where=where, limit=k * 4)
    best: dict[str, dict] = {}
    for row in rows:
        best.setdefault(row["memory_id"], row)
    records = libsql.memories_by_id(list(best))
    hits, dropped = [], 0
    for memory_id, row in best.items():
        record = records.get(memory_id)
        if record is None or record["user_id"] != user_id:
            dropped += 1
            continue
        hits.append(
            Hit(
                memory_id=memory_id,
                chunk_id=row["chunk_id"],
                user_id=record["user_id"],
                agent_id=record["agent_id"],
                session_id=record["session_id"],
                role=record["role"],
                content=record["content"],
                chunk_text=row["text"],
                created_at=record["created_at"],
                metadata=record["metadata"],
                score=float(1.0 - row["_distance"] / 2.0),
            )
        )
    return SearchResult(hits=hits[:k], dropped=dropped)
