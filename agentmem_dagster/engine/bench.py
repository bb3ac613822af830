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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..demo import chat_turns
from .chunking import chunk_memories, with_vectors
from .embedding import Embedder
from .ingest import STORE_BATCH_CHUNKS, batches_from_embedded, ingest
from .lance_store import LanceStore
from .libsql_store import CHUNK_COLUMNS, MEMORY_COLUMNS, LibsqlPool, LibsqlStore, placeholders, row_tuples, transaction
from .records import MEMORY_SCHEMA
from .writer import FanOutWriter, LanceSink, LibsqlSink

DAY = "2024-06-01"


def bench_memories(n: int, seed: int = 7, *, users: int = 20, day: str = DAY, prefix: str = "bench") -> pa.Table:
    """`n` realistic chat turns as memory rows of one day, spread over `users` users. Their ids
    are hashes, in no order, as the ids of real memories are (UUIDs, or ids derived from content)."""
    texts = chat_turns(n, seed=seed)
    base_us = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()) * 1_000_000
    rows = {name: [] for name in MEMORY_SCHEMA.names}
    for i, text in enumerate(texts):
        rows["memory_id"].append(_hashed_id(f"{prefix}-{i:07d}"))
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
        rows["expires_at_us"].append(None)
    return pa.table(rows, schema=MEMORY_SCHEMA)


def _hashed_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _with_columns(table: pa.Table, columns: dict[str, list]) -> pa.Table:
    for name, values in columns.items():
        field = table.schema.field(name)
        table = table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))
    return table


def as_day(memories: pa.Table, chunks: pa.Table, day: str) -> tuple[pa.Table, pa.Table]:
    """The same memories and chunks as another day's: that day, and ids of their own."""
    ids = [_hashed_id(f"{day}:{m}") for m in memories["memory_id"].to_pylist()]
    renamed = dict(zip(memories["memory_id"].to_pylist(), ids))
    owners = [renamed[m] for m in chunks["memory_id"].to_pylist()]
    return (
        _with_columns(memories, {"memory_id": ids, "day": [day] * memories.num_rows}),
        _with_columns(chunks, {
            "chunk_id": [f"{m}#{i}" for m, i in zip(owners, chunks["chunk_index"].to_pylist())],
            "memory_id": owners,
            "day": [day] * chunks.num_rows,
        }),
    )


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


def _write_given_vectors(chunks: pa.Table, memories: pa.Table, dim: int, stores: Stores, day: str) -> float:
    """Chunk rows/s of one day into both stores together, vectors given (random unit vectors),
    through the writer the Dagster writer ops use, in their batch size."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((chunks.num_rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    embedded = with_vectors(chunks, vectors)
    ingest_id = uuid.uuid4().hex  # as long as a real run's: the LibSQL keys include it
    started = time.perf_counter()
    FanOutWriter([LanceSink(stores.lance, [day], ingest_id), LibsqlSink(stores.libsql, [day], ingest_id)]).run(
        batches_from_embedded(memories, embedded, STORE_BATCH_CHUNKS)
    )
    return chunks.num_rows / (time.perf_counter() - started)


def storage_only(chunks: pa.Table, memories: pa.Table, dim: int, root: Path) -> float:
    """Chunk rows/s of the storage path alone, into fresh stores."""
    stores = fresh_stores(root)
    try:
        return _write_given_vectors(chunks, memories, dim, stores, DAY)
    finally:
        stores.discard()


# Days written one after another into the same stores, the way daily ingestion fills them.
HISTORY_DAYS = 10


def storage_by_day(chunks: pa.Table, memories: pa.Table, dim: int, root: Path) -> list[float]:
    """Chunk rows/s of each of HISTORY_DAYS days (the same memories under each day's own ids)
    written into stores that hold the days before it: does the storage path slow down as
    the stores fill?"""
    first = dt.date.fromisoformat(DAY)
    stores = fresh_stores(root)
    try:
        rates = []
        for n in range(HISTORY_DAYS):
            day = (first + dt.timedelta(days=n)).isoformat()
            day_memories, day_chunks = as_day(memories, chunks, day)
            rates.append(_write_given_vectors(day_chunks, day_memories, dim, stores, day))
            assert sorted(stores.lance.chunk_ids([day])) == sorted(stores.libsql.chunk_ids([day]))
            assert len(stores.libsql.chunk_ids([day])) == chunks.num_rows
        return rates
    finally:
        stores.discard()


def storage_figures(chunks: pa.Table, memories: pa.Table, embedder: Embedder, dim: int, root: Path) -> dict:
    """The storage path alone, medians of STORAGE_RUNS runs: on STORAGE_MEMORIES memories (the
    figure), and on the ladder's own memories (one batch when they are few, as before); then
    day after day into the same stores."""
    sample = bench_memories(STORAGE_MEMORIES, seed=11, prefix="storage")
    sample_chunks = chunk_memories(sample, embedder.tokenizer, embedder.max_tokens)

    def median(c: pa.Table, m: pa.Table) -> float:
        return float(np.median([storage_only(c, m, dim, root) for _ in range(STORAGE_RUNS)]))

    by_day = storage_by_day(sample_chunks, sample, dim, root)
    return {
        "storage_rows_per_s": round(median(sample_chunks, sample), 1),
        "storage": {
            "memories": sample.num_rows, "chunk_rows": sample_chunks.num_rows,
            "batch_chunks": STORE_BATCH_CHUNKS, "runs": STORAGE_RUNS,
            "ladder_chunk_rows": chunks.num_rows, "ladder_rows_per_s": round(median(chunks, memories), 1),
            "by_day_rows_per_s": [round(rate, 1) for rate in by_day],
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
