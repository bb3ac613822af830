"""`agentmem bench --json` keeps its contract (a small run; the figures live in BENCHMARKS.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_bench_json_contract(agentmem_home):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "agentmem"), "bench", "--memories", "60", "--json"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert [r["name"] for r in doc["rungs"]] == [
        "per-record",
        "batched embedding + batched vector insert",
        "+ one LibSQL transaction per batch",
        "+ concurrent stores, pooled connections, pipelined batches",
    ]
    assert all(r["memories_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in doc["rungs"])
    assert doc["memories"] == 60 and doc["model"] == os.environ["AGENTMEM_EMBED_MODEL"]
    assert doc["ceiling_per_s"] > 0
    assert doc["speedup"] == round(doc["rungs"][-1]["memories_per_s"] / doc["rungs"][0]["memories_per_s"], 2)
    # the last rung's rate over the embed-only ceiling's (each rounded when reported)
    assert doc["share_of_ceiling"] == pytest.approx(doc["rungs"][-1]["memories_per_s"] / doc["ceiling_per_s"], rel=0.01, abs=0.002)
    assert doc["storage_rows_per_s"] > 0 and doc["cached_reingest"]["again_s"] > 0
    storage = doc["storage"]
    assert storage["chunk_rows"] > storage["batch_chunks"] and storage["ladder_chunk_rows"] == doc["chunks"]
    assert storage["ladder_rows_per_s"] > 0 and len(storage["by_day_rows_per_s"]) == 10
