"""The system-of-record contract, held against both adapters (LibSQL file, PostgreSQL server):
versions and rollback, leases, staged quarantine, the embedding cache, search hydration,
lifecycle; then the URL that chooses between them, and how each adapter classifies errors."""

import contextlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from agentmem_dagster.engine.errors import StoreError, StoreUnavailable, TerminalStoreError, TransientStoreError
from agentmem_dagster.engine.libsql_store import LibsqlStore
from agentmem_dagster.engine.postgres_store import PostgresStore
from agentmem_dagster.engine.record_store import BadDatabaseUrl, SystemOfRecord, open_store, redacted, store_kind
from agentmem_dagster.engine.records import MEMORY_SCHEMA, QuarantineRecord
from agentmem_dagster.engine.writer import is_transient

from .conftest import new_postgres_database, private_postgres

DAY, DAY2 = "2024-06-01", "2024-06-02"
US = 1717243200000000
TEXTS = [
    "plain words", "emoji 🧠🙂‍↔️ 🇵🇹", "中文记忆：我对花生过敏。", "NUL inside\x00the text", "quote ' and \" and \\",
    "\\x41 \\000 \\N \\. tab\there\nnewline\r\nend \\", "\\.", "\\N", "\\x00ff",
]


def memories(n: int, prefix: str = "m", day: str = DAY, user=lambda i: f"u{i % 3}", **overrides) -> pa.Table:
    rows = [
        {
            "memory_id": f"{prefix}{i}", "user_id": user(i), "agent_id": f"a{i % 2}", "session_id": f"s{i % 2}",
            "role": "user", "content": f"{prefix} {TEXTS[i % len(TEXTS)]} number {i}",
            "created_at": f"{day}T12:00:00.000000Z", "created_at_us": US + i, "metadata": json.dumps({"i": i, "k": "v"}),
            "content_hash": f"{i:064d}", "day": day, "source_file": "f.jsonl", "source_line": i + 1,
            **{k: (v(i) if callable(v) else v) for k, v in overrides.items()},
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=MEMORY_SCHEMA)


def _chunks(table: pa.Table) -> pa.Table:
    """One chunk per memory (chunk ids memory_id#0), text hash = content hash."""
    rows = table.to_pylist()
    return pa.Table.from_pylist([
        {"chunk_id": f"{r['memory_id']}#0", "memory_id": r["memory_id"], "chunk_index": 0, "chunk_count": 1,
         "text": r["content"], "text_hash": r["content_hash"], "user_id": r["user_id"], "day": r["day"]}
        for r in rows
    ])


def write(store, table: pa.Table, ingest_id: str) -> int:
    return store.write(table, _chunks(table), ingest_id)


def commit(store, days, ingest_id):
    replaces = [v for v in store.versions(days) if v != ingest_id]
    store.commit_days(days, ingest_id, replaces)


@pytest.fixture
def store(database_url):
    store = open_store(database_url, pool_size=3)
    yield store
    store.close()


def test_the_url_chooses_the_adapter_and_both_are_the_interface(store, database_url):
    assert isinstance(store, SystemOfRecord)
    expected = PostgresStore if database_url.startswith("postgresql://") else LibsqlStore
    assert type(store) is expected and store.url == database_url


# ------------------------------------------------------------------ versions and rollback


def test_a_committed_run_replaces_the_days_earlier_versions_and_leaves_other_days(store):
    write(store, memories(6), "run1")
    write(store, memories(4, day=DAY2), "run1")
    commit(store, [DAY, DAY2], "run1")
    assert store.counts() == {"memories": 10, "chunks": 10, "quarantine": 0}
    assert store.days() == [DAY, DAY2]

    write(store, memories(3), "run2")  # uncommitted: both versions side by side
    assert store.versions([DAY]) == ["run1", "run2"] and store.versions([DAY2]) == ["run1"]
    assert store.counts([DAY])["memories"] == 9
    commit(store, [DAY], "run2")
    assert store.versions([DAY]) == ["run2"] and store.counts([DAY]) == {"memories": 3, "chunks": 3, "quarantine": 0}
    assert sorted(store.chunk_ids([DAY])) == [f"m{i}#0" for i in range(3)]
    assert store.counts([DAY2])["memories"] == 4  # another day untouched


def test_a_rolled_back_run_leaves_the_days_as_they_were(store):
    write(store, memories(5), "run1")
    commit(store, [DAY], "run1")
    before = (store.counts(), sorted(store.chunk_ids()))
    write(store, memories(8, prefix="x"), "run2")
    store.rollback_days([DAY], "run2")
    assert (store.counts(), sorted(store.chunk_ids())) == before
    store.drop_versions([DAY], ["run1"])
    assert store.counts()["memories"] == 0 and store.versions([DAY]) == []


def test_a_retried_batch_replaces_its_own_rows(store):
    write(store, memories(5), "run1")
    changed = memories(5, content=lambda i: f"second attempt {i}")
    write(store, changed, "run1")  # the same keys again: the answer to the first attempt was lost
    assert store.counts() == {"memories": 5, "chunks": 5, "quarantine": 0}
    got = store.memories([(DAY, f"m{i}") for i in range(5)])
    assert [got[DAY, f"m{i}"]["content"] for i in range(5)] == [f"second attempt {i}" for i in range(5)]


def test_chunk_ids_come_in_batches_of_all_days_or_some(store):
    write(store, memories(25), "run1")
    write(store, memories(7, day=DAY2), "run1")
    batches = list(store.chunk_id_batches(batch_rows=10))
    assert [len(b) for b in batches] == [10, 10, 10, 2]
    assert sorted(i for b in batches for i in b) == sorted(store.chunk_ids())
    assert sorted(i for b in store.chunk_id_batches([DAY2], batch_rows=10) for i in b) == [f"m{i}#0" for i in range(7)]


def test_a_failed_run_is_recorded_once(store):
    assert store.failure("run1") is None
    store.mark_failed("run1", "writing lancedb failed: disk full")
    store.mark_failed("run1", "a later reason")
    assert store.failure("run1") == "writing lancedb failed: disk full"


# ------------------------------------------------------------------ search hydration


def test_hydration_returns_exact_rows_by_day_and_id(store):
    table = memories(len(TEXTS) * 2, expires_at_us=lambda i: None if i % 2 else US + 10**9)
    write(store, table, "run1")
    write(store, memories(2, day=DAY2), "run1")
    wanted = [(DAY, f"m{i}") for i in range(len(TEXTS) * 2)] + [(DAY2, "m1"), (DAY, "absent"), (DAY2, "m5")]
    got = store.memories(wanted)
    assert set(got) == set(wanted) - {(DAY, "absent"), (DAY2, "m5")}
    for row in table.to_pylist():
        stored = got[DAY, row["memory_id"]]
        assert stored["content"] == row["content"]  # any Unicode, NUL too
        assert stored["metadata"] == json.loads(row["metadata"])
        for column in ("user_id", "agent_id", "session_id", "created_at", "created_at_us", "expires_at_us", "source_line"):
            assert stored[column] == row[column], column
        assert stored["ingest_id"] == "run1"
    assert store.memories([]) == {}


def test_values_that_look_like_copy_or_bytea_syntax_round_trip_exactly(store):
    """Whole values equal to COPY's NULL marker or end-of-data line, bytea hex prefixes,
    tabs and newlines, in every kind of column; a NULL stays NULL and "\\N" stays text."""
    n = len(TEXTS)
    table = memories(n, content=lambda i: TEXTS[i], agent_id=lambda i: TEXTS[i].replace("\x00", "") if i % 2 else None,
                     session_id=lambda i: "\\N" if i % 2 else None, role=lambda i: None,
                     metadata=lambda i: json.dumps({"t": TEXTS[i]}), source_file=lambda i: TEXTS[i].replace("\x00", ""))
    write(store, table, "run\\1")
    got = store.memories([(DAY, f"m{i}") for i in range(n)])
    for row in table.to_pylist():
        stored = got[DAY, row["memory_id"]]
        for column in ("content", "agent_id", "session_id", "role", "source_file"):
            assert stored[column] == row[column], (column, row[column])
        assert stored["metadata"] == json.loads(row["metadata"]) and stored["ingest_id"] == "run\\1"
    assert sorted(store.chunk_ids()) == sorted(f"m{i}#0" for i in range(n))


def test_integers_up_to_2_to_the_53_round_trip(store):
    table = memories(1, created_at_us=2**53 - 1, expires_at_us=-(2**53 - 1))
    write(store, table, "run1")
    stored = store.memories([(DAY, "m0")])[DAY, "m0"]
    assert (stored["created_at_us"], stored["expires_at_us"]) == (2**53 - 1, -(2**53 - 1))


# ------------------------------------------------------------------ leases


def test_a_live_lease_blocks_another_ingestion_and_its_holder_renews_it(store):
    assert store.try_lease([DAY, DAY2], "run1", "run1:libsql", ttl=60) == []
    assert store.try_lease([DAY], "run1", "run1:libsql", ttl=60) == []  # renewal by the same ingestion
    blocking = store.try_lease([DAY], "run2", "run2:libsql", ttl=60)
    assert [(b["day"], b["ingest_id"], b["pid"]) for b in blocking] == [(DAY, "run1", os.getpid())]
    assert {lease["day"] for lease in store.live_leases()} == {DAY, DAY2}
    store.release_lease([DAY, DAY2], "run1:libsql")
    assert store.live_leases() == []
    assert store.try_lease([DAY], "run2", "run2:libsql", ttl=60) == []


def test_expired_leases_and_leases_of_dead_processes_here_do_not_block(store):
    assert store.try_lease([DAY], "run1", "run1:x", ttl=-1) == []  # already expired
    assert store.try_lease([DAY], "run2", "run2:x", ttl=60) == []
    with store.pool.transaction() as conn:  # a live-looking lease of a process that is gone
        sql = "UPDATE day_leases SET pid = {p}, ingest_id = 'dead' WHERE holder = 'run2:x'"
        conn.execute(sql.format(p=_dead_pid()))
    assert store.live_leases() == []
    assert store.try_lease([DAY], "run3", "run3:x", ttl=60) == []


def _dead_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# ------------------------------------------------------------------ quarantine


def _bad(day: str, line: int, raw: str = "{not json", reason: str = "invalid_json: Expecting value") -> QuarantineRecord:
    return QuarantineRecord(day=day, file="f.jsonl", line=line, raw=raw, reason=reason)


def test_staged_quarantine_comes_in_with_the_commit_and_goes_with_a_rollback(store):
    store.replace_quarantine([DAY], [_bad(DAY, 1), _bad(DAY, 2, raw="nul\x00raw é🧠")])
    assert [(q["line"], q["raw"]) for q in store.quarantine([DAY])] == [(1, "{not json"), (2, "nul\x00raw é🧠")]

    store.stage_quarantine([DAY, DAY2], [_bad(DAY, 7), _bad(DAY2, 3)], "run2")
    assert [q["line"] for q in store.quarantine()] == [1, 2]  # staged is not yet the quarantine
    store.rollback_days([DAY, DAY2], "run2")
    assert [q["line"] for q in store.quarantine()] == [1, 2]

    store.stage_quarantine([DAY, DAY2], [_bad(DAY, 7), _bad(DAY2, 3)], "run3")
    write(store, memories(2), "run3")
    commit(store, [DAY, DAY2], "run3")
    assert [(q["day"], q["line"]) for q in store.quarantine()] == [(DAY, 7), (DAY2, 3)]
    assert store.counts()["quarantine"] == 2

    store.stage_quarantine([DAY], [], "run4")  # a clean re-run empties the day's quarantine
    commit(store, [DAY], "run4")
    assert [(q["day"], q["line"]) for q in store.quarantine()] == [(DAY2, 3)]
    store.delete_quarantined([(DAY2, "f.jsonl", 3)], secure=True)
    assert store.quarantine() == []


# ------------------------------------------------------------------ embedding cache


def test_the_cache_keeps_the_first_vector_of_a_hash_per_model(store):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.cache_vectors("model-a", ["h1", "h2", "h3"], vectors)
    store.cache_vectors("model-a", ["h1", "h4"], np.full((2, 4), 9, dtype=np.float32))
    found = store.cached_vectors("model-a", ["h1", "h2", "h4", "h5", "h1"])
    assert set(found) == {"h1", "h2", "h4"}
    assert np.frombuffer(found["h1"], np.float32).tolist() == [0, 1, 2, 3]  # the first one stays
    assert np.frombuffer(found["h4"], np.float32).tolist() == [9] * 4
    assert store.cached_vectors("model-b", ["h1"]) == {} and store.cached_vectors("model-a", []) == {}
    with pytest.raises(ValueError):
        store.cache_vectors("model-a", ["h9"], vectors)


# ------------------------------------------------------------------ lifecycle


def test_versions_of_a_memory_oldest_first_and_the_current_count(store):
    write(store, memories(3), "run1")
    newer = memories(1, day=DAY2, created_at_us=US + 10**6, content="the newer version")
    write(store, newer, "run1")
    versions = store.versions_of("u0", "m0")
    assert [(v["day"], v["content"]) for v in versions] == [(DAY, memories(1)["content"][0].as_py()), (DAY2, "the newer version")]
    assert store.versions_of("u1", "m0") == []
    assert store.current_count(now_us=US) == 3  # m0 counted once


def marks(store, *keys) -> list[bool]:
    """Whether each (day, memory_id) is marked superseded, as search reads it."""
    found = store.memories(keys)
    return [found[key]["superseded"] for key in keys]


def test_only_the_newest_version_is_current_whatever_the_order_of_the_runs(store):
    """The marks search filters on follow every change to a memory's rows: days committed out
    of order, a re-run that no longer sends the memory, a rolled-back run, a deletion."""
    old, new = (DAY, "m0"), (DAY2, "m0")
    write(store, memories(2, day=DAY2, created_at_us=US + 10**6), "run1")  # the newer version first
    commit(store, [DAY2], "run1")
    write(store, memories(2), "run2")  # then the older day
    commit(store, [DAY], "run2")
    assert marks(store, old, new, (DAY, "m1")) == [True, False, True]
    assert store.memories([(DAY2, "m1")])[DAY2, "m1"]["superseded"] is False

    write(store, memories(1, day=DAY2, prefix="other", created_at_us=US + 10**6), "run3")
    commit(store, [DAY2], "run3")  # DAY2 re-run without m0 and m1: DAY's versions are current again
    assert marks(store, old, (DAY, "m1")) == [False, False]

    write(store, memories(1, day=DAY2, created_at_us=US + 10**6), "run4")  # a newer m0, in flight
    write(store, memories(2, content="a re-run"), "run5")
    commit(store, [DAY], "run5")  # committed while run4's newer m0 is in flight
    assert marks(store, old) == [True]
    store.rollback_days([DAY2], "run4")  # run4 fails: the version it wrote never counted
    assert marks(store, old) == [False]

    write(store, memories(1, day=DAY2, created_at_us=US + 10**6), "run6")
    commit(store, [DAY2], "run6")
    assert marks(store, old, new) == [True, False]
    store.delete_memories([(DAY2, "u0", "m0")])  # the newest version deleted: the older is current
    assert marks(store, old) == [False]

    write(store, memories(1, day=DAY2, created_at_us=US - 1), "run7")  # a same-id version created earlier
    commit(store, [DAY2], "run7")
    assert marks(store, old, new) == [False, True]
    store.drop_versions([DAY], ["run5"])
    assert marks(store, new) == [False]
    assert store.memories([(DAY2, "m0")])[DAY2, "m0"]["user_id"] == "u0"


def test_the_same_memory_id_of_two_users_is_two_memories(store):
    write(store, memories(1, user=lambda i: "alice"), "run1")
    write(store, memories(1, day=DAY2, user=lambda i: "bob", created_at_us=US + 10**6), "run1")
    commit(store, [DAY, DAY2], "run1")
    assert marks(store, (DAY, "m0"), (DAY2, "m0")) == [False, False]


def test_expiry_takes_every_version_of_a_memory_whose_current_version_expired(store):
    write(store, memories(3), "run1")  # no expiry
    write(store, memories(2, day=DAY2, created_at_us=US + 10**6, expires_at_us=US + 2 * 10**6), "run1")
    assert store.current_count(now_us=US + 10**6) == 3
    assert store.current_count(now_us=US + 3 * 10**6) == 1  # m0, m1 expired in their current version
    keys = store.expired_keys(US + 3 * 10**6)
    assert sorted(keys) == sorted([(DAY, "u0", "m0"), (DAY, "u1", "m1"), (DAY2, "u0", "m0"), (DAY2, "u1", "m1")])
    assert store.expired_keys(US) == []


def test_delete_memories_takes_their_chunks_and_the_cache_entries_only_they_used(store):
    shared = memories(4, content_hash=lambda i: "shared" if i < 2 else f"{i:064d}")
    write(store, shared, "run1")
    store.cache_vectors("m", ["shared", f"{2:064d}", f"{3:064d}"], np.ones((3, 4), np.float32))
    keys = store.scope_keys("u0", None, None, US + 10)  # m0 and m3 are u0's
    assert sorted(keys) == [(DAY, "u0", "m0"), (DAY, "u0", "m3")]
    removed = store.delete_memories(keys, secure=True)
    assert removed == {"memories": 2, "chunks": 2, "cache_entries": 1}  # m3's hash; "shared" still used by m1
    assert sorted(store.chunk_ids()) == ["m1#0", "m2#0"]
    assert set(store.cached_vectors("m", ["shared", f"{2:064d}", f"{3:064d}"])) == {"shared", f"{2:064d}"}
    assert store.delete_memories([]) == {"memories": 0, "chunks": 0, "cache_entries": 0}


def test_scope_keys_narrow_by_agent_session_and_time(store):
    write(store, memories(6, user=lambda i: "u"), "run1")
    assert len(store.scope_keys("u", None, None, US + 100)) == 6
    assert sorted(k[2] for k in store.scope_keys("u", "a1", None, US + 100)) == ["m1", "m3", "m5"]
    assert sorted(k[2] for k in store.scope_keys("u", "a0", "s0", US + 2)) == ["m0", "m2"]
    assert store.scope_keys("u", "a1", "s0", US + 100) == [] and store.scope_keys("nobody", None, None, US) == []


def test_tombstones_are_kept_and_scrub_leaves_the_store_smaller_and_working(store):
    write(store, memories(300, content=lambda i: f"secret {i} " + "x" * 2000), "run1")
    store.add_tombstone("u0", None, None, US + 10**9, "2024-06-03T00:00:00Z")
    store.add_tombstone("u1", "a1", "s1", US, "2024-06-03T00:00:00Z")
    assert sorted((t["user_id"], t["agent_id"], t["session_id"], t["up_to_us"]) for t in store.tombstones()) == [
        ("u0", None, None, US + 10**9), ("u1", "a1", "s1", US)]
    store.delete_memories(store.scope_keys("u0", None, None, US + 10**9), secure=True)
    size = store.scrub()
    assert isinstance(size, int) and size > 0
    assert store.counts()["memories"] == 200
    write(store, memories(1, prefix="after"), "run2")
    assert store.counts()["memories"] == 201


@pytest.fixture
def postgres_with_files(postgres_instance):
    """(URL of a new database, the server's data directory): on the session's server when
    the tests started it, else on a private one of this test's own."""
    with contextlib.ExitStack() as stack:
        server, data = postgres_instance
        if data is None:  # AGENTMEM_TEST_DATABASE_URL's server: its files are out of reach
            server, data = stack.enter_context(private_postgres())
        yield stack.enter_context(new_postgres_database(server)), data


def test_after_scrub_postgres_table_files_hold_no_deleted_text_and_its_wal_still_does(postgres_with_files):
    """What README says PostgreSQL keeps after a forget: nothing in the tables' files (VACUUM
    FULL wrote them anew), the text in the write-ahead log until its segments are reused."""
    import subprocess

    import psycopg

    postgres_url, data = postgres_with_files
    store = open_store(postgres_url)
    try:
        write(store, memories(60, content=lambda i: f"ZanzibarSecretXYZ number {i}"), "run1")
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the pages on disk, not only in shared buffers
            oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]

        def holding(where: Path) -> list[str]:
            found = subprocess.run(["grep", "-rl", "--binary-files=binary", "ZanzibarSecretXYZ", str(where)],
                                   capture_output=True, text=True)
            return found.stdout.split()

        assert holding(data / "base" / str(oid)) and holding(data / "pg_wal")  # the check can fail
        for user in ("u0", "u1", "u2"):
            store.delete_memories(store.scope_keys(user, None, None, 2**62), secure=True)
        assert store.scrub() > 0
        assert holding(data / "base" / str(oid)) == []
        assert holding(data / "pg_wal")  # said in the README: the WAL keeps it until reused
    finally:
        store.close()


