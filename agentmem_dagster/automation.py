"""The ingestion job, its daily schedule, and the sensor that picks up new or late files."""

import datetime as dt
import json

import dagster as dg

from .assets import daily_partitions
from .engine.records import landing_days, landing_fingerprint
from .engine.settings import Settings
from .resources import LandingZone
from .resources.staging import drop_run_outputs

ingest_job = dg.define_asset_job(
    "ingest_memories",
    selection=dg.AssetSelection.groups("memories"),
    description="Landing files of the selected day(s) -> validated, chunked, embedded -> LanceDB and LibSQL.",
)


@dg.schedule(job=ingest_job, cron_schedule="15 0 * * *", execution_timezone="UTC")
def daily_ingest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Shortly after midnight UTC, ingest the day that just ended."""
    yesterday = (context.scheduled_execution_time.astimezone(dt.timezone.utc) - dt.timedelta(days=1)).date()
    day = yesterday.isoformat()
    return dg.RunRequest(run_key=f"scheduled:{day}", partition_key=day)


@dg.sensor(job=ingest_job, minimum_interval_seconds=60)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
    """Request a run for each day whose landing files are new or changed since the last run
    requested for it; the cursor keeps one fingerprint per day."""
    seen = json.loads(context.cursor) if context.cursor else {}
    valid = set(daily_partitions.get_partition_keys())
    requests, skipped = [], []
    for day in landing_days(landing.path):
        fingerprint = landing_fingerprint(landing.path, day)
        if not fingerprint or seen.get(day) == fingerprint:
            continue
        if day not in valid:
            skipped.append(day)
            continue
        seen[day] = fingerprint
        requests.append(dg.RunRequest(run_key=f"landing:{day}:{fingerprint[:16]}", partition_key=day))
    if skipped:
        context.log.warning(f"landing folders outside the partitions, not ingested: {skipped[:10]}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[ingest_job])
def clean_staging(context: dg.RunStatusSensorContext) -> None:
    """A successful run's intermediate op outputs (embedded shards) are no longer needed."""
    drop_run_outputs(str(Settings.from_env().staging), context.dagster_run.run_id)
