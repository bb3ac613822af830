"""Days streamed in small batches (many row groups, shards and writer batches) land in both
stores exactly as they do in one batch."""

import os
import resource

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentmem_dagster.assets import ASSETS, CHECKS
from agentmem_dagster.definitions import build_resources
from agentmem_dagster.engine.chunking import CHUNK_SCHEMA, with_vectors
from agentmem_dagster.engine.ingest import batches_in_step
from agentmem_dagster.engine.lance_store import LanceStore
from agentmem_dagster.engine.libsql_store import (
    CHUNK_COLUMNS,
    MEMORY_COLUMNS,
    LibsqlPool,
    LibsqlStore,
    decode_row,
    select_list,
)
from agentmem_dagster.engine.memory import MemoryEngine, compare_chunk_ids
from agentmem_dagster.engine.records import MEMORY_SCHEMA
from agentmem_dagster.engine.settings import Settings
from agentmem_dagster.resources import Staging

from .conftest import instance_with_days, memory, write_landing

DAYS = ["2024-06-01", "2024-06-02"]
LONG = " ".join(f"Note {i}: the quarterly report goes to finance, then to the board, by Friday." for i in range(40))


def _landing(landing, day: str) -> None:
    """Two files of one day: short and long memories, a bad line, and memory_ids that come
    again later (in the same file and in the next one), so duplicates straddle batches."""
    first = [memory(f"{day}-m{i}", f"u{i % 3}", (LONG if i % 7 == 0 else f"memory {i} of {day}"), day)
             for i in range(20)]
    first.insert(5, "{not json")
    first.append(memory(f"{day}-m2", "u2", f"memory 2 of {day}, corrected", day))
    second = [memory(f"{day}-m{i}", f"u{i % 3}", f"memory {i} of {day}, last version", day) for i in (3, 14, 30)]
    write_landing(landing, day, first, "a.jsonl")
    write_landing(landing, day, second, "b.jsonl")


def _ingest(home, batch_rows: int | None = None, shard_size: int | None = None):
    """Both days as one run, in the home `home`; returns the run result and the engine."""
    settings = Settings.from_env({**os.environ, "AGENTMEM_HOME": str(home)})
    for day in DAYS:
        _landing(settings.landing, day)
    resources = build_resources(settings)
    run_config = {}
    if batch_rows:
        resources["staging"] = Staging(base_dir=str(settings.staging), batch_rows=batch_rows)
        run_config = {"ops": {"memory_embeddings": {"ops": {"shard_memories": {"config": {"shard_size": shard_size}}}}}}
    result = dg.materialize(
        ASSETS + CHECKS, resources=resources, run_config=run_config,
        tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
        instance=instance_with_days(*DAYS),
    )
    assert result.success
    return result, MemoryEngine(settings)


def _stored(engine: MemoryEngine) -> dict:
    """Everything both stores hold, in a comparable form (without the run's id)."""
    out = {}
    with engine.libsql.pool.connection() as conn:
        for table, columns, key in (("memories", MEMORY_COLUMNS[:-1], "memory_id"), ("chunks", CHUNK_COLUMNS[:-1], "chunk_id")):
            rows = conn.execute(f"SELECT {select_list(columns)} FROM {table} ORDER BY {key}").fetchall()
            out[table] = [decode_row(columns, row) for row in rows]
    out["quarantine"] = engine.libsql.quarantine()
    lance = engine.lance._scan(engine.lance.table(), ["chunk_id", "memory_id", "text", "day", "vector"], None)
    out["lance"] = lance.sort_by("chunk_id").to_pylist()
    return out


def test_a_day_in_many_small_batches_lands_as_in_one(tmp_path, agentmem_home):
    whole, whole_engine = _ingest(tmp_path / "whole")
    small, small_engine = _ingest(tmp_path / "small", batch_rows=3, shard_size=4)
    try:
        expected, got = _stored(whole_engine), _stored(small_engine)
    finally:
        whole_engine.close()
        small_engine.close()

    # it did stream: each staged day is cut into row groups of at most 3 memories, which stay
    # batches down to the stores
    raws = [pq.read_metadata(tmp_path / "small" / "staging" / "raw_memories" / f"{day}.parquet") for day in DAYS]
    assert all(raw.num_rows == 21 and raw.num_row_groups >= 7 for raw in raws)
    assert max(raw.row_group(i).num_rows for raw in raws for i in range(raw.num_row_groups)) == 3
    written = small.asset_materializations_for_node("memory_stores")
    # (a row group smaller than a batch, after duplicates left it, is joined to the next one)
    groups = sum(raw.num_row_groups for raw in raws)
    assert all(groups / 2 < m.metadata["batches"].value <= groups for m in written)
    assert small.asset_materializations_for_node("memory_embeddings")[0].metadata["shards"].value > 4
    assert whole.asset_materializations_for_node("memory_embeddings")[0].metadata["shards"].value == 1  # both days
    # each step's peak memory: in MB (a Python process with pyarrow holds more than 50), and the
    # peak of the process that ran it (here, in process: this one), so never above ours now
    own_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for node in ("raw_memories", "memory_embeddings", "memory_stores"):
        peaks = [m.metadata["peak_rss_mb"].value for m in small.asset_materializations_for_node(node)]
        assert peaks and all(50 < peak <= own_peak_mb + 0.1 for peak in peaks), (node, peaks, own_peak_mb)

    # and it stored the same rows: duplicates resolved across batches and files, long memories split
    assert len(got["memories"]) == 2 * 21 and len(got["chunks"]) > 2 * 21
    assert got["memories"] == expected["memories"]
    assert got["chunks"] == expected["chunks"]
    assert got["quarantine"] == expected["quarantine"] and len(got["quarantine"]) == 2
    assert [(r["chunk_id"], r["memory_id"], r["text"], r["day"]) for r in got["lance"]] == [
        (r["chunk_id"], r["memory_id"], r["text"], r["day"]) for r in expected["lance"]
    ]
    assert np.allclose([r["vector"] for r in got["lance"]], [r["vector"] for r in expected["lance"]], atol=1e-6)
    winner = next(r for r in got["memories"] if r["memory_id"] == f"{DAYS[1]}-m3")
    assert winner["content"] == f"memory 3 of {DAYS[1]}, last version" and winner["source_file"].endswith("b.jsonl")


