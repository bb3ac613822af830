"""memory_embeddings: a graph that fans the day's chunks out in shards, embeds each in
length-sorted batches, and gathers the vectors back into one table."""

import time

import dagster as dg
import numpy as np
import pyarrow as pa

from ..engine.chunking import with_vectors
from ..engine.embedding import EmbeddingCache, embed_cached
from ..resources import EmbedderResource, LibSQLResource
from .metadata import peak_rss_mb
from .partitions import daily_partitions, single_run_backfill


class ShardConfig(dg.Config):
    shard_size: int = 20_000  # chunks per embedding step; each shard runs in its own process


@dg.op(out=dg.DynamicOut(pa.Table), description="Split the chunks into shards of at most shard_size rows.")
def shard_chunks(context: dg.OpExecutionContext, config: ShardConfig, chunks: pa.Table):
    shards = max(1, -(-chunks.num_rows // config.shard_size))
    context.log.info(f"{chunks.num_rows} chunks in {shards} shard(s)")
    for index in range(shards):
        yield dg.DynamicOutput(
            chunks.slice(index * config.shard_size, config.shard_size), mapping_key=f"shard_{index}"
        )


@dg.op(description="Embed one shard with fastembed, in batches sorted by text length; text "
       "embedded before by the same model comes from the LibSQL embedding cache.")
def embed_shard(
    context: dg.OpExecutionContext, embedder: EmbedderResource, libsql: LibSQLResource, shard: pa.Table
) -> pa.Table:
    started = time.perf_counter()
    total = shard.num_rows
    done = 0
    last_report = started

    def progress(n: int) -> None:
        nonlocal done, last_report
        done += n
        if time.perf_counter() - last_report > 5 or done == total:
            last_report = time.perf_counter()
            context.log.info(f"embedded {done}/{total} chunks")

    if total:
        cache = EmbeddingCache(libsql.store, embedder.model)
        vectors, hits = embed_cached(
            embedder.embedder, shard["text"].to_pylist(), shard["text_hash"].to_pylist(), cache, progress
        )
    else:
        vectors, hits = np.zeros((0, embedder.embedder.dim), dtype=np.float32), 0
    seconds = time.perf_counter() - started
    context.log.info(f"shard of {total} chunks embedded in {seconds:.2f}s ({hits} from the cache)")
    # Time and cache hits travel with the table so that gather_shards can report the stage.
    return with_vectors(shard, vectors).replace_schema_metadata(
        {"embed_seconds": str(seconds), "cache_hits": str(hits), "peak_rss_mb": str(peak_rss_mb())}
    )


@dg.op(description="Concatenate the embedded shards and report throughput.")
def gather_shards(context: dg.OpExecutionContext, embedder: EmbedderResource, shards: list[pa.Table]):
    seconds = sum(float(shard.schema.metadata[b"embed_seconds"]) for shard in shards)
    hits = sum(int(shard.schema.metadata[b"cache_hits"]) for shard in shards)
    shard_rss = max(float(shard.schema.metadata[b"peak_rss_mb"]) for shard in shards)
    table = pa.concat_tables(shards).replace_schema_metadata(None)
    return dg.Output(
        table,
        metadata={
            "chunks": table.num_rows,
            "dim": table.schema.field("vector").type.list_size,
            "model": embedder.model,
            "shards": len(shards),
            "cache_hits": hits,
            "seconds": round(seconds, 3),
            "chunks_per_s": round(table.num_rows / seconds, 1) if seconds else 0.0,
            "peak_rss_mb": peak_rss_mb(),
            "shard_peak_rss_mb": shard_rss,
        },
    )


@dg.graph_asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run_backfill,
    group_name="memories",
    kinds={"fastembed", "parquet"},
    description="Each chunk with its vector, embedded with fastembed in batched ops.",
)
def memory_embeddings(memory_chunks: pa.Table) -> pa.Table:
    return gather_shards(shard_chunks(memory_chunks).map(embed_shard).collect())
