"""Checks on a day's stores: the same chunk ids on both sides, and sane vectors."""

import warnings

import dagster as dg

from ..engine.memory import compare_chunk_ids
from ..resources import EmbedderResource, LanceDBResource, LibSQLResource
from .metadata import peak_rss_mb
from .partitions import daily_partitions

# Partitioned asset checks are a Dagster preview; they are what lets the UI show a result per day.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")


@dg.asset_check(
    asset="lancedb_memories",
    additional_deps=["libsql_memories"],
    partitions_def=daily_partitions,
    description="LanceDB holds exactly the chunk ids that LibSQL holds for the day(s), each once.",
)
def stores_consistent(
    context: dg.AssetCheckExecutionContext, lancedb: LanceDBResource, libsql: LibSQLResource
) -> dg.AssetCheckResult:
    compared = compare_chunk_ids(lancedb.store, libsql.store, context.partition_keys)
    only_lance, only_libsql = compared["only_in_lancedb"], compared["only_in_libsql"]
    return dg.AssetCheckResult(
        passed=compared["consistent"],
        metadata={
            "lancedb_chunks": compared["lancedb_chunks"],
            "libsql_chunks": compared["libsql_chunks"],
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
