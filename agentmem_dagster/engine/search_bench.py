"""Search latency as the table grows: build a corpus in steps, keep its indexes current the
way the pipeline does, and time scoped searches in each mode at each size."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..demo import chat_turns, demo_questions
from .bench import bench_memories, machine
from .chunking import chunk_memories
from .embedding import Embedder
from .ingest import ingest
from .lance_store import LanceStore, scope_filter
from .libsql_store import LibsqlPool, LibsqlStore
from .search import MODES, search

SLICE_MEMORIES = 100_000  # one day of the corpus per slice: bounded memory while building


def _queries(n: int) -> list[str]:
    questions = [q["question"] for q in demo_questions()]
    return (questions + chat_turns(n, seed=4242))[:n]


def _grow(embedder: Embedder, lance: LanceStore, libsql: LibsqlStore, target_chunks: int, users: int, progress) -> int:
    """Add day-sized slices of chat turns until LanceDB holds at least `target_chunks` rows."""
    rows = lance.count()
    day = dt.date(2024, 1, 1) + dt.timedelta(days=len(libsql.days()))
    while rows < target_chunks:
        n = min(SLICE_MEMORIES, max(100, int((target_chunks - rows) / 1.1)))
        memories = bench_memories(n, seed=day.toordinal(), users=users, day=day.isoformat(), prefix=f"sb-{day}")
        chunks = chunk_memories(memories, embedder.tokenizer, embedder.max_tokens)
        ingest(memories, chunks=chunks, embedder=embedder, lance=lance, libsql=libsql, days=[day.isoformat()], use_cache=False)
        rows += chunks.num_rows
        progress(chunks.num_rows)
        day += dt.timedelta(days=1)
    return rows


def _latencies_ms(fn: Callable[[int], None], n: int) -> dict:
    fn(0)  # warm caches
    times = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2)}


def _vector_recall(embedder: Embedder, lance: LanceStore, queries: list[str], users: int, k: int = 10) -> float:
    """Share of the exact top-k chunks that the vector ranking of a search returns."""
    table = lance.table()
    found = total = 0
    for i, query in enumerate(queries):
        vector = embedder.embed([query])[0].astype(np.float32)
        where = scope_filter(f"user-{i % users}")
        approx = {row["chunk_id"] for row in lance.rankings(vector=vector, text=None, where=where, limit=k)[0]}
        exact = table.search(vector, vector_column_name="vector").where(where, prefilter=True).limit(k)
        exact = {row["chunk_id"] for row in exact.select(["chunk_id", "_distance"]).bypass_vector_index().to_list()}
        found += len(approx & exact)
        total += len(exact)
    return round(found / total, 3) if total else 1.0


def run_search_bench(
    embedder: Embedder,
    root: Path,
    sizes: list[int],
    *,
    users: int = 100,
    queries: int = 200,
    k: int = 10,
    progress_factory: Callable[[str, int], Callable[[float], None]] | None = None,
) -> dict:
    """Latency (p50, p99 in ms) of scoped searches per mode at each table size in `sizes`.

    The corpus lives in `root` and is reused: a later call with bigger sizes only adds rows."""
    progress_factory = progress_factory or (lambda name, total: (lambda n: None))
    lance = LanceStore(str(root / "lancedb"))
    libsql = LibsqlStore(LibsqlPool(str(root / "memories.db"), size=2))
    texts = _queries(queries)
    results = []
    try:
        for size in sorted(sizes):
            started = time.perf_counter()
            rows = _grow(embedder, lance, libsql, size, users, progress_factory(f"build {size:,} chunks", size))
            built = time.perf_counter() - started
            started = time.perf_counter()
            maintained = lance.maintain()
            entry = {
                "chunks": rows,
                "users": users,
                "build_s": round(built, 1),
                "maintain_s": round(time.perf_counter() - started, 1),
                "indexes": sorted(maintained["indexes"]),
                "vector_recall@10": _vector_recall(embedder, lance, texts[:50], users),
                "modes": {},
            }
            for mode in MODES:
                progress = progress_factory(f"{mode} search at {rows:,}", queries)

                def one(i: int, mode=mode, progress=progress) -> None:
                    search(embedder, lance, libsql, texts[i], user_id=f"user-{i % users}", k=k, mode=mode)
                    progress(1)

                entry["modes"][mode] = _latencies_ms(one, queries)
            results.append(entry)
    finally:
        libsql.pool.close()
    return {"model": embedder.model_name, "k": k, "queries": queries, "sizes": results, "machine": machine()}
