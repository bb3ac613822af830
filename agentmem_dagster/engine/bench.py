"""The throughput ladder: the same memories and model through four ways of writing, in one
process, against fresh stores each time; plus the embed-only ceiling, the storage path alone,
and a cached re-ingest. Peak RSS is sampled while each rung runs."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from .chunking import chunk_memories, with_vectors
from .demo import chat_turns
from .embedding import Embedder
from .ingest import STORE_BATCH_CHUNKS, batches_from_embedded, ingest
from .lance_store import LanceStore
from .libsql_store import CHUNK_COLUMNS, MEMORY_COLUMNS, LibsqlPool, LibsqlStore, placeholders, row_tuples, transaction
from .records import MEMORY_SCHEMA
from .writer import FanOutWriter, LanceSink, LibsqlSink

DAY = "2024-06-01"


def bench_memories(n: int, seed: int = 7, *, users: int = 20, day: str = DAY, prefix: str = "bench") -> pa.Table:
    """`n` realistic chat turns as memory rows of one day, spread over `users` users."""
    texts = chat_turns(n, seed=seed)
    base_us = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    rows = {name: [] for name in MEMORY_SCHEMA.names}
    for i, text in enumerate(texts):
        rows["memory_id"].append(f"{prefix}-{i:07d}")
        rows["user_id"].append(f"user-{i % users}")
        rows["agent_id"].append("assistant")
        rows["session_id"].append(f"session-{i // 12}")
        rows["role"].append("user" if i % 2 == 0 else "assistant")
        rows["content"].append(text)
        us = base_us + i * 86_400_000_000 // max(n, 1)  # spread over the day
        rows["created_at"].append(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us / 1e6)) + ".000000Z")
        rows["created_at_us"].append(us)
        rows["metadata"].append("{}")
        rows["content_hash"].append(hashlib.sha256(text.encode()).hexdigest())
        rows["day"].append(day)
        rows["source_file"].append("bench.jsonl")
        rows["source_line"].append(i + 1)
    return pa.table(rows, schema=MEMORY_SCHEMA)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def peak_rss():
    """Samples this process's RSS every 10 ms; yields a dict that gets `peak_mb`."""
    result = {"peak_mb": _rss_mb()}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.01):
            result["peak_mb"] = max(result["peak_mb"], _rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["peak_mb"] = max(result["peak_mb"], _rss_mb())


@dataclass
class Stores:
    lance: LanceStore
    libsql: LibsqlStore
    path: Path

    def discard(self):
        """Close and delete them. The per-record rung leaves 1.3 GB of LanceDB manifests (one
        per commit, each listing every fragment so far); while those were on disk, the stores
        of later measurements ran at 60% of their speed (why is not known; BENCHMARKS.md)."""
        self.libsql.pool.close()
        shutil.rmtree(self.path, ignore_errors=True)


def fresh_stores(root: Path, pool_size: int = 4) -> Stores:
    path = root / uuid.uuid4().hex[:8]
    return Stores(LanceStore(str(path / "lance")), LibsqlStore(LibsqlPool(str(path / "m.db"), size=pool_size)), path)


def _chunks_by_memory(chunks: pa.Table) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for i, memory_id in enumerate(chunks["memory_id"].to_pylist()):
        rows.setdefault(memory_id, []).append(i)
    return rows


def _insert_one_by_one(conn, memories: pa.Table, chunks: pa.Table, ingest_id: str):
    """Row by row; outside a transaction each statement commits on its own."""
    mem_sql = f"INSERT OR REPLACE INTO memories ({', '.join(MEMORY_COLUMNS)}) VALUES ({placeholders(len(MEMORY_COLUMNS))})"
    chunk_sql = f"INSERT OR REPLACE INTO chunks ({', '.join(CHUNK_COLUMNS)}) VALUES ({placeholders(len(CHUNK_COLUMNS))})"
    for row in row_tuples(memories, MEMORY_COLUMNS, ingest_id):
        conn.execute(mem_sql, row)
    for row in row_tuples(chunks, CHUNK_COLUMNS, ingest_id):
        conn.execute(chunk_sql, row)


def rung_per_record(memories, chunks, embedder, stores, progress, batch_size):
    """1. embed one memory, insert its vectors, insert its rows, commit; repeat."""
    by_memory = _chunks_by_memory(chunks)
    with stores.libsql.pool.connection() as conn:
        for i, memory_id in enumerate(memories["memory_id"].to_pylist()):
            part = chunks.take(by_memory[memory_id])
            vectors = np.stack([embedder.embed([t])[0] for t in part["text"].to_pylist()])
            stores.lance.write(with_vectors(part, vectors), "bench")
            with transaction(conn):
                _insert_one_by_one(conn, memories.slice(i, 1), part, "bench")
            progress(1)


def _fixed_batches(memories, chunks, batch_size):
    """Batches of `batch_size` memories in input order (no length sorting)."""
    by_memory = _chunks_by_memory(chunks)
    ids = memories["memory_id"].to_pylist()
    for start in range(0, len(ids), batch_size):
        rows = [r for mid in ids[start : start + batch_size] for r in by_memory[mid]]
        yield memories.slice(start, batch_size), chunks.take(rows)


def rung_batched_vectors(memories, chunks, embedder, stores, progress, batch_size, one_transaction=False):
    """2. batched embedding + one LanceDB insert per batch; rows still one by one.
    3. (one_transaction) the same, with one LibSQL transaction per batch."""
    with stores.libsql.pool.connection() as conn:
        for mems, part in _fixed_batches(memories, chunks, batch_size):
            texts = part["text"].to_pylist()  # one model call per batch, in input order
            vectors = np.asarray(list(embedder.model.embed(texts, batch_size=len(texts))), dtype=np.float32)
            stores.lance.write(with_vectors(part, vectors), "bench")
            if one_transaction:
                with transaction(conn):
                    _insert_one_by_one(conn, mems, part, "bench")
            else:
                _insert_one_by_one(conn, mems, part, "bench")
            progress(mems.num_rows)


def rung_pipelined(memories, chunks, embedder, stores, progress, batch_size):
    """4. length-sorted batches, embedding of batch k+1 overlapping the concurrent LanceDB and
    LibSQL writes of batch k, pooled connections, multi-row inserts in one transaction."""
    per_memory = memories.num_rows / max(1, chunks.num_rows)
    ingest(
        memories, embedder=embedder, lance=stores.lance, libsql=stores.libsql, days=[DAY],
        use_cache=False, chunks=chunks, progress=lambda n: progress(n * per_memory),
    )


RUNGS: list[tuple[str, Callable]] = [
    ("per-record", rung_per_record),
    ("batched embedding + batched vector insert", rung_batched_vectors),
    ("+ one LibSQL transaction per batch", lambda *a: rung_batched_vectors(*a, one_transaction=True)),
    ("+ concurrent stores, pooled connections, pipelined batches", rung_pipelined),
]


def embed_ceiling(chunks: pa.Table, embedder: Embedder) -> float:
    """Seconds to embed the chunk texts through the model alone, best batching."""
    texts = chunks["text"].to_pylist()
    started = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - started


# The storage figure's sample: enough memories for several writer batches of STORE_BATCH_CHUNKS
# (24,261 chunk rows: three batches), so that the fixed costs of a run (creating the LanceDB
# table, the first commit, the WAL checkpoints) weigh what they weigh in a day's ingestion.
STORAGE_MEMORIES = 20_000
STORAGE_RUNS = 5


def storage_only(chunks: pa.Table, memories: pa.Table, dim: int, root: Path) -> float:
    """Chunk rows/s into both stores together, vectors given (random unit vectors), through
    the writer the Dagster writer ops use, in their batch size, into fresh stores."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((chunks.num_rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    embedded = with_vectors(chunks, vectors)
    ingest_id = uuid.uuid4().hex  # as long as a real run's: the LibSQL keys include it
    stores = fresh_stores(root)
    try:
        started = time.perf_counter()
        FanOutWriter([LanceSink(stores.lance, [DAY], ingest_id), LibsqlSink(stores.libsql, [DAY], ingest_id)]).run(
            batches_from_embedded(memories, embedded, STORE_BATCH_CHUNKS)
        )
        return chunks.num_rows / (time.perf_counter() - started)
    finally:
        stores.discard()


def storage_figures(chunks: pa.Table, memories: pa.Table, embedder: Embedder, dim: int, root: Path) -> dict:
    """The storage path alone, medians of STORAGE_RUNS runs: on STORAGE_MEMORIES memories (the
    figure), and on the ladder's own memories (one batch when they are few, as before)."""
    sample = bench_memories(STORAGE_MEMORIES, seed=11, prefix="storage")
    sample_chunks = chunk_memories(sample, embedder.tokenizer, embedder.max_tokens)

    def median(c: pa.Table, m: pa.Table) -> float:
        return float(np.median([storage_only(c, m, dim, root) for _ in range(STORAGE_RUNS)]))

    return {
        "storage_rows_per_s": round(median(sample_chunks, sample), 1),
        "storage": {
            "memories": sample.num_rows, "chunk_rows": sample_chunks.num_rows,
            "batch_chunks": STORE_BATCH_CHUNKS, "runs": STORAGE_RUNS,
            "ladder_chunk_rows": chunks.num_rows, "ladder_rows_per_s": round(median(chunks, memories), 1),
        },
    }


def cached_reingest(memories: pa.Table, embedder: Embedder, root: Path) -> dict:
    """The same memories ingested twice into the same stores: cold, then with a warm cache."""
    stores = fresh_stores(root)
    try:
        times = []
        for _ in range(2):
            started = time.perf_counter()
            ingest(memories, embedder=embedder, lance=stores.lance, libsql=stores.libsql, days=[DAY])
            times.append(time.perf_counter() - started)
        return {"first_s": round(times[0], 3), "again_s": round(times[1], 3), "speedup": round(times[0] / times[1], 1)}
    finally:
        stores.discard()


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform()}


