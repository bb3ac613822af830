"""Concurrent runs: different days in parallel lose nothing; the same day twice at once ends
with its rows present once (the second run waits for the first's lease), also when one of the
runs is a backfill of a range of days and the other the schedule's run of one of them."""

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from agentmem_dagster.assets.partitions import register_days
from agentmem_dagster.demo import write_demo_landing
from agentmem_dagster.engine.libsql_store import LibsqlPool, LibsqlStore
from agentmem_dagster.engine.memory import MemoryEngine
from agentmem_dagster.engine.records import read_landing_day
from agentmem_dagster.engine.writer import Batch, DayLease, FanOutWriter, LibsqlSink, WriteError

from .test_writer import memories

AGENTMEM = str(Path(sys.executable).parent / "agentmem")


def test_three_concurrent_runs_two_of_them_on_the_same_day(agentmem_home):
    demo = write_demo_landing(agentmem_home / "landing", start=dt.date(2024, 6, 1), days=2, memories=160)
    days = demo["days"]
    wanted = [days[0], days[1], days[0]]  # the first day twice, at once, beside another day
    procs = [
        subprocess.Popen([AGENTMEM, "ingest", "--partition", day, "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        for day in wanted
    ]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout))
    assert all(out["status"] == "SUCCESS" for out in outs)

    engine = MemoryEngine.from_env()
    total = 0
    for day in days:
        stats = engine.stats([day])
        lance_ids = engine.lance.chunk_ids([day])
        assert len(lance_ids) == len(set(lance_ids)) == stats["chunks"] > 0
        assert sorted(lance_ids) == sorted(engine.libsql.chunk_ids([day]))
        total += stats["memories"]
    assert total == demo["memories"]
    assert engine.stats()["consistent"]
    engine.close()


def test_a_lease_blocks_other_runs_until_released_but_not_after_its_process_died(tmp_path):
    store = LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    assert store.try_lease(["2024-06-01"], "run-a", "run-a:lancedb", ttl=60) == []
    assert store.try_lease(["2024-06-01"], "run-a", "run-a:libsql", ttl=60) == []  # same run: re-entrant
    blocking = store.try_lease(["2024-06-01", "2024-06-02"], "run-b", "run-b:both", ttl=60)
    assert {lease["ingest_id"] for lease in blocking} == {"run-a"}
    assert store.try_lease(["2024-06-02"], "run-b", "run-b:both", ttl=60) == []  # another day is free
    store.release_lease(["2024-06-01"], "run-a:lancedb")
    assert store.try_lease(["2024-06-01"], "run-b", "run-b:both", ttl=60)  # run-a:libsql still holds it
    store.release_lease(["2024-06-01"], "run-a:libsql")
    assert store.try_lease(["2024-06-01"], "run-b", "run-b:both", ttl=60) == []

    # a lease left by a process that died (kill -9) does not block
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.pool.connection() as conn:
        conn.execute("UPDATE day_leases SET pid = ?, expires_at = ?", [dead.pid, time.time() + 600])
    assert store.try_lease(["2024-06-01"], "run-c", "run-c:both", ttl=60) == []
    store.pool.close()


def test_a_run_waiting_for_a_lease_says_once_what_it_waits_for(tmp_path):
    """At WARNING in the Dagster ops (the CLI's default level shows it): a wait of up to an hour
    must not look hung, nor fill the log with a line every two seconds."""
    store = LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    assert store.try_lease(["2024-06-01"], "run-a", "run-a:both", ttl=1.5) == []  # this live process holds it
    heard = []
    started = time.monotonic()
    DayLease(store, ["2024-06-01"], "run-b", "run-b:both", wait=60, on_wait=heard.append).acquire()
    assert time.monotonic() - started >= 1.0  # it did wait, for the lease to expire
    [said] = heard
    assert said.startswith("day 2024-06-01 is being written by ingestion run-a (pid ")
    assert "waiting for it to finish, up to 6" in said
    store.pool.close()


