"""memory_embeddings: a graph that cuts the days' memories into shards (a big day into several,
small days together), chunks and embeds each shard in its own step batch by batch (chunks cut
with the model's own tokenizer, length-sorted within a batch), and writes the chunks with their
vectors back into one file per day. No step holds more than a batch of chunks and vectors."""

import time
from collections import Counter
from dataclasses import dataclass

import dagster as dg

from ..engine.chunking import embedded_schema
from ..engine.embedding import EmbeddingCache
from ..engine.ingest import chunked_and_embedded
from ..engine.objstore import location
from ..engine.parquet import DayFiles, Shard, ShardPart, read_batches, read_metadata, read_schema, write_parquet
from ..resources import EmbedderResource, LibSQLResource, Staging
from ..workers import worker_metadata
from .metadata import add_day_metadata, peak_rss_mb, preview, with_chars
from .partitions import memory_days, single_run_backfill


class ShardConfig(dg.Config):
    shard_size: int = 20_000  # memories per embedding step; each shard runs in its own step


@dataclass(frozen=True)
class EmbeddedShard:
    """Where embed_shard wrote a shard's chunks with their vectors (a file per day it holds),
    and what it measured."""

    index: int
    files: tuple[tuple[str, str], ...]  # (day, path)
    seconds: float
    memories: int
    chunks: int
    memories_split: int
    cache_hits: int
    peak_rss_mb: float


@dg.op(out=dg.DynamicOut(Shard), description="Cut the days' memories into shards of at most shard_size rows.")
def shard_memories(context: dg.OpExecutionContext, config: ShardConfig, memories: DayFiles):
    shards = memories.shards(config.shard_size)
    if not shards:  # no memories at all: one empty shard, so that the days still get their files
        day, path = next(iter(memories.paths.items()))
        shards = [Shard(0, (ShardPart(day, path, (), 0),))]
    context.log.info(f"{memories.num_rows} memories in {len(shards)} shard(s)")
    for shard in shards:
        yield dg.DynamicOutput(shard, mapping_key=f"shard_{shard.index}", metadata=worker_metadata())


@dg.op(description="Chunk and embed one shard with fastembed, batch by batch, each sorted by text "
       "length; text embedded before by the same model comes from the LibSQL embedding cache.")
def embed_shard(
    context: dg.OpExecutionContext, embedder: EmbedderResource, libsql: LibSQLResource, staging: Staging, shard: Shard
) -> dg.Output[EmbeddedShard]:
    dim = embedder.embedder.dim  # loads the model, once per process: not part of the work timed
    started = last_report = time.perf_counter()
    cache = EmbeddingCache(libsql.store, embedder.embedder.model_key)  # name and weights
    counts = Counter()

    def embedded(part: ShardPart):
        nonlocal last_report
        for chunks, hits in chunked_and_embedded(part.batches(), embedder.embedder, cache, embedder.chunk_overlap):
            first = chunks["chunk_index"].to_numpy() == 0
            counts.update(
                memories=int(first.sum()), chunks=chunks.num_rows, cache_hits=hits,
                memories_split=int((first & (chunks["chunk_count"].to_numpy() > 1)).sum()),
            )
            if time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                context.log.info(f"embedded {counts['memories']}/{shard.rows} memories")
            yield chunks

    files = []
    for part in shard.parts:
        path = staging.run_dir(context.run_id) / "embeddings" / f"{part.day}-{shard.index:05d}.parquet"
        write_parquet(path, embedded_schema(dim), embedded(part))
        files.append((part.day, str(path)))
    seconds = time.perf_counter() - started
    context.log.info(
        f"shard of {shard.rows} memories ({len(shard.parts)} day(s)) chunked and embedded in {seconds:.2f}s "
        f"({counts['cache_hits']} of {counts['chunks']} chunks from the cache)"
    )
    return dg.Output(EmbeddedShard(shard.index, tuple(files), seconds, peak_rss_mb=peak_rss_mb(), **{
        key: counts[key] for key in ("memories", "chunks", "memories_split", "cache_hits")
    }), metadata=worker_metadata())


@dg.op(description="Write each day's embedded shards, in order, to the day's file; report throughput.")
def gather_shards(
    context: dg.OpExecutionContext, embedder: EmbedderResource, staging: Staging, shards: list[EmbeddedShard]
) -> dg.Output[DayFiles]:
    embeddings = staging.day_files(context.asset_key_for_output(), context.partition_keys)
    shards = sorted(shards, key=lambda shard: shard.index)
    schema = read_schema(location(shards[0].files[0][1]))
    files = [file for shard in shards for file in shard.files]
    by_day = {}
    for day, path in embeddings.paths.items():
        parts = [location(part) for part_day, part in files if part_day == day]
        if len(parts) == 1:  # the day fit in one shard (a range of small days): its file as it is
            path.parent.mkdir(parents=True, exist_ok=True)
            parts[0].replace(path)
            rows = read_metadata(path).num_rows
        else:
            rows = write_parquet(path, schema, (batch for part in parts for batch in read_batches(part)))
        by_day[day] = {
            "dagster/row_count": rows,
            "preview": dg.MetadataValue.md(preview(with_chars(embeddings.day(day).head(), "text"), ["chunk_id", "user_id", "chars"])),
        }
    add_day_metadata(context, by_day)
    seconds = sum(shard.seconds for shard in shards)
    total = {key: sum(getattr(shard, key) for shard in shards) for key in ("memories", "chunks", "memories_split", "cache_hits")}
    return dg.Output(
        embeddings,
        metadata={
            "run_chunks": total["chunks"],
            "run_memories_split": total["memories_split"],
            "run_cache_hits": total["cache_hits"],
            "dim": schema.field("vector").type.list_size,
            "model": embedder.model,
            "max_tokens": embedder.max_tokens,
            "shards": len(shards),
            "seconds": round(seconds, 3),
            "chunks_per_s": round(total["chunks"] / seconds, 1) if seconds else 0.0,
            "peak_rss_mb": peak_rss_mb(),
            "shard_peak_rss_mb": max(shard.peak_rss_mb for shard in shards),
            **worker_metadata(),
        },
    )


@dg.graph_asset(
    partitions_def=memory_days,
    backfill_policy=single_run_backfill,
    group_name="memories",
    kinds={"fastembed", "parquet"},
    description="Each memory cut into chunks that fit the model's window (chunk ids `memory_id#n`, "
    "stable across runs), each chunk with its vector, embedded with fastembed in batched ops.",
)
def memory_embeddings(raw_memories: DayFiles) -> DayFiles:
    return gather_shards(shard_memories(raw_memories).map(embed_shard).collect())