# ------------------------------------------------------------------ the URL and the errors


@pytest.mark.parametrize(("url", "kind"), [
    ("/var/lib/agentmem/memories.db", "libsql"), ("memories.db", "libsql"), ("file:///tmp/m.db", "libsql"),
    ("libsql://db.example.turso.io", "libsql"), ("https://db.example.org", "libsql"),
    ("postgresql://u:p@db:5432/agentmem", "postgres"), ("postgres://db/agentmem", "postgres"),
    ("POSTGRESQL://db/agentmem", "postgres"),
])
def test_the_url_scheme_names_the_adapter(url, kind):
    assert store_kind(url) == kind


@pytest.mark.parametrize("url", ["mysql://db/x", "", "  ", "s3://bucket/x", "m\x00.db"])
def test_a_url_naming_no_adapter_is_one_clear_line(url):
    with pytest.raises(BadDatabaseUrl, match="AGENTMEM_DATABASE_URL") as raised:
        store_kind(url)
    assert "\n" not in str(raised.value)


def test_a_file_url_opens_the_libsql_file(tmp_path):
    store = open_store(f"file://{tmp_path}/m.db")
    write(store, memories(1), "run1")
    store.close()
    assert (tmp_path / "m.db").exists()


def test_passwords_are_kept_out_of_messages():
    assert redacted("postgresql://agent:s3cret@db:5432/x") == "postgresql://agent:***@db:5432/x"
    assert redacted("postgresql://db/x") == "postgresql://db/x"