def test_a_lost_lease_stops_the_writer_and_takes_its_rows_back(tmp_path):
    """A renewal that finds another ingestion holding the day (the lease expired under a slow
    run) fails the run: it is not written beside the other one."""
    store = LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    day = "2024-06-01"
    lease = DayLease(store, [day], "run-a", "run-a:libsql", ttl=600)
    table = memories(40, day=day)
    chunks = pa.table({
        "chunk_id": [f"{m}#0" for m in table["memory_id"].to_pylist()], "memory_id": table["memory_id"],
        "chunk_index": [0] * 40, "chunk_count": [1] * 40, "text": table["content"], "text_hash": ["0" * 64] * 40,
        "user_id": table["user_id"], "day": table["day"],
    })
    batches = (Batch(i, table.slice(i * 4, 4), chunks.slice(i * 4, 4)) for i in range(10))

    def steal(batch: Batch) -> None:
        if batch.index == 2:  # run-a's lease runs out, and run-b takes the day
            with store.pool.connection() as conn:
                conn.execute("UPDATE day_leases SET expires_at = 0 WHERE holder = 'run-a:libsql'")
            assert store.try_lease([day], "run-b", "run-b:both", ttl=600) == []

    writer = FanOutWriter([LibsqlSink(store, [day], "run-a")], lease=lease, on_batch=steal)
    with pytest.raises(WriteError, match="renewing the day lease failed.*expired and ingestion run-b"):
        writer.run(batches)
    assert store.counts([day])["memories"] == 0  # its rows were taken back
    store.pool.close()


# One run in its own process, as the daemons would launch it: the schedule's RunRequest for
# the day its tick covers, or a backfill of a range of days (single-run backfill policy).
LAUNCH = """
import datetime as dt, json, sys
import dagster as dg
from agentmem_dagster.automation import daily_ingest_schedule
from agentmem_dagster.cli import ingest_job
from agentmem_dagster.engine.settings import Settings
from agentmem_dagster.resources import LandingZone

with dg.DagsterInstance.get() as instance:
    run_config = {}
    if sys.argv[1] == "schedule":
        tick = dt.datetime.fromisoformat(sys.argv[2])
        landing = LandingZone(path=str(Settings.from_env().landing))
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, resources={"landing": landing})
        request = daily_ingest_schedule(context)
        tags = {**request.tags, "dagster/schedule_name": "daily_ingest_schedule", "dagster/partition": request.partition_key}
        run_config = request.run_config
    else:  # a backfill from the UI: its default config, a process per step
        tags = {"dagster/backfill": "test", "dagster/asset_partition_range_start": sys.argv[2],
                "dagster/asset_partition_range_end": sys.argv[3]}
    result = dg.execute_job(dg.reconstructable(ingest_job), instance=instance, tags=tags, run_config=run_config,
                            raise_on_error=False)
from agentmem_dagster.console import error_text
errors = [f"{e.step_key}: {error_text(e.event_specific_data.error)}" for e in result.all_events if e.is_step_failure]
print(json.dumps({"run_id": result.run_id, "success": result.success, "tags": tags, "errors": errors}))
"""


def test_a_backfill_beside_a_scheduled_run_of_one_of_its_days(agentmem_home):
    demo = write_demo_landing(agentmem_home / "landing", start=dt.date(2024, 6, 1), days=3, memories=240)
    days = demo["days"]
    with dg.DagsterInstance.get() as instance:  # create the instance's storage once, before the runs
        register_days(instance, days)  # as `agentmem ingest` or the sensor would
    launches = [
        [sys.executable, "-c", LAUNCH, "backfill", days[0], days[-1]],
        [sys.executable, "-c", LAUNCH, "schedule", f"{days[2]}T00:15:00+00:00"],  # the tick for days[1]
    ]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in launches]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.splitlines()[-1]))
    assert [out["success"] for out in outs] == [True, True], [out["errors"] for out in outs]
    assert outs[1]["tags"]["dagster/partition"] == days[1]

    with dg.DagsterInstance.get() as instance:
        records = [instance.get_run_record_by_id(out["run_id"]) for out in outs]
        assert max(r.start_time for r in records) < min(r.end_time for r in records)  # they did overlap
        for out in outs:
            checks = instance.get_records_for_run(out["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in checks.records]
            assert {e.check_name for e in evaluations} == {"stores_consistent", "vectors_sane"}
            assert all(e.passed for e in evaluations)

    engine = MemoryEngine.from_env()
    for day in days:
        expected = read_landing_day(engine.settings.landing, day).memories
        lance_ids = engine.lance.chunk_ids([day])
        assert len(lance_ids) == len(set(lance_ids)) == engine.stats([day])["chunks"] > 0
        assert sorted(lance_ids) == sorted(engine.libsql.chunk_ids([day]))
        stored = engine.libsql.memories((day, m) for m in expected["memory_id"].to_pylist())
        assert len(stored) == engine.stats([day])["memories"] == expected.num_rows  # each memory once
    assert engine.stats()["consistent"]
    engine.close()
