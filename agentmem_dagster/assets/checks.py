"""Checks on the run's days in the stores: the same chunk ids on both sides, and sane vectors.
Both are evaluated in one step (one process, one opening of each store)."""

import warnings

import dagster as dg

from ..engine.lifecycle import now_us
from ..engine.memory import compare_chunk_ids
from ..resources import EmbedderResource, LanceDBResource, LibSQLResource
from ..workers import worker_metadata
from .metadata import peak_rss_mb
from .partitions import memory_days

# Partitioned asset checks are a Dagster preview; they are what lets the UI show a result per day.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")

STORES_CONSISTENT = dg.AssetCheckSpec(
    "stores_consistent",
    asset="lancedb_memories",
    additional_deps=["libsql_memories"],
    partitions_def=memory_days,
    description="LanceDB holds exactly the chunk ids that LibSQL holds for the day(s), each once. "
    "`current_memories` counts what search can return from the day(s): versions not superseded by "
    "a newer one on another day, and not expired.",
)
VECTORS_SANE = dg.AssetCheckSpec(
    "vectors_sane",
    asset="lancedb_memories",
    partitions_def=memory_days,
    description="Every vector has the model's dimension and no NaN or all-zero vector.",
)


@dg.multi_asset_check(specs=[STORES_CONSISTENT, VECTORS_SANE], description=__doc__)
def store_checks(
    context: dg.AssetCheckExecutionContext,
    lancedb: LanceDBResource,
    libsql: LibSQLResource,
    embedder: EmbedderResource,
):
    days = context.partition_keys
    compared = compare_chunk_ids(lancedb.store, libsql.store, days)
    only_lance, only_libsql = compared["only_in_lancedb"], compared["only_in_libsql"]
    versions = libsql.store.current_in_days(days, now_us())
    yield dg.AssetCheckResult(
        check_name="stores_consistent",
        asset_key="lancedb_memories",
        passed=compared["consistent"],
        metadata={
            "lancedb_chunks": compared["lancedb_chunks"],
            "libsql_chunks": compared["libsql_chunks"],
            "current_memories": versions["current"],
            "stored_versions": versions["versions"],
            "only_in_lancedb": len(only_lance),
            "only_in_libsql": len(only_libsql),
            "examples": ", ".join((only_lance + only_libsql)[:10]),
            "peak_rss_mb": peak_rss_mb(),
        },
    )
    health = lancedb.store.vector_health(days)
    expected = embedder.embedder.dim
    yield dg.AssetCheckResult(
        check_name="vectors_sane",
        asset_key="lancedb_memories",
        passed=health["bad_vectors"] == 0 and (health["rows"] == 0 or health["dim"] == expected),
        metadata={**health, "expected_dim": expected, "peak_rss_mb": peak_rss_mb(), **worker_metadata()},
    )
