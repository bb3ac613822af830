"""Object storage on a real S3-compatible server (SeaweedFS, tests/s3server.py): the
conditional-PUT probe, and the LanceDB store's contract on `s3://` as on a local directory."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from agentmem_dagster.engine.chunking import chunk_memories, with_vectors
from agentmem_dagster.engine.embedding import Embedder
from agentmem_dagster.engine.errors import StoreUnavailable
from agentmem_dagster.engine.lance_store import LanceStore, scope_filter
from agentmem_dagster.engine.objstore import (
    ConditionalPutIgnored,
    ObjectPath,
    S3Settings,
    conditional_puts,
    judge,
    recently_verified,
    require_conditional_put,
)
from tests.test_writer import memories

DAY, DAY2 = "2024-06-01", "2024-06-02"


@pytest.fixture(scope="module")
def embedder(static_model):
    return Embedder(*static_model)


def embedded(embedder, n: int, prefix: str, day: str = DAY) -> pa.Table:
    chunks = chunk_memories(memories(n, prefix=prefix, day=day), embedder.tokenizer, 256)
    return with_vectors(chunks, embedder.embed(chunks["text"].to_pylist()))


# --------------------------------------------------------------------------- the probe


def test_of_many_concurrent_conditional_puts_of_one_new_key_exactly_one_wins(s3):
    for _ in range(2):  # a new key each round
        outcome = conditional_puts(s3.uri(), writers=16)
        assert outcome == {"writers": 16, "won": 1, "refused": 15, "late": "refused"}
        judge(outcome, "SeaweedFS")  # trusted
    assert s3.keys() == []  # the probe leaves nothing behind


def test_a_server_that_ignores_the_header_is_caught(s3):
    """The same race without the header, as a server that ignores it answers: every writer
    wins, and the judgement refuses the store."""
    outcome = conditional_puts(s3.uri(), writers=8, conditional=False)
    assert outcome["won"] == 8 and outcome["late"] == "won"
    with pytest.raises(ConditionalPutIgnored, match=r"does not honour conditional PUT .* 8 of 8 concurrent writers"):
        judge(outcome, "the server")
    for won, late in ((2, "refused"), (0, "refused"), (1, "won")):  # any other count is refused too
        with pytest.raises(ConditionalPutIgnored):
            judge({"writers": 8, "won": won, "refused": 8 - won, "late": late}, "the server")


@pytest.fixture
def untrusted(monkeypatch):
    """This process has trusted no bucket yet."""
    from agentmem_dagster.engine import objstore

    monkeypatch.setattr(objstore, "_trusted", set())


def test_lancedb_on_a_bucket_it_cannot_reach_fails_in_one_line_naming_the_settings(s3, monkeypatch, untrusted):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    store = LanceStore(s3.uri("lance"))
    with pytest.raises(StoreUnavailable) as info:
        store.probe()
    message = str(info.value)
    assert "\n" not in message and "cannot be opened or reached" in message and "AWS_SECRET_ACCESS_KEY" in message


def test_the_probe_runs_once_per_process_and_bucket_and_its_success_is_recorded_for_an_hour(s3, monkeypatch, untrusted):
    from agentmem_dagster.engine import objstore

    settings = S3Settings.from_env()
    assert not recently_verified(s3.uri("a"), settings)
    require_conditional_put(s3.uri("a"))
    assert recently_verified(s3.uri("a"), settings) and not recently_verified(s3.uri("a"), settings, ttl_s=0)
    assert s3.keys() == ["a/.agentmem-probe/verified"]  # the race's key is gone, the record stays

    # another process (here: this one, forgetting) trusts the record and races no writers
    monkeypatch.setattr(objstore, "_trusted", set())
    monkeypatch.setattr(objstore, "conditional_puts", lambda *a, **k: pytest.fail("probed again"))
    require_conditional_put(s3.uri("a"))
    # and this process trusts the bucket now: even keys that would fail are not tried again
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    require_conditional_put(s3.uri("b"))


# --------------------------------------------------------------------------- the store's contract


def test_writes_versions_and_rollback(lance_uri, embedder):
    store = LanceStore(lance_uri)
    first, second = embedded(embedder, 40, "a"), embedded(embedder, 30, "b")
    store.write(first, "run1")
    store.write(second, "run2")
    store.write(embedded(embedder, 10, "c", DAY2), "run2")
    assert store.versions([DAY]) == ["run1", "run2"]
    assert sorted(store.chunk_ids([DAY])) == sorted(first["chunk_id"].to_pylist() + second["chunk_id"].to_pylist())
    store.drop_versions([DAY], ["run1"])  # a failed run taken back
    assert store.versions([DAY]) == ["run2"] and sorted(store.chunk_ids([DAY])) == sorted(second["chunk_id"].to_pylist())
    assert store.count() == second.num_rows + 10

    # versions of the table: check out an older one, restore it as the latest
    table = store.table()
    before_drop = table.list_versions()[-2]["version"]
    table.checkout(before_drop)
    assert table.count_rows() == first.num_rows + second.num_rows + 10
    table.restore()
    assert LanceStore(lance_uri).count() == first.num_rows + second.num_rows + 10


def test_indexes_search_compaction_and_purge(lance_uri, embedder):
    store = LanceStore(lance_uri)
    rows = embedded(embedder, 400, "m")
    for start in range(0, rows.num_rows, 100):  # several fragments
        store.write(rows.slice(start, 100), "run1")
    report = store.maintain(vector_index_min_rows=300)
    assert set(report["created"]) == {"user_id", "agent_id", "session_id", "created_at_us", "day", "chunk_id", "text", "vector"}
    assert all(s["unindexed"] == 0 for s in report["indexes"].values()), report["indexes"]
    assert report["indexes"]["vector"]["type"] == "IVF_PQ" and report["indexes"]["text"]["type"] == "FTS"

    target = rows.filter(pa.compute.equal(rows["memory_id"], "m7"))
    vector = np.asarray(target["vector"][0].as_py(), dtype=np.float32)
    near, words = store.rankings(vector=vector, text="m memory number 7", where=scope_filter("u1"), limit=5)
    assert near[0]["memory_id"] == "m7" and len(near) == 5 and all(r["user_id"] == "u1" for r in near)
    assert words and all(r["user_id"] == "u1" for r in words)

    user0 = {r["chunk_id"] for r in rows.to_pylist() if r["user_id"] == "u0"}
    assert store.delete_where(scope_filter("u0")) == len(user0)
    outcome = store.purge()  # compaction materialising the deletes, indexes rebuilt, old versions gone
    assert outcome["fragments_rewritten"] >= 1
    table = store.table()
    assert len(table.list_versions()) == 1
    assert store.count() == rows.num_rows - len(user0) and not user0 & set(store.chunk_ids())
    assert {i["unindexed"] for i in store.index_status().values()} == {0}
    near, _ = store.rankings(vector=vector, text=None, where=scope_filter("u1"), limit=5)
    assert near[0]["memory_id"] == "m7"


def test_the_store_on_s3_writes_nothing_to_local_disk(s3, embedder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = LanceStore(s3.uri("lance"))
    store.write(embedded(embedder, 20, "x"), "run1")
    store.maintain()
    assert list(tmp_path.iterdir()) == []
    assert any(key.startswith("lance/memories.lance/_versions/") for key in s3.keys())


# --------------------------------------------------------------------------- concurrent writers


def _append(uri: str, writer: int, batches: int, rows: int, dim: int, start) -> None:
    start.wait()
    store = LanceStore(uri)
    for b in range(batches):
        ids = [f"w{writer}-{b}-{i}" for i in range(rows)]
        vectors = np.random.default_rng(writer * 1000 + b).random((rows, dim), dtype=np.float32)
        store.write(synthetic_chunks(ids, vectors), f"writer{writer}")


def synthetic_chunks(ids: list[str], vectors: np.ndarray) -> pa.Table:
    from agentmem_dagster.engine.chunking import CHUNK_SCHEMA

    n = len(ids)
    columns = {
        "chunk_id": ids, "memory_id": ids, "chunk_index": [0] * n, "text": ["t"] * n, "user_id": ["u"] * n,
        "agent_id": [None] * n, "session_id": [None] * n, "role": [None] * n,
        "created_at": [f"{DAY}T00:00:00Z"] * n, "created_at_us": [0] * n, "day": [DAY] * n,
    }
    table = pa.table({name: pa.array(values, CHUNK_SCHEMA.field(name).type) for name, values in columns.items()})
    dim = vectors.shape[1]
    return table.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim))


def test_four_processes_appending_to_one_s3_table_lose_nothing(s3):
    """Four processes, started together, each append 6 batches of 250 rows to one table on
    SeaweedFS (creating it when absent): every commit races the others for the next version,
    and the server's conditional PUT makes the losers retry on top. Not one row is lost."""
    uri, writers, batches, rows = s3.uri("lance"), 4, 6, 250
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(writers)
    processes = [context.Process(target=_append, args=(uri, w, batches, rows, 8, start)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    assert [p.exitcode for p in processes] == [0] * writers
    store = LanceStore(uri)
    ids = store.chunk_ids()
    expected = {f"w{w}-{b}-{i}" for w in range(writers) for b in range(batches) for i in range(rows)}
    assert len(ids) == len(expected) == writers * batches * rows and set(ids) == expected
    assert len(store.table().list_versions()) >= writers * batches  # a commit each, none overwritten
    assert "lance/.agentmem-create/memories" in s3.keys()  # one process claimed the creation


def test_staged_objects_behave_like_paths(s3):
    root = ObjectPath(s3.uri("staging"))
    path = root / "runs" / "r1" / "op.json"
    assert not path.exists() and path.name == "op.json" and path.parent == root / "runs" / "r1"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"a": 1}')
    assert path.exists() and path.is_file() and path.read_text() == '{"a": 1}'
    moved = path.replace(path.with_suffix(".txt"))
    assert not path.exists() and moved.read_text() == '{"a": 1}'
    assert [p.name for p in root.rglob("*.txt")] == ["op.txt"] and root.is_dir()
    (root / "runs").remove_tree()
    # pyarrow leaves an empty marker of the parent prefix, no object
    assert [key for key in s3.keys() if not key.endswith("/")] == [] and not list(root.rglob("*"))


def test_the_settings_come_from_the_usual_aws_variables(s3_server):
    settings = S3Settings.from_env({**s3_server.env(), "AWS_REGION": "eu-west-3"})
    assert settings.lance_options() == {
        "aws_region": "eu-west-3", "aws_endpoint": s3_server.endpoint, "aws_access_key_id": "agentmem",
        "aws_secret_access_key": s3_server.secret_key, "allow_http": "true",
    }
    aws = S3Settings.from_env({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})  # AWS S3 itself: https only
    assert "allow_http" not in aws.lance_options() and "aws_endpoint" not in aws.lance_options()


def test_s3server_cli_prints_exports_and_stop_leaves_nothing_running(tmp_path):
    out = subprocess.run([sys.executable, "tests/s3server.py", "start", str(tmp_path)], capture_output=True, text=True, check=True)
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:") and env["AGENTMEM_S3_BUCKET"] == "agentmem"
    from tests import s3server

    server = s3server.load(tmp_path)
    assert server.alive()
    db = lancedb.connect("s3://agentmem/cli", storage_options=S3Settings.from_env(env).lance_options())
    assert db.list_tables().tables == []
    subprocess.run([sys.executable, "tests/s3server.py", "stop", str(tmp_path)], check=True)
    assert not server.alive()


# --------------------------------------------------------------------------- op outputs in object storage

RUN_MULTIPROCESS = """
import json, sys
import dagster as dg
from agentmem_dagster.cli import ingest_job
from agentmem_dagster.engine.settings import Settings
from agentmem_dagster.runs import plan_runs

settings = Settings.from_env()
with dg.DagsterInstance.get() as instance:
    (plan,) = plan_runs(instance, settings.landing, sys.argv[1:])
    result = dg.execute_job(
        dg.reconstructable(ingest_job), instance=instance, tags=plan.tags, raise_on_error=False,
        run_config={**plan.run_config, "execution": {"config": {"in_process": False}}},  # a process per step
    )
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    print(json.dumps({"success": result.success, "run_id": result.run_id, "steps": sorted(steps)}))
"""


def test_a_multiprocess_run_with_staging_and_lancedb_on_s3_leaves_no_staged_file_on_disk(agentmem_home, s3, tmp_path, monkeypatch):
    from agentmem_dagster.engine.lifecycle import Scope, scrub_staging
    from agentmem_dagster.engine.memory import MemoryEngine
    from agentmem_dagster.engine.parquet import read_table
    from agentmem_dagster.engine.settings import Settings
    from agentmem_dagster.resources.staging import drop_run_outputs
    from tests.conftest import memory, write_landing

    monkeypatch.setenv("AGENTMEM_STAGING_URI", s3.uri("staging"))
    monkeypatch.setenv("AGENTMEM_LANCEDB_URI", s3.uri("lancedb"))
    days = [DAY, DAY2]
    for day in days:
        write_landing(agentmem_home / "landing", day, [
            memory(f"{day}-{i}", f"u{i % 2}", f"note {i} of {day}: the invoices move to the new cluster", day)
            for i in range(30)
        ])
    proc = subprocess.run([sys.executable, "-c", RUN_MULTIPROCESS, *days], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["success"], proc.stderr[-3000:]
    assert {"raw_memories", "write_lancedb", "write_libsql"} <= {s.split(".")[-1].split("[")[0] for s in out["steps"]}

    engine = MemoryEngine.from_env()
    try:
        assert engine.stats(days)["memories"] == 60
        assert sorted(engine.lance.chunk_ids(days)) == sorted(engine.libsql.chunk_ids(days)) and len(engine.lance.chunk_ids(days)) == 60
    finally:
        engine.close()

    # every staged file and op output is in the bucket, none on local disk
    keys = s3.keys("staging")
    for asset in ("raw_memories", "memory_embeddings"):
        assert {f"staging/{asset}/{day}.parquet" for day in days} <= set(keys)
    assert any(k.startswith(f"staging/runs/{out['run_id']}/") and k.endswith(".json") for k in keys)
    local = [p for p in tmp_path.rglob("*") if p.is_file() and (p.suffix in (".parquet", ".json") or "staging" in p.parts)]
    assert local == []
    assert not (agentmem_home / "staging").exists()

    # forget scrubs the staged files in the bucket; a finished run's op outputs are dropped from it
    settings = Settings.from_env()
    assert scrub_staging(settings.staging, Scope("u0"))["files"] == 2 * len(days)
    remaining = read_table(settings.staging / "raw_memories" / f"{DAY}.parquet")
    assert remaining.num_rows == 15 and set(remaining["user_id"].to_pylist()) == {"u1"}
    drop_run_outputs(str(settings.staging), out["run_id"])
    assert not [k for k in s3.keys("staging") if k.startswith(f"staging/runs/{out['run_id']}/") and not k.endswith("/")]


def test_agentmem_ingest_search_stats_and_forget_with_both_on_s3(agentmem_home, s3, monkeypatch):
    """What a user does against the cluster's object store, as commands in their own processes."""
    from tests.conftest import memory, write_landing
    from tests.test_cli import run

    monkeypatch.setenv("AGENTMEM_STAGING_URI", s3.uri("staging"))
    monkeypatch.setenv("AGENTMEM_LANCEDB_URI", s3.uri("lancedb"))
    write_landing(agentmem_home / "landing", DAY, [
        memory("a1", "u_ann", "Ann's cat is called Miso and loves tuna", DAY),
        memory("b1", "u_ben", "Ben's cat is called Pixel and loves tuna", DAY),
    ])
    out = json.loads(run("ingest", "--partition", DAY, "--json").stdout)
    assert (out["status"], out["memories"], out["lancedb_rows"], out["libsql_rows"]) == ("SUCCESS", 2, 2, 2)
    hits = json.loads(run("search", "cat tuna", "--user", "u_ann", "--json").stdout)
    assert [h["memory_id"] for h in hits] == ["a1"]
    stats = json.loads(run("stats", "--json").stdout)
    assert (stats["memories"], stats["lancedb_rows"], stats["consistent"]) == (2, 2, True)
    keys = s3.keys()
    assert f"staging/raw_memories/{DAY}.parquet" in keys and any(k.startswith("lancedb/memories") for k in keys)
    assert not any(k.startswith(f"staging/runs/{out['run_id']}/") and not k.endswith("/") for k in keys)  # cleaned up

    gone = json.loads(run("forget", "--user", "u_ann", "--json").stdout)
    assert gone["memories"] == 1
    assert json.loads(run("search", "cat tuna", "--user", "u_ann", "--json").stdout) == []
    from agentmem_dagster.engine.objstore import ObjectPath
    from agentmem_dagster.engine.parquet import read_table

    staged = read_table(ObjectPath(s3.uri("staging", "raw_memories", f"{DAY}.parquet")))
    assert staged["user_id"].to_pylist() == ["u_ben"]  # scrubbed in the bucket
    assert not (agentmem_home / "staging").exists() and not (agentmem_home / "lancedb").exists()


@pytest.mark.parametrize("value", ["gs://bucket/staging", "s3://", "s3:///no-bucket"])
def test_a_staging_uri_that_is_neither_a_directory_nor_s3_is_refused_in_one_line(agentmem_home, monkeypatch, value):
    from tests.test_cli import run

    monkeypatch.setenv("AGENTMEM_STAGING_URI", value)
    proc = run("stats", "--json", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "AGENTMEM_STAGING_URI" in proc.stderr and "Traceback" not in proc.stderr
