"""raw_memories and memory_chunks: landing files validated, then chunked to the model's window."""

import time

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.chunking import CHUNK_SCHEMA, chunk_memories
from ..engine.records import MEMORY_SCHEMA, read_landing_day
from ..resources import EmbedderResource, LandingZone, LibSQLResource
from .metadata import peak_rss_mb, preview
from .partitions import daily_partitions, single_run_backfill


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run_backfill,
    group_name="memories",
    kinds={"python", "parquet"},
    description="The day's landing files parsed and validated; bad lines go to the LibSQL "
    "quarantine with their reason, duplicate memory_ids keep the last record.",
)
def raw_memories(
    context: dg.AssetExecutionContext, landing: LandingZone, libsql: LibSQLResource
) -> dg.Output[pa.Table]:
    started = time.perf_counter()
    days = context.partition_keys
    tables, quarantine = [], []
    files = lines = duplicates = 0
    for day in days:
        landed = read_landing_day(landing.path, day)
        tables.append(landed.memories)
        quarantine.extend(landed.quarantine)
        files += landed.files
        lines += landed.lines
        duplicates += landed.duplicates_replaced
        context.log.info(
            f"{day}: {landed.memories.num_rows} memories from {landed.files} files, "
            f"{len(landed.quarantine)} quarantined"
        )
    memories = pa.concat_tables(tables) if tables else MEMORY_SCHEMA.empty_table()
    libsql.store.replace_quarantine(days, quarantine)
    for record in quarantine[:20]:
        context.log.warning(f"quarantined {record.file}:{record.line}: {record.reason}")
    seconds = time.perf_counter() - started
    return dg.Output(
        memories,
        metadata={
            "memories": memories.num_rows,
            "quarantined": len(quarantine),
            "duplicates_replaced": duplicates,
            "files": files,
            "lines": lines,
            "seconds": round(seconds, 3),
            "days": len(days),
            "peak_rss_mb": peak_rss_mb(),
            "preview": dg.MetadataValue.md(preview(memories, ["memory_id", "user_id", "role", "content"])),
        },
    )


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run_backfill,
    group_name="memories",
    kinds={"python", "parquet"},
    description="Memories split with the embedding model's own tokenizer so that no chunk is "
    "truncated by the model; chunk ids are `memory_id#n`, stable across runs.",
)
def memory_chunks(
    context: dg.AssetExecutionContext, raw_memories: pa.Table, embedder: EmbedderResource
) -> dg.Output[pa.Table]:
    started = time.perf_counter()
    if raw_memories.num_rows:
        chunks = chunk_memories(
            raw_memories, embedder.embedder.tokenizer, embedder.max_tokens, embedder.chunk_overlap
        )
    else:
        chunks = CHUNK_SCHEMA.empty_table()
    split = pc.count_distinct(chunks.filter(pc.greater(chunks["chunk_count"], 1))["memory_id"]).as_py()
    seconds = time.perf_counter() - started
    return dg.Output(
        chunks,
        metadata={
            "chunks": chunks.num_rows,
            "memories": raw_memories.num_rows,
            "memories_split": split,
            "max_tokens": embedder.max_tokens,
            "seconds": round(seconds, 3),
            "peak_rss_mb": peak_rss_mb(),
            "preview": dg.MetadataValue.md(preview(chunks, ["chunk_id", "user_id", "text"])),
        },
    )
