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
from agentmem_dagster.engine.records import read_landing_day

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


# (killed while the writers are part-way through a day: the test after this one)
@pytest.mark.parametrize("kill_at", ["memory_embeddings.embed_shard", "store_checks"])
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


# A run as `agentmem ingest` starts it, with the staged days cut into batches of a few memories
# (Staging.batch_rows, set through run config), so that a day is written in many batches; with
# the default executor config, as a run launched from the UI: a process per step.
LAUNCH = """
import sys
import dagster as dg
from agentmem_dagster.assets.partitions import register_days
from agentmem_dagster.cli import ingest_job
staging = {"base_dir": sys.argv[2], "batch_rows": int(sys.argv[3])}
with dg.DagsterInstance.get() as instance:
    register_days(instance, [sys.argv[1]])  # as `agentmem ingest` does
    dg.execute_job(dg.reconstructable(ingest_job), instance=instance, tags={"dagster/partition": sys.argv[1]},
                   run_config={"resources": {"staging": {"config": staging}}}, raise_on_error=False)
"""
BATCH_ROWS = 2


def _new_rows(db: Path, old: list[str]) -> int:
    """Memories of DAY in LibSQL written by a run other than `old` (read, never written)."""
    import libsql

    conn = libsql.connect(str(db), isolation_level=None)
    try:
        return conn.execute(
            f"SELECT count(*) FROM memories WHERE day = ? AND ingest_id NOT IN ({', '.join('?' * len(old))})",
            [DAY, *old],
        ).fetchone()[0]
    except ValueError as exc:  # the table may not exist yet in a brand-new database
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        conn.close()


def test_a_run_killed_between_batches_of_its_writers_then_rerun_leaves_everything_once(agentmem_home):
    """kill -9 while the writers have committed some of the day's batches and not the others,
    at a point chosen by each seed; after every kill, a re-run leaves each memory once in LibSQL,
    each chunk once in LanceDB, the two agreeing, and no other version of the day."""
    import datetime as dt
    import random

    write_demo_landing(agentmem_home / "landing", start=dt.date(2024, 6, 1), days=1, memories=400)
    landed = read_landing_day(agentmem_home / "landing", DAY)
    total, quarantined = landed.memories.num_rows, len(landed.quarantine)
    chunks = None  # as the first re-run stores them; every later one must store the same
    db = agentmem_home / "memories.db"
    engine = MemoryEngine.from_env()
    for seed in (1, 2, 3):  # the first kill meets empty stores, the later ones the re-run's rows
        old = engine.libsql.versions([DAY]) or ["-"]
        before_chunks = len(engine.lance.chunk_ids([DAY]))
        target = int(total * random.Random(seed).uniform(0.05, 0.5))  # memories written before the kill
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, DAY, str(agentmem_home / "staging"), str(BATCH_ROWS)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while _new_rows(db, old) < max(1, target) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # killed between batches: part of the day's new version is in, the old one still whole
        written = _new_rows(db, old)
        new_chunks = len(engine.lance.chunk_ids([DAY])) - before_chunks
        assert 0 < written < total or 0 < new_chunks < (chunks or total), (seed, target, written, new_chunks)
        if seed > 1:  # the old version is still whole: the kill came before commit_days
            assert set(old) <= set(engine.libsql.versions([DAY])) and set(old) <= set(engine.lance.versions([DAY]))

        rerun = subprocess.run([AGENTMEM, "ingest", "--partition", DAY, "--json"], capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        out = json.loads(rerun.stdout)
        assert out["consistent"] is True
        chunks = chunks or out["chunks"]
        assert (out["memories"], out["chunks"], out["lancedb_rows"], out["quarantined"]) == (total, chunks, chunks, quarantined)
        assert chunks > total  # the demo's long notes are split
        lance_ids = engine.lance.chunk_ids([DAY])
        assert len(lance_ids) == len(set(lance_ids)) == chunks
        assert sorted(lance_ids) == sorted(engine.libsql.chunk_ids([DAY]))
        assert engine.libsql.counts([DAY])["memories"] == total
        assert engine.libsql.versions([DAY]) == engine.lance.versions([DAY]) == [out["run_id"]]  # one version left
    engine.close()