def test_postgres_lock_contention_is_transient(postgres_url):
    import psycopg

    store = open_store(postgres_url + "?options=-c%20lock_timeout%3D200", pool_size=1)
    try:
        with psycopg.connect(postgres_url) as other:  # holds the leases' table until it ends
            other.execute("LOCK TABLE day_leases IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(TransientStoreError, match="55P03") as raised:
                store.try_lease([DAY], "run1", "run1:x", ttl=60)
        assert is_transient(raised.value)
        assert store.try_lease([DAY], "run1", "run1:x", ttl=60) == []  # and it clears
    finally:
        store.close()


def test_postgres_terminal_errors_are_not_retried(postgres_url):
    store = open_store(postgres_url)
    try:
        with pytest.raises(TerminalStoreError, match="0x00.*COPY memories.*SQLSTATE 22021") as raised:  # TEXT cannot hold NUL
            write(store, memories(1, user=lambda i: "u\x00"), "run1")
        assert not is_transient(raised.value)
        assert store.counts()["memories"] == 0
    finally:
        store.close()


def test_postgres_unreachable_or_missing_is_unavailable_naming_the_setting(postgres_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    with pytest.raises(StoreUnavailable, match=r"cannot be reached.*AGENTMEM_DATABASE_URL") as raised:
        open_store(f"postgresql://agent:s3cret@127.0.0.1:{port}/x")
    assert raised.value.transient and "s3cret" not in str(raised.value)
    missing = postgres_server.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StoreUnavailable, match=r"refused the connection.*no_such_database.*AGENTMEM_DATABASE_URL"):
        open_store(missing)  # libpq gives no SQLSTATE for a failed connection: the server's reason is in the message


def test_postgres_errors_with_a_sqlstate_are_classified_by_it(postgres_url):
    import psycopg

    store = open_store(postgres_url)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("ALTER DATABASE " + postgres_url.rsplit("/", 1)[1] + " SET default_transaction_read_only = on")
        store.close()
        with pytest.raises(StoreUnavailable, match=r"is read-only.*AGENTMEM_DATABASE_URL at a writable primary") as raised:
            store.probe()  # SQLSTATE 25006 on new connections
        assert not raised.value.transient and isinstance(raised.value, StoreError)
        assert store.counts()["memories"] == 0  # reads still work
    finally:
        store.close()


def test_a_locked_libsql_file_is_transient(tmp_path):
    from agentmem_dagster.engine import libsql_store

    store = open_store(str(tmp_path / "m.db"), busy_timeout_ms=50)
    blocker = libsql_store.connect(str(tmp_path / "m.db"))
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="is locked") as raised:
            store.try_lease([DAY], "run1", "run1:x", ttl=60)
        assert raised.value.transient and is_transient(raised.value)
    finally:
        blocker.execute("ROLLBACK")
        store.close()


