"""The store graph: the same embedded chunks written to LanceDB and LibSQL by two ops that
run concurrently under the multiprocess executor, each reading the staged days batch by
batch; then one op that commits both, so that the days' earlier rows go only once both
stores hold the new ones. If either writer fails, the run's rows come out of both stores."""

import dagster as dg

from ..engine.ingest import batches_in_step
from ..engine.parquet import DayFiles
from ..engine.writer import DayLease, FanOutWriter, LanceSink, LibsqlSink, Sink, write_one_store
from ..resources import LanceDBResource, LibSQLResource, Staging
from ..workers import worker_metadata
from .metadata import add_day_metadata, peak_rss_mb
from .partitions import memory_days, single_run_backfill


def _run_sinks(
    context: dg.OpExecutionContext, lancedb: LanceDBResource, libsql: LibSQLResource
) -> tuple[LanceSink, LibsqlSink]:
    """Both stores' sinks for this run's days, stamped with the run id."""
    days, run = context.partition_keys, context.run_id
    return LanceSink(lancedb.store, days, run), LibsqlSink(libsql.store, days, run)


def _write(
    context: dg.OpExecutionContext, sink: Sink, partner: Sink, libsql: LibSQLResource, staging: Staging,
    memories: DayFiles, embeddings: DayFiles,
) -> dict:
    """Stream the run's batches to one store with the engine's writer, uncommitted. A lease
    on the days makes another run of the same days wait for this one."""
    days, run = context.partition_keys, context.run_id
    lease = DayLease(libsql.store, days, run, f"{run}:{sink.name}", on_wait=context.log.warning)

    stats = write_one_store(
        sink, [sink, partner], batches_in_step(memories.batches(), embeddings.batches(), staging.batch_rows),
        libsql=libsql.store, ingest_id=run, lease=lease, on_retry=context.log.warning,
    )
    context.log.info(f"{sink.name}: {stats.chunks} chunk rows in {stats.batches} batches, {stats.seconds:.2f}s")
    # A day's rows in this store: its chunks in LanceDB, its memories in LibSQL (their chunks too).
    rows = embeddings if isinstance(sink, LanceSink) else memories
    return {
        "replaces": sink.replaces,
        "day_rows": {day: rows.day(day).num_rows for day in days},
        "metadata": {
            "chunks": stats.chunks,
            "memories": memories.num_rows,
            "batches": stats.batches,
            "retries": stats.retries,
            "days": len(days),
            "seconds": round(stats.seconds, 3),
            "memories_per_s": round(memories.num_rows / stats.seconds, 1) if stats.seconds else 0.0,
            "peak_rss_mb": peak_rss_mb(),
        },
    }


@dg.op(description="Write the run's days to the LanceDB chunk table, batch by batch (uncommitted).")
def write_lancedb(
    context: dg.OpExecutionContext,
    lancedb: LanceDBResource,
    libsql: LibSQLResource,
    staging: Staging,
    memories: DayFiles,
    embeddings: DayFiles,
) -> dg.Output[dict]:
    lance_sink, libsql_sink = _run_sinks(context, lancedb, libsql)
    return dg.Output(_write(context, lance_sink, libsql_sink, libsql, staging, memories, embeddings), metadata=worker_metadata())


@dg.op(description="Write the run's days of memories and chunks to LibSQL, one transaction per batch (uncommitted).")
def write_libsql(
    context: dg.OpExecutionContext,
    lancedb: LanceDBResource,
    libsql: LibSQLResource,
    staging: Staging,
    memories: DayFiles,
    embeddings: DayFiles,
) -> dg.Output[dict]:
    lance_sink, libsql_sink = _run_sinks(context, lancedb, libsql)
    return dg.Output(_write(context, libsql_sink, lance_sink, libsql, staging, memories, embeddings), metadata=worker_metadata())


@dg.op(
    out={"lancedb_memories": dg.Out(dg.Nothing), "libsql_memories": dg.Out(dg.Nothing)},
    description="Both stores hold the run's rows: drop the rows earlier runs wrote for these days.",
)
def commit_days(
    context: dg.OpExecutionContext,
    lancedb: LanceDBResource,
    libsql: LibSQLResource,
    lancedb_written: dict,
    libsql_written: dict,
):
    lance_sink, libsql_sink = _run_sinks(context, lancedb, libsql)
    lance_sink.replaces, libsql_sink.replaces = lancedb_written["replaces"], libsql_written["replaces"]
    FanOutWriter([lance_sink, libsql_sink], on_retry=context.log.warning).commit()
    for output, written in (("lancedb_memories", lancedb_written), ("libsql_memories", libsql_written)):
        add_day_metadata(context, {day: {"dagster/row_count": n} for day, n in written["day_rows"].items()}, output)
        yield dg.Output(None, output, metadata={**written["metadata"], "replaced_runs": len(written["replaces"]), **worker_metadata()})


@dg.graph_multi_asset(
    outs={
        "lancedb_memories": dg.AssetOut(
            kinds={"lancedb"}, description="One row per chunk with its vector, for search."
        ),
        "libsql_memories": dg.AssetOut(
            kinds={"libsql"}, description="The full memory and chunk rows: the system of record."
        ),
    },
    partitions_def=memory_days,
    backfill_policy=single_run_backfill,
    group_name="memories",
)
def memory_stores(raw_memories: DayFiles, memory_embeddings: DayFiles):
    lancedb_memories, libsql_memories = commit_days(
        write_lancedb(raw_memories, memory_embeddings), write_libsql(raw_memories, memory_embeddings)
    )
    return {"lancedb_memories": lancedb_memories, "libsql_memories": libsql_memories}
