"""Run retention: re-running days does not grow the Dagster home, and no partition loses its
latest materialization, its metadata or its erasure record."""

import json
import os
from pathlib import Path

import dagster as dg

from agentmem_dagster.assets.lifecycle import forget_job
from agentmem_dagster.definitions import build_resources

from .conftest import memory, write_landing
from .test_cli import run

D1, D2 = "2024-03-01", "2024-03-02"


def _home_files(home: Path) -> tuple[int, set[str]]:
    files = [p for p in home.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), {p.name for p in (home / "history" / "runs").glob("*.db")}


def _ingest(day: str) -> dict:
    return json.loads(run("ingest", "--partition", day, "--json").stdout)


def test_superseded_runs_are_pruned_and_the_home_stays_bounded(agentmem_home, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME")  # the embedded default: $AGENTMEM_HOME/dagster, agentmem's dagster.yaml
    monkeypatch.setenv("AGENTMEM_RUN_RETENTION_DAYS", "0")
    landing = agentmem_home / "landing"
    write_landing(landing, D1, [memory(f"m{i}", "u1", f"Fact number {i} about the garden.", D1) for i in range(30)])
    write_landing(landing, D2, [memory(f"n{i}", "u2", f"Note {i} on the trip to Porto.", D2) for i in range(30)])
    home = agentmem_home / "dagster"

    first = _ingest(D1)
    with dg.DagsterInstance.from_config(str(home)) as instance:  # an erasure: kept whatever its age
        erasure = forget_job.execute_in_process(
            run_config={"ops": {"forget_memories_op": {"config": {"user_id": "nobody"}}}},
            instance=instance, resources=build_resources(),
        )
        assert erasure.success
    second = _ingest(D1)
    assert second["pruned_runs"] == 1  # the first run: all its materializations superseded
    size_after_two, shards = _home_files(home)
    assert f"{first['run_id']}.db" not in shards and f"{second['run_id']}.db" in shards
    assert not (home / "storage" / first["run_id"]).exists()

    for _ in range(2):
        again = _ingest(D1)
        assert again["pruned_runs"] == 1
    size_after_four, _ = _home_files(home)
    # the same work again leaves the home the size it was (SQLite reuses its free pages)
    assert size_after_four < size_after_two * 1.15, (size_after_two, size_after_four)

    other = _ingest(D2)
    # D1's latest run still holds D1's materializations; only search_index moved to the new run
    assert other["pruned_runs"] == 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert sorted(r.run_id for r in runs if r.job_name == "ingest_memories") == sorted([again["run_id"], other["run_id"]])
        assert [r.job_name for r in runs if r.job_name != "ingest_memories"] == ["forget_memories"]
        materialized = instance.get_materialized_partitions(dg.AssetKey("libsql_memories"))
        assert materialized == {D1, D2}
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("libsql_memories"), asset_partitions=[D1]), limit=5
        ).records
        assert [r.run_id for r in records] == [again["run_id"]]
        assert records[0].asset_materialization.metadata["dagster/row_count"].value == 30


def test_runs_within_the_retention_period_are_kept(agentmem_home, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME")
    assert "AGENTMEM_RUN_RETENTION_DAYS" not in os.environ  # the default: 30 days
    write_landing(agentmem_home / "landing", D1, [memory("m1", "u1", "The gate code is 1234.", D1)])
    assert [_ingest(D1)["pruned_runs"] for _ in range(2)] == [0, 0]
    with dg.DagsterInstance.from_config(str(agentmem_home / "dagster")) as instance:
        assert len(instance.get_runs()) == 2


def test_a_bad_retention_period_is_one_line(agentmem_home, monkeypatch):
    monkeypatch.setenv("AGENTMEM_RUN_RETENTION_DAYS", "a month")
    write_landing(agentmem_home / "landing", D1, [memory("m1", "u1", "The gate code is 1234.", D1)])
    proc = run("ingest", "--partition", D1, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "agentmem: AGENTMEM_RUN_RETENTION_DAYS must be a number of days, got 'a month'"
