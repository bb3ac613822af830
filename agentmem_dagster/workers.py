"""Which process ran each step: every op of the ingest job attaches its host and process (and,
on a cluster worker, the worker's name) to the metadata of what it outputs, materializes or
checks, as `worker`. That holds under any executor (one process, a process per step, Celery
workers on other machines) and costs no event of its own: the metadata rides on events the
step writes anyway. `agentmem ingest` reads them back from the run's events."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

import dagster as dg

KEY = "worker"
# Set by deploy/local/up for each Celery worker it starts (its directory's name: worker-1, ...).
WORKER_NAME_ENV = "AGENTMEM_WORKER_NAME"


def identity() -> dict:
    """This process: host, pid, and the worker's name where one is set."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    if os.environ.get(WORKER_NAME_ENV):
        me["worker"] = os.environ[WORKER_NAME_ENV]
    return me


def worker_metadata() -> dict:
    """The metadata entry that names this process."""
    return {KEY: dg.MetadataValue.json(identity())}


def event_metadata(event) -> dict:
    """The metadata of a step's output, materialization or check evaluation ({} otherwise)."""
    data = event.event_specific_data
    if event.event_type_value == "STEP_OUTPUT":
        return data.metadata or {}
    if event.event_type_value == "ASSET_MATERIALIZATION":
        return data.materialization.metadata or {}
    if event.event_type_value == "ASSET_CHECK_EVALUATION":
        return data.metadata or {}
    return {}


def workers_of(events: Iterable) -> list[dict]:
    """The distinct processes named by the `worker` metadata of these Dagster events, each with
    the steps it ran, sorted by host and pid."""
    found: dict[tuple, dict] = {}
    for event in events:
        value = event_metadata(event).get(KEY)
        me = getattr(value, "value", None)
        if not isinstance(me, dict):
            continue
        key = (me.get("host"), me.get("pid"), me.get("worker"))
        entry = found.setdefault(key, {**me, "steps": []})
        if event.step_key and event.step_key not in entry["steps"]:
            entry["steps"].append(event.step_key)
    return [found[key] for key in sorted(found, key=lambda k: (str(k[0]), k[1] or 0, str(k[2])))]
