"""The memory lifecycle on real stores: versions and history, expiry, forget, tombstones."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from agentmem_dagster.assets import ASSETS, CHECKS
from agentmem_dagster.cli import main
from agentmem_dagster.definitions import build_resources
from agentmem_dagster.engine.lifecycle import iso, now_us
from agentmem_dagster.engine.memory import MemoryEngine
from agentmem_dagster.engine.search import search
from agentmem_dagster.engine.settings import Settings

from .conftest import instance_with_days, memory, write_landing

EARLY, LATE = "2024-05-01", "2024-05-09"


def materialize(day: str, selection=None):
    # on DAGSTER_HOME's instance: Dagster's records are in the home that the forget test greps
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            selection or (ASSETS + CHECKS), partition_key=day, resources=build_resources(Settings.from_env()),
            instance=instance_with_days(day, instance=instance),
        )
    assert result.success
    return result


@pytest.fixture(params=["libsql", "postgres"])
def engine(request, agentmem_home, tmp_path, monkeypatch):
    """The engine on each system of record: the default LibSQL file, or a PostgreSQL database
    (AGENTMEM_DATABASE_URL), for the Dagster runs, the CLI and the engine alike."""
    if request.param == "postgres":
        monkeypatch.setenv("AGENTMEM_DATABASE_URL", request.getfixturevalue("postgres_url"))
    # Dagster's records inside the home too: the forget test greps all of it
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    engine = MemoryEngine.from_env()
    yield engine
    engine.close()


def _search(engine, query, user, **kwargs):
    return search(engine.embedder, engine.lance, engine.libsql, query, user_id=user, **kwargs).hits


def _cli_json(capsys, *argv) -> tuple[int, object]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


# --------------------------------------------------------------------------- versions


def test_the_newest_created_at_wins_whatever_the_run_order(engine, capsys):
    landing = engine.settings.landing
    write_landing(landing, EARLY, [
        memory("home-1", "u_h", "I live in Lisbon, near the river.", EARLY, metadata={"source": "chat", "mood": "calm"}),
        memory("pet-1", "u_h", "My cat is called Miso.", EARLY),
    ])
    write_landing(landing, LATE, [
        memory("home-1", "u_h", "I moved to Porto last week.", LATE, metadata={"source": "email"}),
    ])
    materialize(LATE)  # the later day first
    early = materialize(EARLY)
    # the check counts what search can return from the day: Lisbon is history, the cat is current
    (check,) = [e for e in early.get_asset_check_evaluations() if e.check_name == "stores_consistent"]
    assert check.passed
    assert (check.metadata["current_memories"].value, check.metadata["stored_versions"].value) == (1, 2)

    for mode in ("hybrid", "vector", "text"):
        hits = _search(engine, "where do I live? Lisbon or Porto", "u_h", mode=mode)
        homes = [hit for hit in hits if hit.memory_id == "home-1"]
        assert [hit.content for hit in homes] == ["I moved to Porto last week."], mode
        assert homes[0].metadata == {"source": "email"}  # a version's metadata is its own, never merged
    # a query only the old version matches finds nothing of it
    assert all(hit.memory_id != "home-1" for hit in _search(engine, "Lisbon river", "u_h", mode="text"))

    code, versions = _cli_json(capsys, "history", "home-1", "--user", "u_h")
    assert code == 0
    assert [(v["content"], v["day"], v["current"]) for v in versions] == [
        ("I live in Lisbon, near the river.", EARLY, False),
        ("I moved to Porto last week.", LATE, True),
    ]
    assert versions[0]["metadata"] == {"source": "chat", "mood": "calm"}

    stats = engine.stats()
    assert (stats["memories"], stats["versions"], stats["consistent"]) == (2, 3, True)

    late = materialize(LATE)  # re-running either day changes nothing
    (check,) = [e for e in late.get_asset_check_evaluations() if e.check_name == "stores_consistent"]
    assert (check.metadata["current_memories"].value, check.metadata["stored_versions"].value) == (1, 1)
    assert [h.content for h in _search(engine, "where do I live", "u_h") if h.memory_id == "home-1"] == [
        "I moved to Porto last week."
    ]


def test_history_of_an_unknown_memory_is_a_one_line_error(engine, capsys):
    assert main(["history", "nope", "--user", "u_h", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "agentmem: no memory 'nope' for user 'u_h'"


# --------------------------------------------------------------------------- expiry


def test_expired_memories_are_never_returned_and_retention_removes_them(engine):
    from agentmem_dagster.assets.lifecycle import memory_retention

    landing = engine.settings.landing
    past, future = iso(now_us() - 3_600_000_000), iso(now_us() + 86_400_000_000 * 365)
    write_landing(landing, EARLY, [
        memory("gone", "u_e", "The door code is 4711 until the holidays.", EARLY, expires_at=past),
        memory("kept", "u_e", "The door code of the garage is 9876.", EARLY, expires_at=future),
        memory("plain", "u_e", "The door is painted green.", EARLY),
        # its current version has expired: neither version may be shown
        memory("promo", "u_e", "The promo code is SPRING.", EARLY),
    ])
    write_landing(landing, LATE, [memory("promo", "u_e", "The promo code is SUMMER.", LATE, expires_at=past)])
    materialize(EARLY)
    late = materialize(LATE)
    # the day's one version is current but expired: nothing of the day can be returned
    (check,) = [e for e in late.get_asset_check_evaluations() if e.check_name == "stores_consistent"]
    assert (check.metadata["current_memories"].value, check.metadata["stored_versions"].value) == (0, 1)

    for mode in ("hybrid", "vector", "text"):
        ids = {hit.memory_id for hit in _search(engine, "door code promo code", "u_e", mode=mode)}
        assert ids == {"kept", "plain"}, mode
    assert engine.stats()["memories"] == 2
    chunks_before = engine.stats()["chunks"]

    result = dg.materialize([memory_retention], resources=build_resources(Settings.from_env()))
    assert result.success
    meta = result.asset_materializations_for_node("memory_retention")[0].metadata
    assert meta["expired_memories"].value == 2 and meta["versions"].value == 3
    assert meta["chunks"].value == meta["lancedb_rows"].value == 3
    stats = engine.stats()
    assert (stats["versions"], stats["chunks"], stats["consistent"]) == (2, chunks_before - 3, True)
    assert sorted(set(engine.lance.chunk_ids())) == ["kept#0", "plain#0"]
    assert {hit.memory_id for hit in _search(engine, "door code promo code", "u_e")} == {"kept", "plain"}


def test_a_bad_expires_at_is_quarantined(engine):
    write_landing(engine.settings.landing, EARLY, [memory("x", "u_e", "text", EARLY, expires_at="next tuesday")])
    materialize(EARLY)
    [bad] = engine.libsql.quarantine()
    assert bad["reason"].startswith("invalid_timestamp: expires_at")


# --------------------------------------------------------------------------- forget

SECRETS = [f"Zanzibarsecret{i} my bank PIN is {7000 + i} and my locker is {i}" for i in range(6)]


def _grep(root: Path, needles: list[bytes], skip: Path | None = None) -> list[str]:
    """Every file under `root` (but `skip`, the landing zone: the input, left untouched) whose
    bytes hold one of `needles`."""
    found = []
    for path in root.rglob("*"):
        if skip is not None and path.is_relative_to(skip):
            continue
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return found


def test_forget_leaves_no_byte_behind_and_a_rerun_does_not_bring_them_back(engine, capsys, tmp_path):
    landing = engine.settings.landing
    early = [memory(f"s{i}", "u_gone", SECRETS[i], EARLY) for i in range(3)]
    early += [memory(f"b{i}", "u_bob", f"Bob's note {i}: the bike needs oil", EARLY) for i in range(5)]
    early.append(json.dumps({"user_id": "u_gone", "content": SECRETS[5], "created_at": "not a time"}))
    late = [memory(f"s{i}", "u_gone", SECRETS[i], LATE) for i in range(3, 5)]
    late += [memory("s0", "u_gone", SECRETS[0] + " (updated)", LATE)]  # a second version
    late += [memory(f"c{i}", "u_bob", f"Bob's chess opening {i}", LATE) for i in range(4)]
    write_landing(landing, EARLY, early)
    write_landing(landing, LATE, late)
    materialize(EARLY)
    materialize(LATE)
    materialize(EARLY)  # a re-run: an older version of the day's rows was dropped (free pages, old Lance versions)
    assert len(_search(engine, "bank PIN locker", "u_gone")) == 5
    home, dagster_home = engine.settings.home, Path(os.environ["DAGSTER_HOME"])
    needles = [s.encode() for s in SECRETS] + [b"Zanzibarsecret", b"zanzibarsecret"]
    assert _grep(home, needles, landing)  # the test can fail: the texts are there before

    code, report = _cli_json(capsys, "forget", "--user", "u_gone")
    assert code == 0
    assert (report["memories"], report["versions"], report["quarantined_lines"]) == (5, 6, 1)
    assert report["chunks"] == report["lancedb_rows"] == 6 and report["seconds"] >= 0
    assert _grep(home, needles, landing) == [] and _grep(dagster_home, needles) == []

    assert _search(engine, "bank PIN locker", "u_gone") == []
    assert len(_search(engine, "bike oil chess", "u_bob", k=20)) == 9  # others untouched
    assert engine.stats()["consistent"]

    # re-runs from the untouched landing zone: the tombstone keeps them out
    later = iso(now_us() + 86_400_000_000)
    write_landing(landing, LATE, [memory("new-1", "u_gone", "I came back and like tea now.", LATE, created_at=later)], name="z.jsonl")
    result = materialize(EARLY)
    assert result.asset_materializations_for_node("raw_memories")[0].metadata["forgotten"].value == 4
    materialize(LATE)
    assert _grep(home, needles, landing) == []
    assert [hit.memory_id for hit in _search(engine, "bank PIN locker tea", "u_gone")] == ["new-1"]  # after the erasure: kept
    assert engine.libsql.quarantine() == []
    assert engine.stats()["memories"] == 10


def test_forget_of_an_unknown_user_is_an_empty_result(engine, capsys):
    write_landing(engine.settings.landing, EARLY, [memory("b0", "u_bob", "Bob likes chess", EARLY)])
    materialize(EARLY)
    code, report = _cli_json(capsys, "forget", "--user", "nobody")
    assert code == 0
    assert (report["memories"], report["chunks"], report["lancedb_rows"]) == (0, 0, 0)
    assert [hit.memory_id for hit in _search(engine, "chess", "u_bob")] == ["b0"]


def test_forget_one_session_as_a_dagster_job(engine):
    from agentmem_dagster.assets.lifecycle import forget_job

    write_landing(engine.settings.landing, EARLY, [
        memory("a", "u_s", "Session one: planning the trip to Kyoto", EARLY, session_id="s1"),
        memory("b", "u_s", "Session two: planning the trip to Osaka", EARLY, session_id="s2"),
    ])
    materialize(EARLY)
    defs = dg.Definitions(jobs=[forget_job], resources=build_resources(Settings.from_env()))
    job = defs.resolve_job_def("forget_memories")
    result = job.execute_in_process(
        run_config={"ops": {"forget_memories_op": {"config": {"user_id": "u_s", "session_id": "s1"}}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["memories"].value == 1
    assert [hit.memory_id for hit in _search(engine, "planning the trip", "u_s")] == ["b"]
    assert engine.libsql.tombstones()[0]["session_id"] == "s1"


# --------------------------------------------------------------------------- model identity and migration


def test_a_model_is_its_name_and_its_weights(tmp_path, static_model):
    import shutil

    from agentmem_dagster.engine.embedding import Embedder, model_identity

    name, path = static_model
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    same = model_identity(name, str(copy))
    assert same.key == Embedder(name, path).model_key and same.key.startswith(name + "@")
    with (copy / "config.json").open("a") as f:
        f.write("\n")  # other weights (files) under the same name
    (copy / "config.json").touch()
    assert model_identity(name, str(copy)).key != same.key


def test_a_new_model_builds_a_new_index_and_search_moves_only_when_every_day_is_in_it(engine, onnx_model, monkeypatch):
    landing = engine.settings.landing
    write_landing(landing, EARLY, [memory("home-1", "u_m", "I live in Lisbon, near the river.", EARLY)])
    write_landing(landing, LATE, [memory("cat-1", "u_m", "My cat is called Miso and sleeps all day.", LATE)])
    materialize(EARLY)
    materialize(LATE)
    static_key = engine.embedder.model_key
    assert engine.stats()["model"] == static_key and engine.stats()["dim"] == 256

    monkeypatch.setenv("AGENTMEM_EMBED_MODEL", onnx_model[0])
    monkeypatch.setenv("AGENTMEM_EMBED_MODEL_PATH", onnx_model[1])
    materialize(EARLY)  # one of two days in the new model's index
    migrating = MemoryEngine.from_env()
    try:
        tables = migrating.lance.tables()
        assert [(t["model"], t["dim"]) for t in tables] == [(static_key, 256), (migrating.embedder.model_key, 384)]
        stats = migrating.stats()
        assert (stats["model"], stats["dim"], stats["migrating"]) == (static_key, 256, True)
        # searching keeps working, from the old index, with the old model
        assert [h.memory_id for h in _search(migrating, "what is my cat called?", "u_m", mode="vector")][0] == "cat-1"
        assert [h.memory_id for h in _search(migrating, "where do I live?", "u_m", mode="vector")][0] == "home-1"

        materialize(LATE)  # every day in it: searches move, the old index is dropped
        stats = migrating.stats()
        assert (stats["model"], stats["dim"], stats["migrating"], stats["consistent"]) == (
            migrating.embedder.model_key, 384, False, True
        )
        assert [t["dim"] for t in migrating.lance.tables()] == [384]
        fresh = MemoryEngine.from_env()
        try:
            assert [h.memory_id for h in _search(fresh, "what is my cat called?", "u_m", mode="vector")][0] == "cat-1"
        finally:
            fresh.close()
        with migrating.libsql.pool.connection() as conn:
            models = {row[0] for row in conn.execute("SELECT DISTINCT model FROM embedding_cache").fetchall()}
        assert models == {static_key, migrating.embedder.model_key}  # cache keyed by name and weights
    finally:
        migrating.close()


def test_forget_while_an_ingestion_writes_waits_then_fails_clearly_and_removes_nothing(engine, capsys):
    write_landing(engine.settings.landing, EARLY, [memory("a", "u_w", "Walter waters the plants", EARLY)])
    materialize(EARLY)
    assert engine.libsql.try_lease([EARLY], "run-x", "run-x:libsql", ttl=60) == []  # a run still writing
    capsys.readouterr()
    assert main(["forget", "--user", "u_w", "--wait", "0.3"]) == 1
    waited, failed = capsys.readouterr().err.strip().split("\n")
    assert waited == "agentmem: waiting for ingestion run-x (day 2024-05-01) to finish"
    assert failed.startswith("agentmem: ingestion run-x is still writing day 2024-05-01 after 0.3s")
    assert engine.stats()["memories"] == 1 and engine.stats()["consistent"]  # nothing removed, stores agree
    engine.libsql.release_lease([EARLY], "run-x:libsql")
    code, report = _cli_json(capsys, "forget", "--user", "u_w")
    assert (code, report["memories"]) == (0, 1)
    assert engine.stats()["memories"] == 0


def test_a_table_made_before_models_were_recorded_migrates_too(tmp_path, static_model, onnx_model):
    """The issue's case: a store built by the static model before the index recorded its model,
    then days re-run with MiniLM: no "cannot cast field 'vector'", a new table beside it."""

    from agentmem_dagster.engine.embedding import Embedder
    from agentmem_dagster.engine.ingest import ingest
    from agentmem_dagster.engine.lance_store import LanceStore
    from agentmem_dagster.engine.libsql_store import LibsqlPool, LibsqlStore
    from agentmem_dagster.engine.records import read_landing_day

    landing = tmp_path / "landing"
    write_landing(landing, EARLY, [memory("a", "u_l", "The boat is moored in Lagos.", EARLY)])
    memories = read_landing_day(landing, EARLY).memories
    libsql = LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    uri = str(tmp_path / "lance")
    static = Embedder(*static_model)
    ingest(memories, embedder=static, lance=LanceStore(uri), libsql=libsql, days=[EARLY])  # no model recorded

    onnx = Embedder(*onnx_model)
    lance = LanceStore(uri, model=onnx.identity)
    assert lance.versions([EARLY])  # read from the old table first, as a writer's begin() does
    ingest(memories, embedder=onnx, lance=lance, libsql=libsql, days=[EARLY])
    assert [(t["model"], t["dim"]) for t in lance.tables()] == [(None, 256), (onnx.model_key, 384)]
    assert lance.retire_tables(libsql.days())["dropped"] == ["memories"]
    hits = search(onnx, LanceStore(uri, model=onnx.identity), libsql, "where is the boat?", user_id="u_l").hits
    assert [h.memory_id for h in hits] == ["a"]
    libsql.pool.close()
