"""Concurrent runs: different days in parallel lose nothing; the same day twice at once ends
with its rows present once (the second run waits for the first's lease)."""

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from agentmem_dagster.engine.demo import write_demo_landing
from agentmem_dagster.engine.libsql_store import LibsqlPool, LibsqlStore
from agentmem_dagster.engine.memory import MemoryEngine

AGENTMEM = str(Path(sys.executable).parent / "agentmem")


def test_four_concurrent_runs_two_of_them_on_the_same_day(agentmem_home):
    demo = write_demo_landing(agentmem_home / "landing", start=dt.date(2024, 6, 1), days=3, memories=240)
    days = demo["days"]
    wanted = [days[0], days[1], days[2], days[0]]  # the first day twice, at once
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
