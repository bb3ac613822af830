"""The pipeline through dagster.materialize (in process), against real stores on tmp dirs."""

import dagster as dg
import pytest

from agentmem_dagster.assets import ASSETS, CHECKS
from agentmem_dagster.definitions import build_resources
from agentmem_dagster.engine.memory import MemoryEngine
from agentmem_dagster.engine.search import search
from agentmem_dagster.engine.settings import Settings

from .conftest import instance_with_days, memory, write_landing

DAY, OTHER_DAY = "2024-06-01", "2024-06-02"
LONG = " ".join(
    f"Step {i} of the migration plan: move the invoices service to the new cluster, "
    f"check the dashboards, and tell the team in the channel number {i}." for i in range(60)
)


def materialize(*, partition: str | None = None, days: list[str] | None = None):
    tags = {}
    if days:
        tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    result = dg.materialize(
        ASSETS + CHECKS, partition_key=partition, tags=tags, resources=build_resources(Settings.from_env()),
        instance=instance_with_days(*(days or [partition])),
    )
    assert result.success
    return result


@pytest.fixture
def engine(agentmem_home):
    engine = MemoryEngine.from_env()
    yield engine
    engine.close()


def _day_records(day: str, n: int, user: str = "u_alice") -> list[dict]:
    return [memory(f"{day}-m{i}", user, f"memory {i} of {day}: I went running by the river", day) for i in range(n)]


def test_one_day_lands_once_in_both_stores(engine):
    landing = engine.settings.landing
    records = _day_records(DAY, 20) + [memory("long-1", "u_alice", LONG, DAY, metadata={"topic": "work"})]
    write_landing(landing, DAY, records)
    result = materialize(partition=DAY)

    stats = engine.stats([DAY])
    assert stats["memories"] == 21
    lance_ids = engine.lance.chunk_ids([DAY])
    assert len(lance_ids) == len(set(lance_ids)) == stats["chunks"] > 21  # the long one is split
    assert sorted(lance_ids) == sorted(engine.libsql.chunk_ids([DAY]))
    stored = engine.libsql.memories([(DAY, "long-1")])[(DAY, "long-1")]
    assert stored["content"] == LONG and stored["metadata"] == {"topic": "work"}
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["stores_consistent"].passed and checks["vectors_sane"].passed
    assert checks["stores_consistent"].partition == DAY
    meta = result.asset_materializations_for_node("raw_memories")[0].metadata
    assert meta["dagster/row_count"].value == 21 and meta["quarantined"].value == 0
    indexed = result.asset_materializations_for_node("search_index")[0].metadata
    assert indexed["unindexed_rows"].value == 0 and "text" in indexed["created"].value
    assert engine.lance.index_status()["text"]["indexed"] == stats["chunks"]
    hits = search(engine.embedder, engine.lance, engine.libsql, "migration invoices", user_id="u_alice", k=3, mode="text").hits
    assert hits[0].memory_id == "long-1"


def test_rematerializing_a_day_replaces_it_and_leaves_other_days(engine):
    landing = engine.settings.landing
    write_landing(landing, DAY, _day_records(DAY, 10))
    write_landing(landing, OTHER_DAY, _day_records(OTHER_DAY, 5))
    materialize(partition=DAY)
    materialize(partition=OTHER_DAY)
    first = (engine.stats(), sorted(engine.lance.chunk_ids()))

    again = materialize(partition=DAY)
    assert (engine.stats(), sorted(engine.lance.chunk_ids())) == first
    embedded = again.asset_materializations_for_node("memory_embeddings")[0].metadata
    assert embedded["run_cache_hits"].value == embedded["run_chunks"].value == 10  # nothing embedded twice

    # the day's landing now holds fewer memories: the removed ones leave both stores
    write_landing(landing, DAY, _day_records(DAY, 4))
    materialize(partition=DAY)
    assert engine.stats([DAY])["memories"] == 4
    assert sorted(engine.lance.chunk_ids([DAY])) == [f"{DAY}-m{i}#0" for i in range(4)]
    other = engine.stats([OTHER_DAY])
    assert (other["memories"], other["chunks"], other["lancedb_rows"]) == (5, 5, 5)
    assert engine.stats()["consistent"]


def test_a_range_of_days_runs_as_one_run(engine):
    days = ["2024-06-01", "2024-06-02", "2024-06-03"]
    for day in days:
        write_landing(engine.settings.landing, day, _day_records(day, 3 + days.index(day)))
    result = materialize(days=days)
    assert engine.stats(days)["memories"] == 3 + 4 + 5
    # one materialization per asset and day, each with the day's own row count
    for node in ("raw_memories", "memory_embeddings", "memory_stores"):
        counts = {(m.asset_key.path[-1], m.partition): m.metadata["dagster/row_count"].value
                  for m in result.asset_materializations_for_node(node)}
        keys = {key for key, _ in counts}
        assert counts == {(key, day): 3 + i for key in keys for i, day in enumerate(days)}
    assert all(engine.stats([d])["chunks"] == 3 + i for i, d in enumerate(days))


