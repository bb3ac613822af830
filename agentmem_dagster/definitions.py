"""The code location's Definitions, built when Dagster loads them (not at import), from the
environment of the process that loads them."""

import os
import warnings

import dagster as dg

from .assets import ASSETS, CHECKS
from .assets.lifecycle import forget_job, memory_retention, retention_job, retention_schedule
from .automation import clean_staging, daily_ingest_schedule, ingest_job, landing_sensor
from .console import console_logger
from .engine.settings import Settings
from .resources import DatabaseResource, EmbedderResource, LanceDBResource, LandingZone, Staging, StagingIOManager


def _env(name: str, default: str | None):
    """The variable as a dg.EnvVar when set (so the UI shows where a value comes from), else
    the contract's default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or Settings.from_env()
    return {
        "landing": LandingZone(path=_env("AGENTMEM_LANDING", str(settings.landing))),
        "embedder": EmbedderResource(
            model=_env("AGENTMEM_EMBED_MODEL", settings.embed_model),
            model_path=_env("AGENTMEM_EMBED_MODEL_PATH", None),
        ),
        "lancedb": LanceDBResource(
            uri=_env("AGENTMEM_LANCEDB_URI", settings.lancedb_uri),
            model=_env("AGENTMEM_EMBED_MODEL", settings.embed_model),
            model_path=_env("AGENTMEM_EMBED_MODEL_PATH", None),
        ),
        # the system of record (key kept from when it could only be LibSQL): LibSQL or PostgreSQL by the URL
        "libsql": DatabaseResource(
            url=_env(settings.database_url_setting, settings.database_url),
            auth_token=_env("AGENTMEM_DATABASE_AUTH_TOKEN", None),
        ),
        "staging": Staging(base_dir=_env("AGENTMEM_STAGING_URI", str(settings.staging))),
        "io_manager": StagingIOManager(base_dir=_env("AGENTMEM_STAGING_URI", str(settings.staging))),
    }


# Each step runs in its own process; a forkserver that has already imported the code location
# and fastembed starts them in a fraction of a second instead of re-importing Dagster for every
# step. LanceDB itself is left out: importing it starts its event loop thread, which a fork
# would not carry over, so each step imports it itself. Its dependencies start no thread and
# were most of its import (~1.7 s of ~2.1 s: lance_namespace's generated API models, pandas,
# pyarrow.dataset), so they are preloaded. (A module the forkserver cannot import is skipped.)
LANCEDB_DEPENDENCIES = ["lance_namespace", "pandas", "pyarrow.dataset"]
MULTIPROCESS = {"start_method": {"forkserver": {"preload_modules": ["agentmem_dagster.definitions", "fastembed", *LANCEDB_DEPENDENCIES]}}}

# One process for small runs, a process per step (the writers side by side) for big ones:
# `agentmem`, the sensor and the schedule choose by the run's landing data (runs.py); a run
# launched from the UI uses a process per step unless its config says `in_process: true`.
executor = dg.multi_or_in_process_executor.configured(
    lambda config: {"in_process": {}} if config["in_process"] else {"multiprocess": MULTIPROCESS},
    name="agentmem_executor",
    config_schema={"in_process": dg.Field(bool, default_value=False, description="run every step in one process")},
)

EXECUTORS = ("multiprocess", "celery")


def executor_kind(env=None) -> str:
    """AGENTMEM_EXECUTOR: `multiprocess` (the default: one machine, one process or a process
    per step) or `celery` (steps on Celery workers, deploy/local/up)."""
    value = ((os.environ if env is None else env).get("AGENTMEM_EXECUTOR") or "multiprocess").strip().lower()
    if value not in EXECUTORS:
        raise ValueError(f"AGENTMEM_EXECUTOR={value!r} is not one of {', '.join(EXECUTORS)}")
    return value


def celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor, its broker and result backend from the environment
    (AGENTMEM_CELERY_BROKER, AGENTMEM_CELERY_BACKEND; the workers are started with the same).
    Op outputs go through the staging IO manager, so every worker must reach the same staging
    (a shared directory on one machine, AGENTMEM_STAGING_URI on object storage beyond it)."""
    try:
        from dagster_celery import celery_executor as dagster_celery_executor
    except ImportError:
        raise ValueError(
            "AGENTMEM_EXECUTOR=celery needs dagster-celery: pip install 'agentmem-dagster[cluster]'"
        ) from None
    if not os.environ.get("AGENTMEM_CELERY_BROKER"):
        raise ValueError("AGENTMEM_EXECUTOR=celery needs AGENTMEM_CELERY_BROKER (e.g. redis://127.0.0.1:6379/0)")
    # dagster-celery registers its step task again on each run's Celery app (the same task
    # under the same name): Celery warns once per run that the second one is not registered.
    warnings.filterwarnings("ignore", message=r"(?s).*new callable was not registered")
    config = {"broker": {"env": "AGENTMEM_CELERY_BROKER"}}
    if os.environ.get("AGENTMEM_CELERY_BACKEND"):
        config["backend"] = {"env": "AGENTMEM_CELERY_BACKEND"}
    return dagster_celery_executor.configured(config, name="agentmem_celery_executor")


def build_executor(env=None) -> dg.ExecutorDefinition:
    return celery_executor() if executor_kind(env) == "celery" else executor


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[*ASSETS, memory_retention],
        asset_checks=CHECKS,
        jobs=[ingest_job, forget_job, retention_job],
        schedules=[daily_ingest_schedule, retention_schedule],
        sensors=[landing_sensor, clean_staging],
        resources=build_resources(settings),
        executor=build_executor(),
        loggers={"console": console_logger},
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
