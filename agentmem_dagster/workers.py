"""Which process ran each step: every step of the ingest job ends with one structured log line
naming its host and process (and, on a cluster worker, the worker's name), written by a job
hook in the step's own process, so it holds under any executor: one process (in_process), a
process per step (multiprocess), or Celery workers on other machines. `agentmem ingest` reads
them back from the run's events."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable

import dagster as dg

# The log line: this prefix, then a JSON object.
PREFIX = "agentmem/worker "
# Set by deploy/local/up for each Celery worker it starts (its directory's name: worker-1, ...).
WORKER_NAME_ENV = "AGENTMEM_WORKER_NAME"


def identity() -> dict:
    """This process: host, pid, and the worker's name where one is set."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    if os.environ.get(WORKER_NAME_ENV):
        me["worker"] = os.environ[WORKER_NAME_ENV]
    return me


def _report(context: dg.HookContext) -> None:
    context.log.info(PREFIX + json.dumps(identity(), sort_keys=True))


@dg.success_hook(name="agentmem_worker_on_success")
def worker_on_success(context: dg.HookContext) -> None:
    _report(context)


@dg.failure_hook(name="agentmem_worker_on_failure")
def worker_on_failure(context: dg.HookContext) -> None:
    _report(context)


HOOKS = {worker_on_success, worker_on_failure}


def workers_of(messages: Iterable[tuple[str | None, str]]) -> list[dict]:
    """The distinct workers named by (step_key, message) log lines, each with the steps it ran,
    sorted by host and pid."""
    found: dict[tuple, dict] = {}
    for step, message in messages:
        if not message.startswith(PREFIX):
            continue
        try:
            me = json.loads(message[len(PREFIX):])
        except ValueError:
            continue
        key = (me.get("host"), me.get("pid"), me.get("worker"))
        entry = found.setdefault(key, {**me, "steps": []})
        if step and step not in entry["steps"]:
            entry["steps"].append(step)
    return [found[key] for key in sorted(found, key=lambda k: (str(k[0]), k[1] or 0, str(k[2])))]
