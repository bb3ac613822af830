"""raw_memories: the days' landing files validated, read and written batch by batch."""

import time

import dagster as dg

from ..engine.lifecycle import ingestion_filter
from ..engine.parquet import DayFiles
from ..engine.preflight import preflight
from ..engine.records import write_landing_day
from ..resources import EmbedderResource, LanceDBResource, LandingZone, LibSQLResource, Staging
from ..workers import worker_metadata
from .metadata import add_day_metadata, peak_rss_mb, preview, with_chars
from .partitions import memory_days, single_run_backfill


@dg.asset(
    partitions_def=memory_days,
    backfill_policy=single_run_backfill,
    group_name="memories",
    kinds={"python", "parquet"},
    description="The day's landing files parsed and validated; bad lines go to the LibSQL "
    "quarantine with their reason, duplicate memory_ids keep the last record, forgotten "
    "users' memories are skipped.",
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
    quarantine, by_day = [], {}
    tombstones = ingestion_filter(libsql.store)  # forgotten users' memories are skipped
    for day, path in memories.paths.items():
        landed = write_landing_day(landing.path, day, path, staging.batch_rows, tombstones)
        quarantine.extend(landed.quarantine)
        # previews show no memory text, so that Dagster's records hold none that `forget` must chase
        head = with_chars(memories.day(day).head(), "content")
        by_day[day] = {
            "dagster/row_count": memories.day(day).num_rows,
            "quarantined": len(landed.quarantine),
            "duplicates_replaced": landed.duplicates_replaced,
            "forgotten": landed.forgotten,
            "files": landed.files,
            "lines": landed.lines,
            "preview": dg.MetadataValue.md(preview(head, ["memory_id", "user_id", "role", "chars"])),
        }
    add_day_metadata(context, by_day)
    # The first write to the stores: fail before it if the model or a store cannot serve the run.
    preflight(embedder.embedder, lancedb.store, libsql.store, memories=memories, staging=staging.root)
    libsql.store.stage_quarantine(days, quarantine, context.run.run_id)  # the days get it when the run commits
    for record in quarantine[:20]:
        context.log.warning(f"quarantined {record.file}:{record.line}: {record.reason}")
    seconds = time.perf_counter() - started
    context.log.info(f"{memories.num_rows} memories from {len(days)} day(s), {len(quarantine)} lines quarantined")
    return dg.Output(memories, metadata={"seconds": round(seconds, 3), "days_in_run": len(days), "peak_rss_mb": peak_rss_mb(), **worker_metadata()})
