"""Checks on a day's stores: the same chunk ids on both sides, and sane vectors."""

import warnings

import dagster as dg

from ..resources import EmbedderResource, LanceDBResource, LibSQLResource
from .metadata import peak_rss_mb
from .partitions import daily_partitions

# Partitioned asset checks are a Dagster preview; they are what lets the UI show a result per day.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")


@dg.asset_check(
    asset="lancedb_memories",
    additional_deps=["libsql_memories"],
    partitions_def=daily_partitions,
    description="LanceDB holds exactly the chunk ids that LibSQL holds for the day(s).",
)
def stores_consistent(
    context: dg.AssetCheckExecutionContext, lancedb: LanceDBResource, libsql: LibSQLResource
) -> dg.AssetCheckResult:
    days = context.partition_keys
    in_lance = set(lancedb.store.chunk_ids(days))
    in_libsql = set(libsql.store.chunk_ids(days))
    only_lance, only_libsql = sorted(in_lance - in_libsql), sorted(in_libsql - in_lance)
    return dg.AssetCheckResult(
        passed=not only_lance and not only_libsql,
        metadata={
            "lancedb_chunks": len(in_lance),
            "libsql_chunks": len(in_libsql),
            "only_in_lancedb": len(only_lance),
            "only_in_libsql": len(only_libsql),
            "examples": ", ".join((only_lance + only_libsql)[:10]),
            "peak_rss_mb": peak_rss_mb(),
        },
    )


@dg.asset_check(
    asset="lancedb_memories",
    partitions_def=daily_partitions,
    description="Every vector has the model's dimension and no NaN or all-zero vector.",
)
def vectors_sane(
    context: dg.AssetCheckExecutionContext, lancedb: LanceDBResource, embedder: EmbedderResource
) -> dg.AssetCheckResult:
    health = lancedb.store.vector_health(context.partition_keys)
    expected = embedder.embedder.dim
    return dg.AssetCheckResult(
        passed=health["bad_vectors"] == 0 and (health["rows"] == 0 or health["dim"] == expected),
        metadata={**health, "expected_dim": expected, "peak_rss_mb": peak_rss_mb()},
    )
