"""What a request to ingest some days becomes: the days registered as partitions, the fewest
Dagster runs that cover them (one, unless an older day was registered after newer ones), and
the executor each run uses.

Small runs execute in one process. A step process costs its start, its imports (LanceDB,
fastembed), its resources and its model load, about a second each on 2 cores, and a run has
ten steps; what they buy, the two writers side by side and shards embedded in parallel, is
worth it only when there is much to write (LanceDB and LibSQL write 50k+ chunk rows/s) or
more cores than the model already uses. Past `IN_PROCESS_MAX_BYTES` of landing data a run
uses the multiprocess executor: each step in its own process, the writers concurrently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from .assets.partitions import PARTITIONS_NAME, contiguous_runs, register_days, run_tags
from .engine.records import landing_bytes

# About 100,000 chat memories of landing JSON.
IN_PROCESS_MAX_BYTES = 64 << 20


def executor_config(landing: str | Path, days: Sequence[str]) -> dict:
    """The run config that picks the executor for a run over `days` (none on Celery workers:
    their executor takes its broker from the environment)."""
    from .definitions import executor_kind

    if executor_kind() == "celery":
        return {}
    in_process = landing_bytes(landing, days) <= IN_PROCESS_MAX_BYTES
    return {"execution": {"config": {"in_process": in_process}}}


@dataclass(frozen=True)
class RunPlan:
    tags: dict[str, str]
    run_config: dict


def plan_runs(instance: dg.DagsterInstance, landing: str | Path, days: Sequence[str]) -> list[RunPlan]:
    """Register `days` as partitions and cut them into runs over contiguous partition ranges."""
    register_days(instance, days)
    return [
        RunPlan(run_tags(run[0], run[-1]), executor_config(landing, run))
        for run in contiguous_runs(instance.get_dynamic_partitions(PARTITIONS_NAME), days)
    ]
