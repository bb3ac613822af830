"""`agentmem` end to end in real processes: demo data, ingest through Dagster, search, stats."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from .conftest import memory, write_landing

AGENTMEM = str(Path(sys.executable).parent / "agentmem")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([AGENTMEM, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"agentmem {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def test_demo_ingest_range_search_and_stats(agentmem_home):
    demo = json.loads(run("demo", "--days", "3", "--memories", "120", "--json").stdout)
    assert len(demo["days"]) == 3

    out = json.loads(run("ingest", "--from", demo["days"][0], "--to", demo["days"][-1], "--json").stdout)
    assert out["status"] == "SUCCESS"
    assert out["partitions"] == demo["days"]
    assert out["memories"] == demo["memories"]
    assert out["quarantined"] == demo["bad_lines"]
    assert out["chunks"] == out["lancedb_rows"] == out["libsql_rows"] > out["memories"]
    assert out["memories_per_s"] > 0
    with dg.DagsterInstance.get() as instance:  # the run is recorded where `dagster dev` looks
        run_record = instance.get_run_by_id(out["run_id"])
        assert run_record.is_success
        assert run_record.tags["dagster/asset_partition_range_end"] == demo["days"][-1]
        assert len(instance.get_runs()) == 1  # a range is one run
        checks = instance.get_records_for_run(
            out["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in checks]
        assert {e.check_name for e in evaluations} == {"stores_consistent", "vectors_sane"}
        assert all(e.passed for e in evaluations)

    stats = json.loads(run("stats", "--json").stdout)
    assert stats["consistent"] is True
    assert (stats["memories"], stats["chunks"], stats["lancedb_rows"]) == (
        out["memories"], out["chunks"], out["lancedb_rows"],
    )

    hits = json.loads(run("search", "food allergy", "--user", "o'brien", "-k", "5", "--json").stdout)
    assert 0 < len(hits) <= 5
    assert {hit["user_id"] for hit in hits} == {"o'brien"}
    assert len({hit["memory_id"] for hit in hits}) == len(hits)
    for key in ("memory_id", "chunk_id", "session_id", "content", "created_at", "metadata", "score"):
        assert all(key in hit for hit in hits)
    assert all(hit["content"] and isinstance(hit["metadata"], dict) for hit in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    assert json.loads(run("search", "anything", "--user", "nobody", "--json").stdout) == []


def test_ingest_one_day_and_search_scope(agentmem_home):
    day = "2024-07-01"
    landing = agentmem_home / "landing"
    write_landing(landing, day, [
        memory("a1", "u_ann", "Ann's cat is called Miso and loves tuna", day, session_id="s-ann", metadata={"k": 1}),
        memory("b1", "u_ben", "Ben's cat is called Pixel and loves tuna", day, session_id="s-ben"),
        "not json at all",
    ])
    out = json.loads(run("ingest", "--partition", day, "--json").stdout)
    assert (out["status"], out["memories"], out["chunks"], out["quarantined"]) == ("SUCCESS", 2, 2, 1)
    staging = agentmem_home / "staging"
    assert (staging / "memory_embeddings" / f"{day}.parquet").exists()
    assert not (staging / "runs" / out["run_id"]).exists()  # the run's op outputs are cleaned up

    hits = json.loads(run("search", "cat tuna", "--user", "u_ann", "--json").stdout)
    assert [(h["memory_id"], h["session_id"], h["metadata"]) for h in hits] == [("a1", "s-ann", {"k": 1})]
    assert hits[0]["content"] == "Ann's cat is called Miso and loves tuna"


def test_ingest_refuses_days_outside_the_partitions(agentmem_home):
    proc = run("ingest", "--partition", "1999-01-01", "--json", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "AGENTMEM_PARTITIONS_START" in proc.stderr


def test_empty_days_cost_nothing_and_a_late_older_day_splits_a_range(agentmem_home):
    landing = agentmem_home / "landing"
    days = ["2024-01-05", "2024-02-20", "2024-03-30"]  # 3 days with data over 86 calendar days
    for i, day in enumerate(days):
        write_landing(landing, day, [memory(f"{day}-{n}", "u", f"note {n} of {day}", day) for n in range(2 + i)])
    out = json.loads(run("ingest", "--all", "--json").stdout)
    assert out["status"] == "SUCCESS" and out["partitions"] == days and out["memories"] == 2 + 3 + 4
    assert out["executor"] == "in_process"
    events = out["dagster_events"]
    # four daily assets materialized (and planned) once per day with data, search_index once
    assert events["ASSET_MATERIALIZATION"] == events["ASSET_MATERIALIZATION_PLANNED"] == 4 * len(days) + 1
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("memory_days") == days
        materialized = instance.get_materialized_partitions(dg.AssetKey("libsql_memories"))
        assert materialized == set(days)

    # files for an older day arrive late: it is registered after the others, so a range over it
    # and the first two days is two runs (partitions d1, d2 | d3 | late: d3 is not in the range)
    late = "2024-01-01"
    write_landing(landing, late, [memory("late-1", "u", "a late note", late)])
    again = json.loads(run("ingest", "--from", "2024-01-01", "--to", "2024-02-28", "--json").stdout)
    assert again["status"] == "SUCCESS" and again["partitions"] == [late, *days[:2]]
    assert len(again["run_ids"]) == 2 and again["memories"] == 1 + 2 + 3
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("memory_days") == [*days, late]
        assert instance.get_materialized_partitions(dg.AssetKey("lancedb_memories")) == {late, *days}
    assert len(json.loads(run("ingest", "--all", "--json").stdout)["run_ids"]) == 1  # all of them: one run
