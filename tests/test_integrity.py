"""Search scope cannot be widened by any value; any Unicode and every integer round-trip
through both stores exactly."""

import numpy as np
import pyarrow as pa
import pytest

from agentmem_dagster.engine.embedding import Embedder
from agentmem_dagster.engine.ingest import ingest
from agentmem_dagster.engine.lance_store import LanceStore, scope_filter
from agentmem_dagster.engine.libsql_store import LibsqlPool, LibsqlStore
from agentmem_dagster.engine.records import MEMORY_SCHEMA
from agentmem_dagster.engine.search import search

DAY = "2024-06-01"
USERS = ["u_alice", "o'brien", "bob", "%", "*"]
HOSTILE = [
    "' OR 1=1 --",
    "u_alice' OR user_id != '",
    '" OR ""="',
    "%",
    "*",
    "u_%",
    "bob\\",
    "a" * 100_000,
    "\u202eecila_u",
    "'; DROP TABLE memories; --",
]
UNICODE = [
    "emoji 🧠🙂‍↔️ and flags 🇵🇹",
    "中文记忆：我对花生过敏。",
    "combining: e\u0301 a\u0308 ñ",
    "NUL inside\x00the text",
    "rtl: \u05e9\u05dc\u05d5\u05dd and zero width\u200bspace",
]


def _table(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "memory_id": mid, "user_id": user, "agent_id": "agent", "session_id": "s1", "role": "user",
                "content": content, "created_at": f"{DAY}T12:00:00.000000Z", "created_at_us": 1717243200000000,
                "metadata": '{"k": "v"}', "content_hash": "0" * 64, "day": DAY, "source_file": "f", "source_line": 1,
            }
            for mid, user, content in rows
        ],
        schema=MEMORY_SCHEMA,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory, static_model):
    root = tmp_path_factory.mktemp("isolation")
    embedder = Embedder(*static_model)
    lance, libsql = LanceStore(str(root / "lance")), LibsqlStore(LibsqlPool(str(root / "m.db")))
    rows = [(f"{u}-{i}", u, f"{u} likes hiking and tea, memory {i}") for u in USERS for i in range(3)]
    rows += [(f"uni-{i}", "u_alice", text) for i, text in enumerate(UNICODE)]
    ingest(_table(rows), embedder=embedder, lance=lance, libsql=libsql, days=[DAY])
    lance.maintain()  # the full-text index, so hostile query text reaches it too
    yield embedder, lance, libsql
    libsql.pool.close()


@pytest.mark.parametrize("user", USERS)
def test_every_hit_belongs_to_the_user_asked_for(world, user):
    hits = search(*world, "hiking and tea", user_id=user, k=50).hits
    assert hits and {h.user_id for h in hits} == {user}


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_never_widen_the_scope(world, value):
    embedder, lance, libsql = world
    hits = search(embedder, lance, libsql, "hiking", user_id=value, k=50).hits
    assert {h.user_id for h in hits} <= {value}  # "%" and "*" are users here: exact match only
    assert len(hits) == (3 if value in USERS else 0)
    for field in ("agent_id", "session_id"):
        hits = search(embedder, lance, libsql, "hiking", user_id="bob", k=50, **{field: value}).hits
        assert hits == []
    hits = search(embedder, lance, libsql, value, user_id="bob", k=50).hits  # as query text
    assert {h.user_id for h in hits} <= {"bob"}


def _lance_rows(world, where: str, text: str = "hiking") -> list[dict]:
    """The rows LanceDB itself returns for the filter (both rankings), before any hydration:
    hydration drops other users' rows anyway, so only here does a filter bypass show."""
    embedder, lance, _ = world
    vector_rows, text_rows = lance.rankings(vector=embedder.embed([text])[0], text=text, where=where, limit=200)
    return [{**row, "ranking": "vector"} for row in vector_rows] + [{**row, "ranking": "text"} for row in text_rows]


