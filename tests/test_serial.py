"""Op outputs are staged as JSON, never pickle: they round-trip, and reading one back builds
only plain values, paths, tuples and the package's own dataclasses."""

import json
from pathlib import Path

import dagster as dg
import pytest

from agentmem_dagster.assets.embeddings import EmbeddedShard
from agentmem_dagster.engine import serial
from agentmem_dagster.engine.parquet import Shard, ShardPart
from agentmem_dagster.resources.staging import StagingIOManager

VALUES = [
    Shard(3, (ShardPart("2024-06-01", Path("/s/a.parquet"), (0, 1), 16384), ShardPart("2024-06-02", Path("/s/b.parquet"), (), 0))),
    EmbeddedShard(1, (("2024-06-01", "/s/e.parquet"),), 1.25, memories=5, chunks=7, memories_split=1, cache_hits=2, peak_rss_mb=312.5),
    {"replaces": ["run-a", "run-b"], "metadata": {"chunks": 10, "seconds": 0.5, "peak_rss_mb": 200.1, "none": None}},
    {"__path__": "a dict that only looks like a tag"},
    [1, "two", (3, 4.5), True],
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_op_outputs_round_trip_as_json(value):
    text = serial.dumps(value)
    json.loads(text)  # plain JSON
    assert serial.loads(text) == value


@pytest.mark.parametrize("name", ["os:system", "subprocess:Popen", "builtins:eval", "agentmem_dagster.engine.serial:dumps"])
def test_reading_back_builds_nothing_but_the_packages_dataclasses(name):
    with pytest.raises(ValueError, match="refusing to build"):
        serial.loads(json.dumps({"__dataclass__": [name, {}]}))


def test_values_that_are_not_json_are_refused_when_written():
    from dataclasses import dataclass

    @dataclass
    class Foreign:  # defined outside the package
        x: int

    Foreign.__module__ = "somewhere_else"
    for value in (Foreign(1), object(), {1: "not a str key"}, float("nan")):
        with pytest.raises(TypeError, match="cannot stage"):
            serial.dumps(value)


def test_the_io_manager_writes_json_and_reads_it_back(tmp_path):
    manager = StagingIOManager(base_dir=str(tmp_path))
    value = VALUES[0]
    out = dg.build_output_context(step_key="memory_embeddings.shard_memories", name="result", run_id="run-1", mapping_key="shard_3")
    manager.handle_output(out, value)
    [path] = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert path.suffix == ".json" and json.loads(path.read_text())["__dataclass__"][0].endswith("parquet:Shard")
    assert manager.load_input(dg.build_input_context(upstream_output=out)) == value
