"""The executor chosen by AGENTMEM_EXECUTOR, and the processes that ran a run's steps (the
`workers` of `agentmem ingest --json`) under the default executors. The Celery executor on
real workers is tests/test_cluster.py."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from agentmem_dagster.assets.partitions import register_days, run_tags
from agentmem_dagster.cli import ingest_job
from agentmem_dagster.definitions import build_definitions, executor_kind
from agentmem_dagster.runs import executor_config
from agentmem_dagster.workers import workers_of

from .conftest import memory, write_landing

AGENTMEM = str(Path(sys.executable).parent / "agentmem")
DAY = "2024-05-01"


def test_agentmem_executor_picks_the_executor(monkeypatch, agentmem_home):
    assert executor_kind() == "multiprocess"
    job = build_definitions().resolve_job_def("ingest_memories")
    assert job.executor_def.name == "agentmem_executor"
    assert executor_config(agentmem_home / "landing", [DAY]) == {"execution": {"config": {"in_process": True}}}

    monkeypatch.setenv("AGENTMEM_EXECUTOR", "celery")
    monkeypatch.setenv("AGENTMEM_CELERY_BROKER", "redis://127.0.0.1:1/0")
    job = build_definitions().resolve_job_def("ingest_memories")
    assert job.executor_def.name == "agentmem_celery_executor"
    assert executor_config(agentmem_home / "landing", [DAY]) == {}  # the workers' executor takes no switch

    monkeypatch.setenv("AGENTMEM_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="AGENTMEM_EXECUTOR='kubernetes' is not one of multiprocess, celery"):
        build_definitions()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTMEM_EXECUTOR": "threads"}, "agentmem: AGENTMEM_EXECUTOR='threads' is not one of multiprocess, celery"),
        ({"AGENTMEM_EXECUTOR": "celery"}, "agentmem: AGENTMEM_EXECUTOR=celery needs AGENTMEM_CELERY_BROKER"),
    ],
)
def test_ingest_refuses_an_executor_it_cannot_use(agentmem_home, env, message):
    write_landing(agentmem_home / "landing", DAY, [memory("m1", "u", "a note", DAY)])
    proc = subprocess.run([AGENTMEM, "ingest", "--all", "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(message)


def test_a_process_per_step_reports_each_step_process(agentmem_home):
    """The multiprocess executor: every step in a process of its own, each named once."""
    write_landing(agentmem_home / "landing", DAY, [memory(f"m{i}", "u", f"note {i}", DAY) for i in range(5)])
    with dg.DagsterInstance.get() as instance:
        register_days(instance, [DAY])
        result = dg.execute_job(
            dg.reconstructable(ingest_job), instance=instance, tags=run_tags(DAY, DAY),
            run_config={"execution": {"config": {"in_process": False}}}, raise_on_error=False,
        )
        assert result.success
        logs = instance.all_logs(result.run_id)
    workers = workers_of(entry.dagster_event for entry in logs if entry.dagster_event is not None)
    steps = {event.step_key for event in result.all_events if event.is_step_success}
    assert {step for worker in workers for step in worker["steps"]} == steps
    assert len(workers) == len(steps) >= 9  # a process per step
    assert all(w["host"] == socket.gethostname() and w["pid"] != os.getpid() and "worker" not in w for w in workers)
    # named on events the steps write anyway: no event of its own
    assert all(entry.dagster_event is not None or "worker" not in entry.user_message for entry in logs)