def test_the_lancedb_filter_itself_keeps_hostile_values_in_scope(world):
    # a control: a filter built without quoting lets other users' rows through, and this check sees it
    leaked = _lance_rows(world, "user_id = 'u_alice' OR user_id != ''")
    assert {row["user_id"] for row in leaked} > {"u_alice"}
    assert {row["ranking"] for row in leaked} == {"vector", "text"}  # both rankings are checked
    for value in HOSTILE + USERS:
        rows = _lance_rows(world, scope_filter(value))
        assert {row["user_id"] for row in rows} <= {value}, value[:40]
        owned = 3 + len(UNICODE) if value == "u_alice" else 3 if value in USERS else 0  # every chunk of theirs
        assert len({row["chunk_id"] for row in rows}) == owned, value[:40]
        for field in ("agent_id", "session_id"):
            assert _lance_rows(world, scope_filter("bob", **{field: value})) == [], (field, value[:40])
        rows = _lance_rows(world, scope_filter("bob"), text=value[:1000])  # as query text
        assert {row["user_id"] for row in rows} == {"bob"}, value[:40]


def test_a_nul_in_a_scope_value_is_a_clear_error(world):
    with pytest.raises(ValueError, match="NUL"):
        search(*world, "hiking", user_id="bob\x00", k=5)


def test_any_unicode_round_trips_through_both_stores(world):
    embedder, lance, libsql = world
    stored = libsql.memories((DAY, f"uni-{i}") for i in range(len(UNICODE)))
    assert [stored[DAY, f"uni-{i}"]["content"] for i in range(len(UNICODE))] == UNICODE
    texts = lance._scan(lance.table(), ["memory_id", "text"], "memory_id LIKE 'uni-%'").to_pylist()
    assert {row["memory_id"]: row["text"] for row in texts} == {f"uni-{i}": t for i, t in enumerate(UNICODE)}


def _one_memory_at(created_at_us: int) -> tuple[pa.Table, pa.Table]:
    table = _table([("late", "bob", "the end of time")])
    column = pa.array([created_at_us], pa.int64())
    table = table.set_column(table.schema.get_field_index("created_at_us"), "created_at_us", column)
    chunks = pa.table({
        "chunk_id": ["late#0"], "memory_id": ["late"], "chunk_index": [0], "chunk_count": [1],
        "text": ["the end of time"], "text_hash": ["f" * 64], "user_id": ["bob"], "day": [DAY],
    })
    return table, chunks


def test_integers_keep_their_precision_or_are_refused(tmp_path):
    """libsql binds Python ints beyond 2**53 as floats: the largest exact value round-trips,
    a larger one is refused instead of silently rounded, and the parser quarantines the
    timestamps that would need one."""
    from agentmem_dagster.engine.records import QuarantineRecord, parse_line

    libsql = LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    libsql.write(*_one_memory_at(2**53 - 1), "run")
    assert libsql.memories([(DAY, "late")])[DAY, "late"]["created_at_us"] == 2**53 - 1
    with pytest.raises(ValueError, match="2\\*\\*53"):
        libsql.write(*_one_memory_at(253402300799999999), "run")  # 9999-12-31T23:59:59.999999Z
    libsql.pool.close()
    line = b'{"user_id": "u", "content": "x", "created_at": "9999-12-31T23:59:59.999999Z"}'
    record = parse_line(line, day=DAY, file="f", line=1)
    assert isinstance(record, QuarantineRecord) and record.reason.startswith("invalid_timestamp")