def test_bad_lines_are_quarantined_and_good_lines_of_the_file_stored(engine):
    bad = [
        "{not json",
        '["a", "list"]',
        '{"content": "no user", "created_at": "2024-06-01T10:00:00Z"}',
        '{"user_id": "u_alice", "content": "   ", "created_at": "2024-06-01T10:00:00Z"}',
        '{"user_id": 42, "content": "number user", "created_at": "2024-06-01T10:00:00Z"}',
        '{"user_id": "u_alice", "content": "bad time", "created_at": "yesterday-ish"}',
        '{"user_id": "u_alice", "content": "bad meta", "created_at": "2024-06-01T10:00:00Z", "metadata": [1]}',
    ]
    good = _day_records(DAY, 3)
    write_landing(engine.settings.landing, DAY, [good[0], *bad, good[1], "", good[2]])
    materialize(partition=DAY)
    rows = engine.libsql.quarantine([DAY])
    reasons = {row["line"]: row["reason"].split(":")[0] for row in rows}
    assert reasons == {
        2: "invalid_json", 3: "not_an_object", 4: "missing_field", 5: "empty_field",
        6: "wrong_type", 7: "invalid_timestamp", 8: "invalid_metadata",
    }
    assert all(row["file"] == f"{DAY}/memories.jsonl" for row in rows)
    assert rows[0]["raw"] == "{not json"
    assert engine.stats([DAY])["memories"] == 3
    assert engine.stats([DAY])["quarantined"] == 7


def test_every_chunk_of_a_long_memory_is_searchable(engine):
    write_landing(
        engine.settings.landing, DAY,
        [memory("long-1", "u_alice", LONG, DAY), *_day_records(DAY, 10)],
    )
    materialize(partition=DAY)
    chunks = [c for c in engine.lance.chunk_ids([DAY]) if c.startswith("long-1#")]
    assert len(chunks) > 2
    texts = engine.lance._scan(engine.lance.table(), ["chunk_id", "text"], "memory_id = 'long-1'").to_pylist()
    for row in texts:
        hits = search(engine.embedder, engine.lance, engine.libsql, row["text"], user_id="u_alice", k=3).hits
        assert hits[0].memory_id == "long-1"
        assert hits[0].content == LONG
    assert {row["chunk_id"] for row in texts} == set(chunks)


def _rows(engine, day: str) -> tuple[list, list, list]:
    """Every chunk row of `day` in LanceDB and LibSQL, and its memory rows, with their run."""
    lance = engine.lance._scan(engine.lance.table(), ["chunk_id", "ingest_id"], f"day = '{day}'").to_pylist()
    with engine.libsql.pool.connection() as conn:
        chunks = conn.execute("SELECT chunk_id, ingest_id FROM chunks WHERE day = ?", [day]).fetchall()
        memories = conn.execute("SELECT memory_id, ingest_id, content FROM memories WHERE day = ?", [day]).fetchall()
    return sorted((r["chunk_id"], r["ingest_id"]) for r in lance), sorted(map(tuple, chunks)), sorted(map(tuple, memories))


def test_a_writer_op_that_fails_leaves_both_stores_as_they_were(engine):
    """The LanceDB writer op fails for good (its staged vectors have the wrong dimension)
    while the LibSQL writer op writes the same day: the run fails, and neither store keeps a
    row of it; the day's earlier rows are all still there. A new run then replaces the day."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_landing(engine.settings.landing, DAY, _day_records(DAY, 10))
    materialize(partition=DAY)
    before = _rows(engine, DAY)
    assert len(before[0]) == len(before[1]) == 10

    write_landing(engine.settings.landing, DAY, _day_records(DAY, 25, user="u_bob"))
    resources = build_resources(Settings.from_env())
    upstream = ["raw_memories", "memory_embeddings"]
    instance = instance_with_days(DAY)
    assert dg.materialize(ASSETS + CHECKS, partition_key=DAY, resources=resources, selection=upstream, instance=instance).success
    staged = engine.settings.staging / "memory_embeddings" / f"{DAY}.parquet"
    table = pq.read_table(staged)
    flat = pa.array(np.ones(table.num_rows * 3, dtype=np.float32))
    vectors = pa.FixedSizeListArray.from_arrays(flat, 3)
    pq.write_table(table.set_column(table.schema.get_field_index("vector"), "vector", vectors), staged)

    result = dg.materialize(ASSETS + CHECKS, partition_key=DAY, resources=resources, raise_on_error=False,
                            selection=["lancedb_memories", "libsql_memories"], instance=instance)
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert "memory_stores.write_lancedb" in failed
    assert _rows(engine, DAY) == before

    assert materialize(partition=DAY).success
    after = _rows(engine, DAY)
    assert len(after[0]) == len(after[1]) == len(after[2]) == 25
    assert {content for _, _, content in after[2]} == {r["content"] for r in _day_records(DAY, 25, user="u_bob")}
