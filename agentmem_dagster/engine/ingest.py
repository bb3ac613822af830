"""Memories to both stores in one process: chunk, plan length-sorted batches, embed batch k+1
while batch k is written. Used by the bench's last rung and by library callers; the Dagster
ops use the same batching and writer, split over their steps."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .chunking import chunk_memories, with_vectors
from .embedding import Embedder, EmbeddingCache, embed_cached
from .lance_store import LanceStore
from .parquet import BATCH_ROWS, coalesce
from .preflight import preflight
from .record_store import SystemOfRecord
from .records import MEMORY_SCHEMA
from .writer import Batch, DayLease, FanOutWriter, LanceSink, LibsqlSink, WriteStats

# Chunks per write batch. LanceDB pays ~0.08 s per commit, so bigger batches write faster
# (1,024 rows: 11k rows/s; 4,096: 104k rows/s), while smaller ones let embedding overlap
# more of the writing; 2,048 measured best end to end (BENCHMARKS.md).
DEFAULT_BATCH_CHUNKS = 2048
# Writing vectors already computed (the bench's storage figure): nothing to overlap, go big.
STORE_BATCH_CHUNKS = 8192


@dataclass
class BatchPlan:
    index: int
    chunk_rows: np.ndarray  # rows of the chunk table in this batch
    memory_rows: np.ndarray  # rows of the memory table whose first chunk is in this batch


def plan_batches(memories: pa.Table, chunks: pa.Table, batch_chunks: int = DEFAULT_BATCH_CHUNKS) -> list[BatchPlan]:
    """Chunks sorted by text length and cut into batches, so that each embedding call pads
    texts of similar length; each memory row travels with the batch of its first chunk."""
    lengths = pc.utf8_length(chunks["text"]).to_numpy(zero_copy_only=False)
    order = np.argsort(lengths, kind="stable")
    # The chunks come in memory order, so the n-th first chunk is the n-th memory's (matching
    # by id would not do: one id may come on two days of a run, as two memories).
    is_first = chunks["chunk_index"].to_numpy(zero_copy_only=False) == 0
    if chunks["memory_id"].filter(pa.array(is_first)) != memories["memory_id"]:
        raise ValueError("the chunks are not those of the memories, in their order")
    memory_row = np.cumsum(is_first) - 1
    plans = []
    for index, start in enumerate(range(0, len(order), batch_chunks)):
        rows = order[start : start + batch_chunks]
        plans.append(BatchPlan(index, rows, memory_row[rows[is_first[rows]]]))
    return plans


def batches_from_embedded(memories: pa.Table, embedded: pa.Table, batch_chunks: int = DEFAULT_BATCH_CHUNKS) -> Iterator[Batch]:
    """Batches of chunks that already carry their vectors."""
    for plan in plan_batches(memories, embedded, batch_chunks):
        yield Batch(plan.index, memories.take(plan.memory_rows), embedded.take(plan.chunk_rows))


def batches_in_step(memories: Iterable[pa.Table], chunks: Iterable[pa.Table], min_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Batches of chunks (with their vectors) and their memories, read from two streams in the
    same memory order, as the staged days are: each memory goes with the batch of its first
    chunk; consecutive batches of fewer than `min_rows` chunks (small days) are joined. Holds
    about one batch of each."""
    memories = iter(memories)
    buffer = MEMORY_SCHEMA.empty_table()
    for index, batch in enumerate(coalesce(chunks, min_rows)):
        firsts = batch.filter(pc.equal(batch["chunk_index"], 0))["memory_id"]
        while buffer.num_rows < len(firsts) and (more := next(memories, None)) is not None:
            buffer = pa.concat_tables([buffer, more])
        head, buffer = buffer.slice(0, len(firsts)), buffer.slice(len(firsts))
        if head["memory_id"].to_pylist() != firsts.to_pylist():
            raise ValueError(f"memories and chunks are out of step in batch {index}: materialize the chunks again")
        yield Batch(index, head, batch)
    if buffer.num_rows or next(memories, None) is not None:
        raise ValueError("memories left without chunks: materialize the chunks again")


def chunked_and_embedded(
    batches: Iterable[pa.Table], embedder: Embedder, cache: EmbeddingCache | None, overlap: int = 32
) -> Iterator[tuple[pa.Table, int]]:
    """Each batch of memories as its chunks with their vectors (one table per batch, so the
    batches stay aligned down to the stores), and how many vectors came from the cache."""
    for batch in batches:
        chunks = chunk_memories(batch, embedder.tokenizer, embedder.max_tokens, overlap)
        vectors, hits = embed_cached(embedder, chunks["text"].to_pylist(), chunks["text_hash"].to_pylist(), cache)
        yield with_vectors(chunks, vectors), hits


def embedded_batches(
    memories: pa.Table,
    chunks: pa.Table,
    embedder: Embedder,
    *,
    batch_chunks: int = DEFAULT_BATCH_CHUNKS,
    cache: EmbeddingCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Batch]:
    """Batches embedded lazily: the writer pulls batch k+1 (embedding it) while k is written."""
    for plan in plan_batches(memories, chunks, batch_chunks):
        part = chunks.take(plan.chunk_rows)
        vectors, _ = embed_cached(embedder, part["text"].to_pylist(), part["text_hash"].to_pylist(), cache, progress)
        yield Batch(plan.index, memories.take(plan.memory_rows), with_vectors(part, vectors))


def ingest(
    memories: pa.Table,
    *,
    embedder: Embedder,
    lance: LanceStore,
    libsql: SystemOfRecord,
    days: Sequence[str],
    ingest_id: str | None = None,
    batch_chunks: int = DEFAULT_BATCH_CHUNKS,
    use_cache: bool = True,
    overlap: int = 32,
    chunks: pa.Table | None = None,
    progress: Callable[[int], None] | None = None,
) -> WriteStats:
    """Replace `days` in both stores with `memories` (chunked unless `chunks` are given,
    embedded, written concurrently)."""
    from .lifecycle import drop_forgotten, forgotten_mask, tombstone_scopes

    ingest_id = ingest_id or uuid.uuid4().hex
    tombstones = tombstone_scopes(libsql.tombstones())  # forgotten users' memories are skipped
    memories, _ = drop_forgotten(memories, tombstones)
    if chunks is not None and tombstones:
        chunks = chunks.filter(pa.array(~forgotten_mask(chunks, tombstones)))
    preflight(embedder, lance, libsql, memories=memories)
    if chunks is None:
        chunks = chunk_memories(memories, embedder.tokenizer, embedder.max_tokens, overlap)
    cache = EmbeddingCache(libsql, embedder.model_key) if use_cache else None
    writer = FanOutWriter(
        [LanceSink(lance, days, ingest_id), LibsqlSink(libsql, days, ingest_id)],
        lease=DayLease(libsql, days, ingest_id, holder=f"{ingest_id}:both"),
    )
    return writer.run(embedded_batches(memories, chunks, embedder, batch_chunks=batch_chunks, cache=cache, progress=progress))