def _memories(ids: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"memory_id": i, "user_id": "u", "content": i, "created_at": "t", "created_at_us": 0, "metadata": "{}",
          "content_hash": "h", "day": DAYS[0], "source_file": "f", "source_line": 1} for i in ids],
        schema=MEMORY_SCHEMA,
    )


def test_memories_go_with_their_first_chunk_and_streams_out_of_step_are_refused():
    chunks = pa.table({"memory_id": ["a", "a", "b", "c"], "chunk_index": [0, 1, 0, 0]})
    memories, parts = [_memories(["a"]), _memories(["b", "c"])], [chunks.slice(0, 3), chunks.slice(3)]
    batches = list(batches_in_step(memories, parts, min_rows=1))
    assert [b.memories["memory_id"].to_pylist() for b in batches] == [["a", "b"], ["c"]]
    assert [b.chunks.num_rows for b in batches] == [3, 1]
    # batches smaller than min_rows (the days of a range, a row group each) are written together
    joined = list(batches_in_step(memories, parts, min_rows=4))
    assert [(b.memories["memory_id"].to_pylist(), b.chunks.num_rows) for b in joined] == [(["a", "b", "c"], 4)]
    with pytest.raises(ValueError, match="out of step"):
        list(batches_in_step([_memories(["b", "a", "c"])], [chunks]))
    with pytest.raises(ValueError, match="without chunks"):
        list(batches_in_step([_memories(["a", "b", "c", "d"])], [chunks]))


def _chunks(ids: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"chunk_id": f"{i}#0", "memory_id": i, "chunk_index": 0, "chunk_count": 1, "text": i, "text_hash": i,
          "user_id": "u", "day": DAYS[0]} for i in ids],
        schema=CHUNK_SCHEMA,
    )


def test_vector_health_counts_bad_vectors_batch_by_batch(tmp_path):
    vectors = np.ones((5, 4), dtype=np.float32)
    vectors[[1, 3]] = 0.0  # LanceDB itself refuses NaN
    store = LanceStore(str(tmp_path / "lance"))
    store.write(with_vectors(_chunks([f"m{i}" for i in range(5)]), vectors), "run")
    assert store.vector_health(DAYS[:1], batch_rows=2) == {"dim": 4, "rows": 5, "bad_vectors": 2}


def test_stores_compare_by_digest_and_name_what_differs(tmp_path):
    lance, libsql = LanceStore(str(tmp_path / "lance")), LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    ids = [f"m{i}" for i in range(5)]
    lance.write(with_vectors(_chunks(ids), np.ones((5, 4), dtype=np.float32)), "run")
    libsql.write(_memories(ids), _chunks(ids), "run")
    same = compare_chunk_ids(lance, libsql, DAYS[:1])
    assert same["consistent"] and (same["lancedb_chunks"], same["libsql_chunks"]) == (5, 5)

    lance.write(with_vectors(_chunks(["m4"]), np.ones((1, 4), dtype=np.float32)), "run")
    twice = compare_chunk_ids(lance, libsql, DAYS[:1])  # the same ids, one of them twice in LanceDB
    assert not twice["consistent"] and twice["lancedb_chunks"] == 6
    assert twice["only_in_lancedb"] == twice["only_in_libsql"] == []

    libsql.write(_memories(["m4", "m5"]), _chunks(["m4", "m5"]), "run")
    missing = compare_chunk_ids(lance, libsql, None)
    assert not missing["consistent"] and missing["only_in_libsql"] == ["m5#0"] and missing["only_in_lancedb"] == []
    libsql.pool.close()


def test_staged_vectors_are_written_without_a_dictionary(tmp_path):
    """Floats hardly ever repeat: the vectors skip dictionary encoding, the other columns keep it,
    and the file reads back as written."""
    from agentmem_dagster.engine.chunking import embedded_schema
    from agentmem_dagster.engine.parquet import read_batches, write_parquet

    chunks = pa.table({
        name: [f"{name}-{i % 3}" if field.type == pa.string() else i for i in range(300)]
        for name, field in zip(CHUNK_SCHEMA.names, CHUNK_SCHEMA)
    }, schema=CHUNK_SCHEMA)
    embedded = with_vectors(chunks, np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32))
    path = tmp_path / "e.parquet"
    write_parquet(path, embedded_schema(8), [embedded.slice(0, 200), embedded.slice(200)])
    assert pa.concat_tables(read_batches(path)) == embedded
    meta = pq.read_metadata(path).row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["vector.list.element"])
    assert any("DICTIONARY" in e for e in encodings["user_id"])