@pytest.mark.parametrize("series", [True, False], ids=["generate_series", "recursive_cte"])
def test_bulk_insert_keeps_every_value_exactly(tmp_path, series):
    """The one-statement batch insert: texts cut from one BLOB, integers from fixed-width digits;
    its row numbers from generate_series or, where a build lacks it, a recursive CTE."""
    from agentmem_dagster.engine.libsql_store import bulk_insert, connect, has_generate_series

    def bulk(*args):
        return bulk_insert(*args, series=series)

    texts = UNICODE + ["", "\x00", "'; DROP TABLE t; --", None, "a" * 100_000, "{\"k\": \"v\",  \"n\": [1, 2]}", "é"]
    ints = [0, -1, 1, 2**53 - 1, -(2**53 - 1), 2**63 - 1, -(2**63 - 1), None, 9, 10_000, -10_000, 123456789012]
    data = pa.table({
        "a": pa.chunked_array([texts[:4], texts[4:]], pa.string()),
        "b": pa.array(ints, pa.int64()),
        "c": pa.array(list(reversed(texts)), pa.large_string()),
        "d": pa.array(range(len(ints)), pa.int32()),
    }).slice(1)  # a sliced table: buffers start at an offset
    conn = connect(str(tmp_path / "b.db"))
    assert has_generate_series(conn)  # the libsql wheel has it: the fast path is the one taken
    conn.execute("CREATE TABLE t (a TEXT, b INTEGER, c TEXT, d INTEGER, s TEXT)")
    conn.execute(*bulk("t", ["a", "b", "c", "d", "s"], data, {"s": "stamp"}))
    rows = conn.execute("SELECT CAST(a AS BLOB), b, CAST(c AS BLOB), d, s, typeof(a), typeof(b) FROM t ORDER BY d").fetchall()
    text = lambda v: None if v is None else v.decode()  # noqa: E731
    got = [{"a": text(a), "b": b, "c": text(c), "d": d, "s": s} for a, b, c, d, s, *_ in rows]
    assert got == [{**row, "s": "stamp"} for row in data.to_pylist()]
    assert {(ta, tb) for *_, ta, tb in rows} <= {("text", "integer"), ("null", "integer"), ("text", "null")}
    conn.execute("DELETE FROM t")  # empty texts only: nothing in the BLOB to cut from
    conn.execute(*bulk("t", ["a", "b"], pa.table({"a": ["", ""], "b": pa.array([None, None], pa.int64())})))
    assert conn.execute("SELECT a, b FROM t").fetchall() == [("", None), ("", None)]
    conn.execute(*bulk("t", ["a", "b"], data.slice(0, 0)))
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    conn.execute("DELETE FROM t")  # values all of one size (ids, hashes) are found by row number
    sized = pa.table({
        "a": ["ééé", "ü\x00a", "abc\x00\x00\x00", "🧠xx", "ab'c\"d"],  # 6, 4, 6, 6, 6 bytes
        "c": [f"{n:064x}" for n in range(5)],
        "d": pa.array(range(5), pa.int32()),
    }).slice(1)
    conn.execute(*bulk("t", ["a", "c", "d"], sized))
    rows = conn.execute("SELECT CAST(a AS BLOB), CAST(c AS BLOB), d, typeof(c) FROM t ORDER BY d").fetchall()
    assert rows == [(r["a"].encode(), r["c"].encode(), r["d"], "text") for r in sized.to_pylist()]
    conn.execute("DELETE FROM t")
    conn.execute(*bulk("t", ["a", "c", "d"], sized.slice(1)))  # now `a` too is all of one size
    rows = conn.execute("SELECT CAST(a AS BLOB), CAST(c AS BLOB), d FROM t ORDER BY d").fetchall()
    assert rows == [(r["a"].encode(), r["c"].encode(), r["d"]) for r in sized.slice(1).to_pylist()]
    conn.execute("DELETE FROM t")  # BLOBs: of any size, of one size (vectors), of one value
    blobs = [b"", b"\x00\xff", None, bytes(range(256)), b"'"]
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    for a, c in [
        (pa.array(blobs, pa.binary()), pa.array(blobs, pa.large_binary())),
        (pa.array([v.tobytes() for v in vectors], pa.binary(12)), pa.array([b"\x00\x01"] * 4, pa.binary())),
        (pa.array([vectors[0].tobytes(), None, vectors[2].tobytes()], pa.binary(12)), pa.array([b"x", b"yy", b"z"])),
    ]:
        rows = pa.table({"a": a, "c": c, "d": pa.array(range(len(a)), pa.int32())}).slice(1)
        conn.execute(*bulk("t", ["a", "c", "d"], rows))
        got = conn.execute("SELECT a, c, d, typeof(a), typeof(c) FROM t ORDER BY d").fetchall()
        assert [(x, y, d) for x, y, d, *_ in got] == [(r["a"], r["c"], r["d"]) for r in rows.to_pylist()]
        assert {t for *_, ta, tc in got for t in (ta, tc)} <= {"blob", "null"}
        conn.execute("DELETE FROM t")
    conn.execute("DELETE FROM t")  # a column with one value in every row is bound once, exactly
    for text, number in [("NUL\x00é🧠", 2**63 - 1), ("", -(2**63 - 1)), ("x", 0)]:
        const = pa.table({"a": [text] * 3, "b": pa.array([number] * 3, pa.int64()), "d": pa.array([1, 2, 3], pa.int32())})
        conn.execute(*bulk("t", ["a", "b", "d"], const))
        rows = conn.execute("SELECT CAST(a AS BLOB), b, d, typeof(a), typeof(b) FROM t ORDER BY d").fetchall()
        assert rows == [(text.encode(), number, d, "text", "integer") for d in (1, 2, 3)]
        conn.execute("DELETE FROM t")
    conn.close()


