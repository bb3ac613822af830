"""Run retention: what keeps the Dagster home bounded.

Dagster keeps every run's records (its event log, its compute logs) until someone deletes the
run. Ingesting the same days again, a sensor's retries, failed runs: each leaves records that
nothing reads once newer runs have materialized the same asset partitions. A finished run is
pruned here when it is older than the retention period and none of its materializations is
still the latest of its asset partition (so the UI's view of every partition, its metadata and
its lineage stay whole), and it is not an erasure (`forget_memories` runs are the audit trail
of what was erased, and are kept). Pruning deletes the run through Dagster's own API, then the
files Dagster leaves behind: the run's event-log database file and its compute logs, and our
staged op outputs."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from .resources.staging import drop_run_outputs

# Days a finished run is kept before it may be pruned (AGENTMEM_RUN_RETENTION_DAYS).
DEFAULT_KEEP_DAYS = 30.0
KEPT_JOBS = frozenset({"forget_memories"})
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
MATERIALIZATION = dg.DagsterEventType.ASSET_MATERIALIZATION


def keep_days_from_env() -> float:
    raw = os.environ.get("AGENTMEM_RUN_RETENTION_DAYS", "")
    try:
        days = float(raw) if raw else DEFAULT_KEEP_DAYS
    except ValueError:
        raise ValueError(f"AGENTMEM_RUN_RETENTION_DAYS must be a number of days, got {raw!r}") from None
    if days < 0:
        raise ValueError(f"AGENTMEM_RUN_RETENTION_DAYS must be 0 or more, got {raw!r}")
    return days


def holders_of_latest(instance: dg.DagsterInstance) -> set[str]:
    """The runs that recorded the latest materialization of some asset partition (or of an
    unpartitioned asset): read from the instance's asset index, a query per asset and per
    1,000 partitions, however many runs there are (reading each old run's own event log
    instead cost a query per run kept, and every daily run stays kept)."""
    holders = set()
    for key in instance.get_asset_keys():
        storage_ids = list(instance.get_latest_storage_id_by_partition(key, MATERIALIZATION).values())
        for start in range(0, len(storage_ids), 1000):
            ids = storage_ids[start:start + 1000]
            page = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, storage_ids=ids), limit=len(ids))
            holders |= {record.run_id for record in page.records}
        holders |= {record.run_id for record in instance.fetch_materializations(key, limit=1).records}
    return holders


def prunable_runs(instance: dg.DagsterInstance, keep_days: float, now: dt.datetime | None = None) -> list[str]:
    """Finished runs older than `keep_days` none of whose materializations is still the latest."""
    now = now or dt.datetime.now(dt.timezone.utc)
    cutoff = now - dt.timedelta(days=keep_days)
    candidates = [
        record.dagster_run.run_id
        for record in instance.get_run_records(dg.RunsFilter(statuses=FINISHED, updated_before=cutoff))
        if record.dagster_run.job_name not in KEPT_JOBS
    ]
    if not candidates:
        return []
    holders = holders_of_latest(instance)
    return [run_id for run_id in candidates if run_id not in holders]


def prune_runs(instance: dg.DagsterInstance, keep_days: float, staging: str | Path | None = None,
               now: dt.datetime | None = None) -> list[str]:
    """Delete the prunable runs and every file they left; returns their ids."""
    run_ids = prunable_runs(instance, keep_days, now)
    events = instance.event_log_storage
    logs_dir = getattr(instance.compute_log_manager, "_base_dir", None)
    for run_id in run_ids:
        instance.delete_run(run_id)
        if isinstance(events, SqliteEventLogStorage):
            Path(events.path_for_shard(run_id)).unlink(missing_ok=True)
        if logs_dir:
            shutil.rmtree(Path(logs_dir, run_id), ignore_errors=True)
        if staging is not None:
            drop_run_outputs(str(staging), run_id)
    return run_ids
