"""`agentmem bench --pipeline` on a tiny history with the static model (peers are not run:
their environments would be installed from the network)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from agentmem_dagster.engine.pipeline_bench import build_history, data_days

AGENTMEM = str(Path(sys.executable).parent / "agentmem")


def _landing_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def test_history_is_sparse_and_deterministic(tmp_path):
    first = build_history(tmp_path / "a", memories=300, span_days=100, n_days=12, seed=3)
    again = build_history(tmp_path / "b", memories=300, span_days=100, n_days=12, seed=3)
    build_history(tmp_path / "c", memories=300, span_days=100, n_days=12, seed=4)
    assert first == {**again, "files": first["files"]}
    assert _landing_files(tmp_path / "a") == _landing_files(tmp_path / "b")
    assert _landing_files(tmp_path / "a") != _landing_files(tmp_path / "c")

    days = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert days == data_days(100, 12, 3) and len(days) == first["days_with_data"] == 12
    assert (days[0], days[-1]) == (first["first_day"], first["last_day"])
    assert (dt_days(days[-1]) - dt_days(days[0])) == 99  # the history spans the whole span
    records = [json.loads(line) for f in (tmp_path / "a").rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(records) == len({r["memory_id"] for r in records}) == first["memories"] == 300
    assert all(r["created_at"][:10] in days for r in records)


def dt_days(day: str) -> int:
    import datetime as dt

    return dt.date.fromisoformat(day).toordinal()


def test_bad_sizes_are_one_line_errors(agentmem_home):
    proc = subprocess.run(
        [AGENTMEM, "bench", "--pipeline", "--span-days", "10", "--data-days", "11", "--runs", "1"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["agentmem: --data-days must be between 2 and --span-days (10), not 11"]


def test_pipeline_bench_json(agentmem_home, tmp_path):
    proc = subprocess.run(
        [AGENTMEM, "bench", "--pipeline", "--memories", "120", "--span-days", "12", "--data-days", "3",
         "--runs", "1", "--dir", str(tmp_path / "work"), "--json"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert (doc["memories"], doc["days_with_data"], doc["span_days"], doc["runs"]) == (120, 3, 12, 1)
    assert "peers" not in doc["median"]
    # one line on stderr per process started and finished: four processes in the round
    assert sum("finished in" in line for line in proc.stderr.splitlines()) == 4

    run = doc["each_run"][0]
    ingest, small = run["ingest_all"], run["small_day"]
    assert ingest["memories"] == doc["memories"]
    assert small["memories"] == doc["small_day"]["memories"] == 20
    assert 0 < ingest["engine_seconds"] < ingest["seconds"]
    assert ingest["memories_per_s"] == round(120 / ingest["seconds"], 1)
    events = ingest["events"]
    assert events["total"] == sum(events["by_type"].values()) == (
        events["days_with_data"] + events["days_without_data"] + events["no_day"]
    )
    assert events["by_type"]["ASSET_MATERIALIZATION"] > 0 and events["days_with_data"] > 0
    assert ingest["events_per_data_day"] == round(events["days_with_data"] / 3, 1)
    assert ingest["events_per_empty_day"] == round(events["days_without_data"] / 9, 2)
    assert small["events"]["days_without_data"] == 0 < small["events"]["days_with_data"]
    assert run["search"]["hits"] > 0
    assert run["small_day_over_search"] == round(small["seconds"] / run["search"]["seconds"], 2)
    alone = run["model_alone"]
    assert alone["texts"] >= 120 and 0 < alone["embed_seconds"] < alone["seconds"]
    # with one run, the medians are that run's figures
    assert doc["median"]["ingest_all"]["seconds"] == ingest["seconds"]
    assert doc["machine"]["cpus"] >= 1
    # the work directory keeps the history the peers would read
    assert len(list((tmp_path / "work" / "history").iterdir())) == 3
