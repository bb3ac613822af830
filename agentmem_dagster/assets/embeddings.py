"""memory_embeddings: a graph that cuts the days' chunks into shards (a big day into several,
small days together), embeds each in its own step batch by batch (length-sorted within a
batch), and writes the vectors back into one file per day. No step holds more than a batch of
chunks and vectors."""

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from ..engine.chunking import embedded_schema, with_vectors
from ..engine.embedding import EmbeddingCache, embed_cached
from ..engine.parquet import DayFiles, Shard, ShardPart, read_batches, write_parquet
from ..resources import EmbedderResource, LibSQLResource, Staging
from .metadata import peak_rss_mb
from .partitions import daily_partitions, single_run_backfill


class ShardConfig(dg.Config):
    shard_size: int = 20_000  # chunks per embedding step; each shard runs in its own process


@dataclass(frozen=True)
class EmbeddedShard:
    """Where embed_shard wrote a shard's chunks with their vectors (a file per day it holds),
    and what it measured."""

    index: int
    files: tuple[tuple[str, Path], ...]  # (day, path)
    seconds: float
    cache_hits: int
    peak_rss_mb: float


@dg.op(out=dg.DynamicOut(Shard), description="Cut the days' chunks into shards of at most shard_size rows.")
def shard_chunks(context: dg.OpExecutionContext, config: ShardConfig, chunks: DayFiles):
    shards = chunks.shards(config.shard_size)
    if not shards:  # no chunks at all: one empty shard, so that the days still get their files
        day, path = next(iter(chunks.paths.items()))
        shards = [Shard(0, (ShardPart(day, path, (), 0),))]
    context.log.info(f"{chunks.num_rows} chunks in {len(shards)} shard(s)")
    for shard in shards:
        yield dg.DynamicOutput(shard, mapping_key=f"shard_{shard.index}")


@dg.op(description="Embed one shard with fastembed, batch by batch, each sorted by text length; "
       "text embedded before by the same model comes from the LibSQL embedding cache.")
def embed_shard(
    context: dg.OpExecutionContext, embedder: EmbedderResource, libsql: LibSQLResource, staging: Staging, shard: Shard
) -> EmbeddedShard:
    dim = embedder.embedder.dim  # loads the model, once per process: not part of the work timed
    started = last_report = time.perf_counter()
    cache = EmbeddingCache(libsql.store, embedder.embedder.model_key)  # name and weights
    done = hits = 0

    def embedded(part: ShardPart):
        nonlocal done, hits, last_report
        for batch in part.batches():
            vectors, cached = embed_cached(
                embedder.embedder, batch["text"].to_pylist(), batch["text_hash"].to_pylist(), cache
            )
            done, hits = done + batch.num_rows, hits + cached
            if time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                context.log.info(f"embedded {done}/{shard.rows} chunks")
            yield with_vectors(batch, vectors)

    files = []
    for part in shard.parts:
        path = staging.run_dir(context.run_id) / "embeddings" / f"{part.day}-{shard.index:05d}.parquet"
        write_parquet(path, embedded_schema(dim), embedded(part))
        files.append((part.day, path))
    seconds = time.perf_counter() - started
    context.log.info(
        f"shard of {shard.rows} chunks ({len(shard.parts)} day(s)) embedded in {seconds:.2f}s ({hits} from the cache)"
    )
    return EmbeddedShard(shard.index, tuple(files), seconds, hits, peak_rss_mb())


@dg.op(description="Write each day's embedded shards, in order, to the day's file; report throughput.")
def gather_shards(
    context: dg.OpExecutionContext, embedder: EmbedderResource, staging: Staging, shards: list[EmbeddedShard]
) -> dg.Output[DayFiles]:
    embeddings = staging.day_files(context.asset_key_for_output(), context.partition_keys)
    schema = pq.read_schema(shards[0].files[0][1])
    files = [file for shard in sorted(shards, key=lambda shard: shard.index) for file in shard.files]
    for day, path in embeddings.paths.items():
        parts = [part for part_day, part in files if part_day == day]
        write_parquet(path, schema, (batch for part in parts for batch in read_batches(part)))
    chunks = embeddings.num_rows
    seconds = sum(shard.seconds for shard in shards)
    return dg.Output(
        embeddings,
        metadata={
            "chunks": chunks,
            "dim": schema.field("vector").type.list_size,
            "model": embedder.model,
            "shards": len(shards),
            "cache_hits": sum(shard.cache_hits for shard in shards),
            "seconds": round(seconds, 3),
            "chunks_per_s": round(chunks / seconds, 1) if seconds else 0.0,
            "peak_rss_mb": peak_rss_mb(),
            "shard_peak_rss_mb": max(shard.peak_rss_mb for shard in shards),
        },
    )


@dg.graph_asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run_backfill,
    group_name="memories",
    kinds={"fastembed", "parquet"},
    description="Each chunk with its vector, embedded with fastembed in batched ops.",
)
def memory_embeddings(memory_chunks: DayFiles) -> DayFiles:
    return gather_shards(shard_chunks(memory_chunks).map(embed_shard).collect())