def test_the_schema_is_migrated_once_and_reopening_keeps_the_rows(database_url):
    first = open_store(database_url)
    write(first, memories(3), "run1")
    first.close()
    again = open_store(database_url)
    try:
        assert again.counts()["memories"] == 3
        if isinstance(again, PostgresStore):
            from agentmem_dagster.engine.postgres_store import MIGRATIONS

            assert again.schema_version == len(MIGRATIONS)
    finally:
        again.close()


def test_a_database_of_the_previous_schema_gets_its_versions_marked(database_url):
    """A store made before versions were marked: opening it adds the mark and sets it on the
    versions it already holds."""
    first = open_store(database_url)
    write(first, memories(2), "run1")
    write(first, memories(1, day=DAY2, created_at_us=US + 10**6), "run1")
    first.close()
    if database_url.startswith("postgresql://"):
        from agentmem_dagster.engine.postgres_store import MIGRATIONS, connect

        with connect(database_url) as conn:
            conn.execute("ALTER TABLE memories DROP COLUMN superseded")
            conn.execute("UPDATE agentmem_schema SET version = %s", [len(MIGRATIONS) - 1])
    else:
        from agentmem_dagster.engine.libsql_store import connect

        conn = connect(database_url)
        conn.execute("ALTER TABLE memories DROP COLUMN superseded")
        conn.close()
    again = open_store(database_url)
    try:
        assert marks(again, (DAY, "m0"), (DAY, "m1"), (DAY2, "m0")) == [True, False, False]
    finally:
        again.close()