def test_one_memory_id_on_two_days_of_one_run_is_kept_on_both(tmp_path, static_model):
    """Days are partitions of their own: a memory id that comes on two days of one run is two
    memories, each day's, in both stores alike, and search shows each with its own content."""
    embedder = Embedder(*static_model)
    lance, libsql = LanceStore(str(tmp_path / "lance")), LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    other = "2024-06-02"
    first = _table([("same", "bob", "bob adopted a grey cat called Smoke")])
    second = _table([("same", "bob", "bob sold his sailing boat in the autumn")])
    second = second.set_column(second.schema.get_field_index("day"), MEMORY_SCHEMA.field("day"), pa.array([other]))
    ingest(pa.concat_tables([first, second]), embedder=embedder, lance=lance, libsql=libsql, days=[DAY, other])

    for day in (DAY, other):
        assert lance.chunk_ids([day]) == libsql.chunk_ids([day]) == ["same#0"]
    stored = libsql.memories([(DAY, "same"), (other, "same")])
    assert [stored[day, "same"]["content"] for day in (DAY, other)] == [
        "bob adopted a grey cat called Smoke", "bob sold his sailing boat in the autumn"
    ]
    hit = search(embedder, lance, libsql, "sailing boat", user_id="bob", k=1).hits[0]
    assert hit.content == hit.chunk_text == "bob sold his sailing boat in the autumn"
    libsql.pool.close()


@pytest.mark.parametrize(
    "memory_key, chunk_key",
    [("memory_id", "chunk_id"), ("memory_id, ingest_id", "chunk_id, ingest_id")],
    ids=["before-versions", "keyed-by-id-and-version"],
)
def test_a_database_keyed_as_before_keeps_its_rows(tmp_path, memory_key, chunk_key):
    """Earlier releases keyed memories and chunks by id alone, then by id and version, with an
    index on the day: opening such a database moves its rows into tables keyed by day first,
    and a new run then replaces them. Its embedding cache (then WITHOUT ROWID) is kept as it is."""
    from agentmem_dagster.engine.libsql_store import CHUNK_COLUMNS, KEYS, MEMORY_COLUMNS, bulk_insert, connect

    path = str(tmp_path / "m.db")
    conn = connect(path)
    conn.executescript(  # the tables as earlier releases created them
        "CREATE TABLE memories (memory_id TEXT NOT NULL, user_id TEXT NOT NULL, agent_id TEXT, "
        "session_id TEXT, role TEXT, content TEXT NOT NULL, created_at TEXT NOT NULL, "
        "created_at_us INTEGER NOT NULL, metadata TEXT NOT NULL, content_hash TEXT NOT NULL, "
        f"day TEXT NOT NULL, source_file TEXT, source_line INTEGER, ingest_id TEXT NOT NULL, PRIMARY KEY ({memory_key}));"
        "CREATE INDEX memories_day ON memories(day);"
        "CREATE TABLE chunks (chunk_id TEXT NOT NULL, memory_id TEXT NOT NULL, chunk_index INTEGER NOT NULL, "
        "chunk_count INTEGER NOT NULL, text TEXT NOT NULL, text_hash TEXT NOT NULL, user_id TEXT NOT NULL, "
        f"day TEXT NOT NULL, ingest_id TEXT NOT NULL, PRIMARY KEY ({chunk_key}));"
        "CREATE INDEX chunks_day ON chunks(day);"
        "CREATE TABLE embedding_cache (model TEXT NOT NULL, text_hash TEXT NOT NULL, vector BLOB NOT NULL, "
        "PRIMARY KEY (model, text_hash)) WITHOUT ROWID;"
        "INSERT INTO embedding_cache VALUES ('model', 'h1', x'0000803f');"
    )
    memories, chunks = _one_memory_at(1717243200000000)
    before = [c for c in MEMORY_COLUMNS if c != "expires_at_us"]  # a column added since
    for table, columns, rows in (("memories", before, memories), ("chunks", CHUNK_COLUMNS, chunks)):
        conn.execute(*bulk_insert(table, columns, rows, {"ingest_id": "before"}))
    conn.close()

    store = LibsqlStore(LibsqlPool(path))
    assert store.counts([DAY])["memories"] == 1 and store.chunk_ids([DAY]) == ["late#0"]
    assert store.versions([DAY]) == ["before"]
    assert store.memories([(DAY, "late")])[DAY, "late"]["content"] == "the end of time"
    with store.pool.connection() as conn:
        for table in ("memories", "chunks"):
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            assert [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]] == KEYS[table]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master").fetchall()}
    assert not {"memories_day", "chunks_day", "memories_old_key", "chunks_old_key"} & names
    store.write(*_one_memory_at(1717243200000001), "after")
    store.drop_versions([DAY], ["before"])
    assert store.memories([(DAY, "late")])[DAY, "late"]["created_at_us"] == 1717243200000001
    assert store.counts([DAY])["chunks"] == 1
    store.cache_vectors("model", ["h2", "h1"], np.array([[2.0], [3.0]]))  # the cache keeps its layout and its vectors
    assert store.cached_vectors("model", ["h1", "h2", "h3"]) == {"h1": b"\x00\x00\x80\x3f", "h2": b"\x00\x00\x00\x40"}
    store.pool.close()


