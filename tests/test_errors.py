"""Clear failures: a missing model, an unreachable LanceDB URI, a read-only, locked or full LibSQL
database or disk each fail the run with a message naming the cause and the setting to change,
and leave both stores as they were. Real processes and stores; a tmpfs mount (remounted
read-only, or filled up) where a read-only or full disk is needed: those tests need root (or
CAP_SYS_ADMIN) to mount, and skip, saying so, where mounting is not permitted; they are on
tests/allowed_skips.toml, and .ci/run (AGENTMEM_STRICT_SKIPS=1) fails when they skip."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from agentmem_dagster.assets import ASSETS, CHECKS
from agentmem_dagster.console import error_text
from agentmem_dagster.definitions import build_resources
from agentmem_dagster.engine.chunking import chunk_memories, with_vectors
from agentmem_dagster.engine.embedding import Embedder
from agentmem_dagster.engine.errors import StoreUnavailable
from agentmem_dagster.engine.ingest import batches_from_embedded, ingest
from agentmem_dagster.engine.lance_store import LanceStore
from agentmem_dagster.engine.libsql_store import LibsqlPool, LibsqlStore
from agentmem_dagster.engine.memory import MemoryEngine
from agentmem_dagster.engine.records import read_landing_day
from agentmem_dagster.engine.settings import Settings
from agentmem_dagster.engine.writer import FanOutWriter, LanceSink, LibsqlSink
from agentmem_dagster.resources import EmbedderResource, LibSQLResource

from .conftest import instance_with_days, memory, write_landing
from .test_writer import memories as memory_table

AGENTMEM = str(Path(sys.executable).parent / "agentmem")
OLD_DAY, NEW_DAY = "2024-06-01", "2024-06-02"


@pytest.fixture
def mount(tmp_path):
    """Mount a tmpfs of `size` at a path (unmounted at the end), or skip where not permitted."""
    mounted = []

    def mount_tmpfs(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"needs root (or CAP_SYS_ADMIN) to mount a tmpfs: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount_tmpfs
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Take all but `leave` bytes of the disk's free space."""
    (disk / "filler").write_bytes(bytes(max(0, shutil.disk_usage(disk).free - leave)))


def landed(day: str, n: int) -> list:
    return [memory(f"{day}-{i}", f"u{i % 3}", f"memory {i} of {day}: " + "the river walk " * (i % 20), day)
            for i in range(n)] + ["not json"]


def populate(settings: Settings, day: str, n: int) -> None:
    """The stores hold `day` (memories, chunks, quarantine) before the failing run."""
    write_landing(settings.landing, day, landed(day, n))
    landing = read_landing_day(settings.landing, day)
    engine = MemoryEngine(settings)
    ingest(landing.memories, embedder=engine.embedder, lance=engine.lance, libsql=engine.libsql, days=[day])
    engine.libsql.replace_quarantine([day], landing.quarantine)
    engine.close()


def contents(settings: Settings) -> dict:
    """What both stores hold: LibSQL's row counts, and the chunk ids on each side."""
    engine = MemoryEngine(settings)
    try:
        return {**engine.libsql.counts(), "lancedb_rows": engine.lance.count(),
                "lancedb_ids": sorted(engine.lance.chunk_ids()), "libsql_ids": sorted(engine.libsql.chunk_ids())}
    finally:
        engine.close()


