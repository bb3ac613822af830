"""The store graph: the same embedded chunks written to LanceDB and LibSQL by two ops that
run concurrently under the multiprocess executor. Each replaces exactly its run's days,
reading the staged days batch by batch."""

import dagster as dg

from ..engine.ingest import batches_in_step
from ..engine.parquet import DayFiles
from ..engine.writer import DayLease, FanOutWriter, LanceSink, LibsqlSink, Sink
from ..resources import LanceDBResource, LibSQLResource
from .metadata import peak_rss_mb
from .partitions import daily_partitions, single_run_backfill


def _write(
    context: dg.OpExecutionContext, sink: Sink, libsql: LibSQLResource, memories: DayFiles, embeddings: DayFiles
) -> None:
    """Stream the run's batches to one store with the engine's writer; the run id stamps the
    rows, so the days' rows from earlier runs are dropped once every batch is in. A lease on
    the days makes another run of the same days wait for this one."""
    total = embeddings.num_rows
    days = context.partition_keys
    lease = DayLease(libsql.store, days, context.run_id, f"{context.run_id}:{sink.name}", on_wait=context.log.info)

    def on_batch(batch) -> None:
        context.log.debug(f"{sink.name}: batch {batch.index} written ({batch.chunks.num_rows} chunks)")

    writer = FanOutWriter([sink], on_batch=on_batch, on_retry=context.log.warning, lease=lease)
    stats = writer.run(batches_in_step(memories.batches(), embeddings.batches()))
    context.log.info(f"{sink.name}: {total} chunk rows in {stats.batches} batches, {stats.seconds:.2f}s")
    context.add_output_metadata(
        {
            "chunks": stats.chunks,
            "memories": memories.num_rows,
            "batches": stats.batches,
            "retries": stats.retries,
            "days": len(context.partition_keys),
            "seconds": round(stats.seconds, 3),
            "memories_per_s": round(memories.num_rows / stats.seconds, 1) if stats.seconds else 0.0,
            "peak_rss_mb": peak_rss_mb(),
        }
    )


@dg.op(out=dg.Out(dg.Nothing), description="Write the run's days to the LanceDB chunk table, batch by batch.")
def write_lancedb(
    context: dg.OpExecutionContext,
    lancedb: LanceDBResource,
    libsql: LibSQLResource,
    memories: DayFiles,
    embeddings: DayFiles,
):
    _write(context, LanceSink(lancedb.store, context.partition_keys, context.run_id), libsql, memories, embeddings)


@dg.op(out=dg.Out(dg.Nothing), description="Write the run's days of memories and chunks to LibSQL, one transaction per batch.")
def write_libsql(
    context: dg.OpExecutionContext, libsql: LibSQLResource, memories: DayFiles, embeddings: DayFiles
):
    _write(context, LibsqlSink(libsql.store, context.partition_keys, context.run_id), libsql, memories, embeddings)


@dg.graph_multi_asset(
    outs={
        "lancedb_memories": dg.AssetOut(
            kinds={"lancedb"}, description="One row per chunk with its vector, for search."
        ),
        "libsql_memories": dg.AssetOut(
            kinds={"libsql"}, description="The full memory and chunk rows: the system of record."
        ),
    },
    partitions_def=daily_partitions,
    backfill_policy=single_run_backfill,
    group_name="memories",
)
def memory_stores(raw_memories: DayFiles, memory_embeddings: DayFiles):
    return {
        "lancedb_memories": write_lancedb(raw_memories, memory_embeddings),
        "libsql_memories": write_libsql(raw_memories, memory_embeddings),
    }