def test_cached_vectors_come_back_exactly(tmp_path, monkeypatch):
    """New vectors go in bulk, in several statements when many; each comes back as it went in,
    a hash kept before keeps its vector, and another model's cache is its own."""
    from agentmem_dagster.engine import libsql_store

    monkeypatch.setattr(libsql_store, "CACHE_ROWS_PER_STATEMENT", 2)
    store = LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    vectors = np.random.default_rng(0).standard_normal((5, 384)).astype(np.float32)
    hashes = [f"h{i}" for i in range(5)]
    store.cache_vectors("m", hashes[:1], vectors[4:])
    store.cache_vectors("m", hashes, vectors)
    expected = {"h0": vectors[4].tobytes(), **{h: v.tobytes() for h, v in zip(hashes[1:], vectors[1:])}}
    assert store.cached_vectors("m", hashes + ["absent"]) == expected
    assert store.cached_vectors("other model", hashes) == {}
    with pytest.raises(ValueError):
        store.cache_vectors("m", hashes, vectors[:4])
    store.pool.close()


def test_a_lancedb_table_from_before_uncompressed_columns_takes_new_rows(tmp_path, static_model):
    """Tables are now created with their strings and vectors stored uncompressed; a table an
    earlier release created with LanceDB's default encodings keeps working: a new run's rows
    go in beside the old ones, replace them, and are found by search."""
    import lancedb
    import numpy as np

    from agentmem_dagster.engine.chunking import chunk_memories, with_vectors
    from agentmem_dagster.engine.lance_store import lance_schema

    embedder = Embedder(*static_model)
    memories = _table([("m1", "bob", "bob keeps bees on the roof"), ("m2", "bob", "bob's sister lives in Porto")])
    chunks = chunk_memories(memories, embedder.tokenizer, embedder.max_tokens)
    embedded = with_vectors(chunks, embedder.embed(chunks["text"].to_pylist()))
    dim = embedded.schema.field("vector").type.list_size
    before = pa.schema([field.remove_metadata() for field in lance_schema(dim)])  # as created before
    old = embedded.append_column("ingest_id", pa.array(["before"] * embedded.num_rows))
    lancedb.connect(str(tmp_path / "lance")).create_table("memories", old.select(before.names).cast(before))

    lance, libsql = LanceStore(str(tmp_path / "lance")), LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    assert lance.versions([DAY]) == ["before"]
    assert lance.write(embedded, "after") == 2
    assert lance.versions([DAY]) == ["after", "before"]
    lance.drop_versions([DAY], ["before"])
    assert sorted(lance.chunk_ids([DAY])) == ["m1#0", "m2#0"] and lance.versions([DAY]) == ["after"]
    assert not lance.table().schema.field("text").metadata  # the old table keeps its encodings
    libsql.write(memories, chunks, "after")
    hits = search(embedder, lance, libsql, "who keeps bees?", user_id="bob", k=1).hits
    assert [hit.memory_id for hit in hits] == ["m1"]
    libsql.pool.close()

    fresh = LanceStore(str(tmp_path / "fresh"))
    fresh.write(embedded, "run")
    schema = fresh.table().schema
    assert {schema.field(name).metadata.get(b"lance-encoding:compression") for name in ("text", "vector", "day")} == {b"none"}
    stored = fresh._scan(fresh.table(), ["chunk_id", "vector"], None).sort_by("chunk_id")
    assert stored["chunk_id"].to_pylist() == ["m1#0", "m2#0"]
    assert np.array_equal(np.stack(stored["vector"].to_pylist()), np.stack(embedded["vector"].to_pylist()))