def test_leases_are_exclusive_across_concurrent_ingestions(database_url):
    """Many threads race for the same day: exactly one ingestion holds it at a time."""
    import threading

    store = open_store(database_url, pool_size=8)
    winners, errors = [], []

    def race(n: int):
        try:
            if store.try_lease([DAY], f"run{n}", f"run{n}:x", ttl=60) == []:
                winners.append(n)
        except StoreError as exc:
            if not exc.transient:
                errors.append(exc)

    try:
        threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(winners) == 1
        assert [lease["ingest_id"] for lease in store.live_leases()] == [f"run{winners[0]}"]
    finally:
        store.close()


def test_the_settings_and_the_resource_take_the_url_and_the_auth_token(agentmem_home, monkeypatch):
    import dagster as dg

    from agentmem_dagster.definitions import build_resources
    from agentmem_dagster.engine.settings import Settings

    assert Settings.from_env().database_url == str(agentmem_home / "memories.db")  # the embedded default
    monkeypatch.setenv("AGENTMEM_LIBSQL_URL", "/srv/old-name.db")  # the older name, still accepted
    assert Settings.from_env().database_url == "/srv/old-name.db"
    monkeypatch.setenv("AGENTMEM_DATABASE_URL", "libsql://db.example.org")  # the new name wins
    monkeypatch.setenv("AGENTMEM_DATABASE_AUTH_TOKEN", "tok-123")
    settings = Settings.from_env()
    assert (settings.database_url, settings.database_auth_token, settings.database_kind) == (
        "libsql://db.example.org", "tok-123", "libsql")
    resource = build_resources(settings)["libsql"]
    assert resource.url == dg.EnvVar("AGENTMEM_DATABASE_URL") and resource.auth_token == dg.EnvVar("AGENTMEM_DATABASE_AUTH_TOKEN")
    monkeypatch.setenv("AGENTMEM_DATABASE_URL", "mysql://db/x")
    with pytest.raises(BadDatabaseUrl):
        Settings.from_env()
