"""raw_memories and memory_chunks: landing files validated, then chunked to the model's window.
Both stream: each day is read and written batch by batch, never held whole."""

import time
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc

from ..engine.chunking import CHUNK_SCHEMA, chunk_memories
from ..engine.lifecycle import ingestion_filter
from ..engine.parquet import DayFiles, write_parquet
from ..engine.preflight import preflight
from ..engine.records import write_landing_day
from ..resources import EmbedderResource, LanceDBResource, LandingZone, LibSQLResource, Staging
from .metadata import peak_rss_mb, preview, with_chars
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
    context: dg.AssetExecutionContext,
    landing: LandingZone,
    embedder: EmbedderResource,
    lancedb: LanceDBResource,
    libsql: LibSQLResource,
    staging: Staging,
) -> dg.Output[DayFiles]:
    started = time.perf_counter()
    days = context.partition_keys
    memories = staging.day_files(context.asset_key, days)
    quarantine = []
    files = lines = duplicates = forgotten = 0
    tombstones = ingestion_filter(libsql.store)  # forgotten users' memories are skipped
    for day, path in memories.paths.items():
        landed = write_landing_day(landing.path, day, path, staging.batch_rows, tombstones)
        forgotten += landed.forgotten
        quarantine.extend(landed.quarantine)
        files += landed.files
        lines += landed.lines
        duplicates += landed.duplicates_replaced
        context.log.info(
            f"{day}: {memories.day(day).num_rows} memories from {landed.files} files, "
            f"{len(landed.quarantine)} quarantined"
        )
    # The first write to the stores: fail before it if the model or a store cannot serve the run.
    preflight(embedder.embedder, lancedb.store, libsql.store, memories=memories, staging=Path(staging.base_dir))
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
            "forgotten": forgotten,
            "files": files,
            "lines": lines,
            "seconds": round(seconds, 3),
            "days": len(days),
            "peak_rss_mb": peak_rss_mb(),
            "preview": dg.MetadataValue.md(preview(with_chars(memories.head(), "content"), ["memory_id", "user_id", "role", "chars"])),
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
    context: dg.AssetExecutionContext, raw_memories: DayFiles, embedder: EmbedderResource, staging: Staging
) -> dg.Output[DayFiles]:
    tokenizer = embedder.embedder.tokenizer  # loads the model, once per process: not part of the work timed
    started = time.perf_counter()
    chunks = staging.day_files(context.asset_key, context.partition_keys)
    for day, path in chunks.paths.items():
        write_parquet(path, CHUNK_SCHEMA, (
            chunk_memories(batch, tokenizer, embedder.max_tokens, embedder.chunk_overlap)
            for batch in raw_memories.day(day).batches()
        ))
    split = sum(
        pc.sum(pc.and_(pc.equal(b["chunk_index"], 0), pc.greater(b["chunk_count"], 1))).as_py() or 0
        for b in chunks.batches(columns=["chunk_index", "chunk_count"])
    )
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
            "preview": dg.MetadataValue.md(preview(with_chars(chunks.head(), "text"), ["chunk_id", "user_id", "chars"])),
        },
    )
