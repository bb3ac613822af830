"""The store graph: the same embedded chunks written to LanceDB and LibSQL by two ops that
run concurrently under the multiprocess executor. Each replaces exactly its run's days."""

import time

import dagster as dg
import pyarrow as pa

from ..resources import LanceDBResource, LibSQLResource
from .partitions import daily_partitions, single_run_backfill


def _throughput(context: dg.OpExecutionContext, rows: int, memories: int, started: float) -> dict:
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "memories": memories,
        "days": len(context.partition_keys),
        "seconds": round(seconds, 3),
        "memories_per_s": round(memories / seconds, 1) if seconds else 0.0,
    }


@dg.op(out=dg.Out(dg.Nothing), description="Replace the run's days in the LanceDB chunk table.")
def write_lancedb(context: dg.OpExecutionContext, lancedb: LanceDBResource, embeddings: pa.Table):
    started = time.perf_counter()
    rows = lancedb.store.replace_days(context.partition_keys, embeddings)
    memories = len(set(embeddings.column("memory_id").to_pylist()))
    context.log.info(f"LanceDB: {rows} chunk rows for {len(context.partition_keys)} day(s)")
    context.add_output_metadata(_throughput(context, rows, memories, started))


@dg.op(out=dg.Out(dg.Nothing), description="Replace the run's days of memories and chunks in LibSQL, in one transaction.")
def write_libsql(
    context: dg.OpExecutionContext, libsql: LibSQLResource, memories: pa.Table, embeddings: pa.Table
):
    started = time.perf_counter()
    rows = libsql.store.replace_days(context.partition_keys, memories, embeddings.drop_columns(["vector"]))
    context.log.info(f"LibSQL: {memories.num_rows} memories, {rows} chunk rows")
    context.add_output_metadata(_throughput(context, rows, memories.num_rows, started))


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
def memory_stores(raw_memories: pa.Table, memory_embeddings: pa.Table):
    return {
        "lancedb_memories": write_lancedb(memory_embeddings),
        "libsql_memories": write_libsql(raw_memories, memory_embeddings),
    }
