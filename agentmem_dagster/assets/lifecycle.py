"""The lifecycle in Dagster: an erasure as a job with config (an auditable run in the UI) and
the retention asset that removes expired memories on a schedule. Each op body is one call
into engine/lifecycle.py."""


import dagster as dg

from ..engine.lifecycle import Scope, forget, remove_expired
from ..engine.writer import RetryPolicy
from ..resources import LanceDBResource, LibSQLResource, Staging
from .metadata import peak_rss_mb


class ForgetConfig(dg.Config):
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None
    wait_seconds: float = 3600.0  # how long to wait for ingestions still writing


@dg.op(
    out=dg.Out(dg.Nothing),
    pool="lancedb_maintenance",
    description="Erase the user's (agent's, session's) memories from both stores, the embedding cache, "
    "the quarantine and the staged files, leaving no deleted bytes behind; record a tombstone so "
    "that re-runs of earlier days skip them.",
)
def forget_memories_op(
    context: dg.OpExecutionContext, config: ForgetConfig, lancedb: LanceDBResource, libsql: LibSQLResource, staging: Staging
):
    scope = Scope(config.user_id, config.agent_id, config.session_id)
    report = forget(
        lancedb.store, libsql.store, scope, staging=staging.root, wait=config.wait_seconds, on_wait=context.log.info
    )
    tombstone = report.pop("tombstone")
    yield dg.Output(None, metadata={**report, "up_to": tombstone["up_to"], "peak_rss_mb": peak_rss_mb()})


@dg.job(name="forget_memories", description="Erase a user's memories everywhere (config: user_id, optionally agent_id, session_id).")
def forget_job():
    forget_memories_op()


@dg.asset(
    group_name="lifecycle",
    kinds={"lancedb", "libsql"},
    pool="lancedb_maintenance",
    description="Removes expired memories (past their expires_at) from both stores: every expired version, "
    "and every version of a memory whose current version has expired.",
)
def memory_retention(context: dg.AssetExecutionContext, lancedb: LanceDBResource, libsql: LibSQLResource) -> dg.MaterializeResult:
    report = {}
    retries = RetryPolicy().call(
        lambda: report.update(remove_expired(lancedb.store, libsql.store)), "retention", on_retry=context.log.warning
    )
    context.log.info(f"removed {report['expired_memories']} expired memories ({report['chunks']} chunks)")
    return dg.MaterializeResult(metadata={**report, "dagster/row_count": report["versions"], "retries": retries})


retention_job = dg.define_asset_job("memory_retention_job", selection=[memory_retention])
retention_schedule = dg.ScheduleDefinition(job=retention_job, cron_schedule="45 0 * * *", execution_timezone="UTC")
