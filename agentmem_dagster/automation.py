"""The ingestion job, its daily schedule, and the sensor that picks up new or late files."""

import datetime as dt
import json

import dagster as dg

from .assets import memory_days
from .engine.records import landing_days, landing_fingerprint
from .engine.settings import Settings
from .resources import LandingZone
from .resources.staging import drop_run_outputs
from .runs import executor_config

ingest_job = dg.define_asset_job(
    "ingest_memories",
    selection=dg.AssetSelection.groups("memories"),
    description="Landing files of the selected day(s) -> validated, chunked, embedded -> LanceDB and LibSQL.",
)


@dg.schedule(job=ingest_job, cron_schedule="15 0 * * *", execution_timezone="UTC")
def daily_ingest_schedule(context: dg.ScheduleEvaluationContext, landing: LandingZone):
    """Shortly after midnight UTC, ingest the day that just ended, if it has landing files."""
    yesterday = (context.scheduled_execution_time.astimezone(dt.timezone.utc) - dt.timedelta(days=1)).date()
    day = yesterday.isoformat()
    if not landing_fingerprint(landing.path, day):
        return dg.SkipReason(f"no landing files for {day} under {landing.path}")
    if not context.instance.has_dynamic_partition(memory_days.name, day):
        context.instance.add_dynamic_partitions(memory_days.name, [day])
    return dg.RunRequest(run_key=f"scheduled:{day}", partition_key=day, run_config=executor_config(landing.path, [day]))


@dg.sensor(job=ingest_job, minimum_interval_seconds=60)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    """Request a run for each day whose landing files are new or changed since the last run
    requested for it, registering new days as partitions; the cursor keeps one fingerprint per
    day. Days before AGENTMEM_PARTITIONS_START are reported, not ingested."""
    seen = json.loads(context.cursor) if context.cursor else {}
    start = Settings.from_env().partitions_start
    requests, skipped = [], []
    for day in landing_days(landing.path):
        fingerprint = landing_fingerprint(landing.path, day)
        if not fingerprint or seen.get(day) == fingerprint:
            continue
        if day < start:
            skipped.append(day)
            continue
        seen[day] = fingerprint
        requests.append(dg.RunRequest(
            run_key=f"landing:{day}:{fingerprint[:16]}", partition_key=day, run_config=executor_config(landing.path, [day])
        ))
    if skipped:
        context.log.warning(f"landing folders before AGENTMEM_PARTITIONS_START ({start}), not ingested: {skipped[:10]}")
    known = set(context.instance.get_dynamic_partitions(memory_days.name))
    new_days = sorted({request.partition_key for request in requests} - known)
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(seen, sort_keys=True),
        dynamic_partitions_requests=[memory_days.build_add_request(new_days)] if new_days else None,
    )


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[ingest_job])
def clean_staging(context: dg.RunStatusSensorContext) -> None:
    """A successful run's intermediate op outputs (embedded shards) are no longer needed."""
    drop_run_outputs(str(Settings.from_env().staging), context.dagster_run.run_id)
