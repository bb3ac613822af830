"""kill -9 of a real ingestion (the CLI, and its step processes and their forkserver when it has them) at several
points, then a re-run: every memory once in LibSQL, every chunk once in LanceDB, and the
stores agree."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from agentmem_dagster.demo import write_demo_landing
from agentmem_dagster.engine.memory import MemoryEngine

AGENTMEM = str(Path(sys.executable).parent / "agentmem")
DAY = "2024-06-01"


def _wait_for_step(step_prefix: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            for run in instance.get_runs(limit=1):
                records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
                if any(r.event_log_entry.step_key.startswith(step_prefix) for r in records):
                    return
            time.sleep(0.05)
    raise AssertionError(f"step {step_prefix} never started")


@pytest.mark.parametrize("kill_at", ["memory_embeddings.embed_shard", "memory_stores.write_l", "store_checks"])
def test_a_killed_run_rerun_leaves_everything_exactly_once(agentmem_home, kill_at):
    write_demo_landing(agentmem_home / "landing", start=__import__("datetime").date(2024, 6, 1), days=1, memories=300)
    engine = MemoryEngine.from_env()
    # a first complete run, so that the killed run replaces existing rows
    first = subprocess.run([AGENTMEM, "ingest", "--partition", DAY, "--json"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    expected = json.loads(first.stdout)

    proc = subprocess.Popen(
        [AGENTMEM, "ingest", "--partition", DAY], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_step(kill_at)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    rerun = subprocess.run([AGENTMEM, "ingest", "--partition", DAY, "--json"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    out = json.loads(rerun.stdout)
    assert (out["memories"], out["chunks"], out["lancedb_rows"]) == (
        expected["memories"], expected["chunks"], expected["lancedb_rows"],
    )
    lance_ids = engine.lance.chunk_ids([DAY])
    assert len(lance_ids) == len(set(lance_ids)) == expected["chunks"]
    assert sorted(lance_ids) == sorted(engine.libsql.chunk_ids([DAY]))
    assert engine.libsql.counts([DAY])["memories"] == expected["memories"]
    engine.close()
