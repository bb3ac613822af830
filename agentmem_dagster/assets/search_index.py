"""search_index: LanceDB's indexes kept current after a run's rows are written. It is one
asset for the whole table, not one per day: a run over 200 days optimizes the table once."""

import time

import dagster as dg

from ..engine.lifecycle import finish_migration
from ..engine.writer import RetryPolicy
from ..resources import LanceDBResource, LibSQLResource
from ..workers import worker_metadata


@dg.asset(
    deps=["lancedb_memories"],
    group_name="memories",
    kinds={"lancedb"},
    pool="lancedb_maintenance",
    description="Scalar indexes on the scope columns, the full-text index on chunk text and, past "
    "100,000 rows, the vector index; new rows folded into them and small fragments compacted. "
    "The one place that optimizes the table, so writers never race to compact.",
)
def search_index(context: dg.AssetExecutionContext, lancedb: LanceDBResource, libsql: LibSQLResource) -> dg.MaterializeResult:
    started = time.perf_counter()
    report = {}

    def maintain() -> None:
        report.update(lancedb.store.maintain())

    retries = RetryPolicy().call(maintain, "LanceDB index maintenance", on_retry=context.log.warning)
    migration = finish_migration(lancedb.store, libsql.store)  # a new model's table complete: searches move to it
    seconds = time.perf_counter() - started
    if report["created"]:
        context.log.info(f"created indexes on {', '.join(report['created'])}")
    unindexed = sum(index["unindexed"] for index in report["indexes"].values())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report["rows"],
            "indexes": dg.MetadataValue.json(report["indexes"]),
            "created": ", ".join(report["created"]) or "none",
            "unindexed_rows": unindexed,
            "retries": retries,
            "model_migration": dg.MetadataValue.json(migration),
            "seconds": round(seconds, 3),
            **worker_metadata(),
        }
    )