def failing_ingest(day: str, env: dict) -> tuple[dict, str]:
    """`agentmem ingest` of `day` in a real process, which must fail: its JSON and stderr."""
    proc = subprocess.run([AGENTMEM, "ingest", "--partition", day, "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Stack Trace" not in proc.stderr, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "FAILURE"
    # before any write: in raw_memories' checks, or in setting up the stores for the run
    assert any(f"agentmem: {where} failed: {out['error']}" in proc.stderr for where in ("step raw_memories", "resource setup"))
    return out, proc.stderr


def test_an_unreachable_lancedb_uri_fails_the_run_naming_the_setting(agentmem_home):
    settings = Settings.from_env()
    populate(settings, OLD_DAY, 30)
    before = contents(settings)
    write_landing(settings.landing, NEW_DAY, landed(NEW_DAY, 30))
    (agentmem_home / "a-file").write_text("not a directory")

    env = {"AGENTMEM_LANCEDB_URI": str(agentmem_home / "a-file" / "lancedb")}
    out, _ = failing_ingest(NEW_DAY, env)
    assert "cannot be opened or reached" in out["error"] and "AGENTMEM_LANCEDB_URI" in out["error"]
    assert contents(settings) == before

    stats = subprocess.run([AGENTMEM, "stats", "--json"], capture_output=True, text=True, env={**os.environ, **env})
    assert (stats.returncode, stats.stdout) == (1, "")
    assert f"agentmem: {out['error']}" in stats.stderr and "Traceback" not in stats.stderr


def test_an_object_store_that_cannot_be_reached_names_the_setting(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StoreUnavailable, match="s3://agentmem/lancedb' cannot be opened or reached.*AGENTMEM_LANCEDB_URI"):
        LanceStore("s3://agentmem/lancedb").probe()


def test_a_read_only_libsql_database_fails_the_run_naming_the_setting(agentmem_home, mount, monkeypatch):
    disk = mount(agentmem_home.parent / "libsql-disk", "16m")
    monkeypatch.setenv("AGENTMEM_LIBSQL_URL", str(disk / "memories.db"))  # the older name, still accepted
    settings = Settings.from_env()
    populate(settings, OLD_DAY, 30)
    before = contents(settings)
    write_landing(settings.landing, NEW_DAY, landed(NEW_DAY, 30))

    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    out, _ = failing_ingest(NEW_DAY, {})
    assert "is read-only" in out["error"] and "AGENTMEM_DATABASE_URL" in out["error"]
    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert contents(settings) == before


def test_a_full_disk_fails_the_run_before_any_write_naming_the_setting(agentmem_home, mount):
    mount(agentmem_home, "16m")  # the embedded default: landing, staging and both stores on it
    settings = Settings.from_env()
    populate(settings, OLD_DAY, 30)
    write_landing(settings.landing, NEW_DAY, landed(NEW_DAY, 600))
    before = contents(settings)
    fill(agentmem_home, leave=1_000_000)  # the new day needs a few MB

    out, _ = failing_ingest(NEW_DAY, {})
    assert "no space left" in out["error"] and "AGENTMEM_HOME" in out["error"]
    assert contents(settings) == before


@pytest.mark.parametrize("cause", ["locked", "missing model"])
def test_a_locked_database_or_a_missing_model_fails_the_run_before_any_write(agentmem_home, tmp_path, cause):
    """In process, so that the LibSQL busy timeout can be short; the lock is held by another
    process for longer than the busy timeout and every retry."""
    settings = Settings.from_env()
    populate(settings, OLD_DAY, 30)
    write_landing(settings.landing, NEW_DAY, landed(NEW_DAY, 30))
    before = contents(settings)
    resources = build_resources(settings)
    locker = None
    if cause == "locked":
        resources["libsql"] = LibSQLResource(url=settings.libsql_url, busy_timeout_ms=100)
        locker = subprocess.Popen([sys.executable, "-c", (
            "import sys, time, libsql\n"
            "c = libsql.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); c.execute('DELETE FROM day_leases')\n"
            "print('locked', flush=True); time.sleep(600)"), settings.libsql_url], stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
    else:
        resources["embedder"] = EmbedderResource(model=settings.embed_model, model_path=str(tmp_path / "no-model"))
    try:
        result = dg.materialize(ASSETS + CHECKS, partition_key=NEW_DAY, resources=resources, raise_on_error=False,
                                instance=instance_with_days(NEW_DAY))
    finally:
        if locker:
            locker.kill()
            locker.wait()
    assert not result.success
    failures = [(e.step_key, error_text(e.step_failure_data.error)) for e in result.all_events if e.is_step_failure]
    assert [step for step, _ in failures] == ["raw_memories"]
    message = failures[0][1]
    if cause == "locked":
        assert "failed after 6 attempt(s)" in message and "is locked by another connection" in message
        assert "AGENTMEM_DATABASE_URL" in message
    else:
        assert "no-model" in message and "AGENTMEM_EMBED_MODEL_PATH" in message
    assert contents(settings) == before


def _state(lance: LanceStore, libsql: LibsqlStore) -> tuple:
    return sorted(lance.chunk_ids()), sorted(libsql.chunk_ids()), libsql.counts(), lance.versions([NEW_DAY])


@pytest.mark.parametrize("store", ["lancedb", "libsql"])
def test_a_disk_that_fills_up_during_the_writes_is_explained_and_the_run_taken_back(
    tmp_path, mount, static_model, store
):
    """The writer itself meeting a full disk part-way through a day (no preflight): the
    library's error becomes one naming the setting, and the batches already written come out
    of both stores again. Only SQLite cannot delete on a full disk (a delete appends to its
    log too): then the error says so and the next run of the day, once there is room again,
    removes them."""
    disk = mount(tmp_path / "disk", "4m")
    roomy = tmp_path / "roomy"
    embedder = Embedder(*static_model)
    lance = LanceStore(str((disk if store == "lancedb" else roomy) / "lancedb"))
    libsql = LibsqlStore(LibsqlPool(str((disk if store == "libsql" else roomy) / "m.db")))
    ingest(memory_table(20, "old", OLD_DAY), embedder=embedder, lance=lance, libsql=libsql, days=[OLD_DAY])
    ingest(memory_table(30, "older", NEW_DAY), embedder=embedder, lance=lance, libsql=libsql, days=[NEW_DAY])
    before = _state(lance, libsql)

    new = memory_table(6000, "new", NEW_DAY)
    chunks = chunk_memories(new, embedder.tokenizer, 256)
    embedded = with_vectors(chunks, embedder.embed(chunks["text"].to_pylist()))
    fill(disk, leave={"lancedb": 1_200_000, "libsql": 2_000_000}[store])  # room for a few batches, not the day
    written = []
    sinks = [LanceSink(lance, [NEW_DAY], "run2"), LibsqlSink(libsql, [NEW_DAY], "run2")]
    setting = {"lancedb": "AGENTMEM_LANCEDB_URI", "libsql": "AGENTMEM_DATABASE_URL"}[store]
    with pytest.raises(StoreUnavailable, match=f"batch \\d+ to {store} failed after 1 attempt.*no space left.*{setting}") as failed:
        FanOutWriter(sinks, on_batch=written.append).run(batches_from_embedded(new, embedded, 500))
    assert written, "no batch was written before the disk filled: the test proves nothing"
    if store == "lancedb":
        assert _state(lance, libsql) == before
    else:
        [note] = failed.value.__notes__
        assert note.startswith("removing this run's rows from libsql failed after 1 attempt(s): LibSQL database")
        assert note.endswith("has no space left on its disk (database or disk is full): free space there, or set "
                             "AGENTMEM_DATABASE_URL (or AGENTMEM_HOME) to a disk with room.; the next run of these days removes them")
        assert sorted(lance.chunk_ids()) == before[0]
        (disk / "filler").unlink()
        ingest(memory_table(30, "older", NEW_DAY), embedder=embedder, lance=lance, libsql=libsql, days=[NEW_DAY])
        assert _state(lance, libsql)[:3] == before[:3]
    libsql.pool.close()