def run_ladder(
    embedder: Embedder,
    n_memories: int = 2000,
    batch_size: int = 64,
    progress_factory: Callable[[str, int], Callable[[float], None]] | None = None,
    extras: bool = True,
) -> dict:
    progress_factory = progress_factory or (lambda name, total: (lambda n: None))
    memories = bench_memories(n_memories)
    embedder.embed(["warm up the model", "and its tokenizer"])
    chunks = chunk_memories(memories, embedder.tokenizer, embedder.max_tokens)
    rungs = []
    with tempfile.TemporaryDirectory(prefix="agentmem-bench-") as tmp:
        root = Path(tmp)
        for name, rung in RUNGS:
            stores = fresh_stores(root)
            progress = progress_factory(name, n_memories)
            try:
                with peak_rss() as rss:
                    started = time.perf_counter()
                    rung(memories, chunks, embedder, stores, progress, batch_size)
                    seconds = time.perf_counter() - started
                assert sorted(stores.lance.chunk_ids([DAY])) == sorted(stores.libsql.chunk_ids([DAY]))
            finally:
                stores.discard()
            rungs.append({
                "name": name, "memories_per_s": round(n_memories / seconds, 1),
                "seconds": round(seconds, 3), "peak_rss_mb": round(rss["peak_mb"], 1),
            })
        ceiling_s = embed_ceiling(chunks, embedder)
        doc = {
            "model": embedder.model_name,
            "memories": n_memories,
            "chunks": chunks.num_rows,
            "batch_size": batch_size,
            "rungs": rungs,
            "ceiling_per_s": round(n_memories / ceiling_s, 1),
            "speedup": round(rungs[-1]["memories_per_s"] / rungs[0]["memories_per_s"], 2),
            "share_of_ceiling": round(rungs[-1]["memories_per_s"] * ceiling_s / n_memories, 3),
            "machine": machine(),
        }
        if extras:
            dim = embedder.embed(["x"]).shape[1]
            doc.update(storage_figures(chunks, memories, embedder, dim, root))
            doc["cached_reingest"] = cached_reingest(memories, embedder, root)
    return doc
