"""LibSQL side, the system of record: memories, chunks and quarantine; a pool of connections."""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import StoreUnavailable, explain, explained, local_path
from .record_store import SETTING, DayReads, lease_blocks, superseded

# Memories and chunks are kept as versions: a run writes its rows beside those of earlier runs
# (the key includes `ingest_id`) and drops the older versions only once both stores hold its own.
# Both keys begin with the day, and no other index is kept: ids are hashes or UUIDs, in no
# order, and a batch inserted into an index keyed by them dirties pages all over it, so each
# batch cost more the more days the database held (half the speed at ten days of 20,000
# memories). Keyed by day, a batch touches only its day's pages. Chunks are read by day and
# run only, so theirs go in at the end of their run's range; memories are also read by day and id.
SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    memory_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    role TEXT,
    content TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    expires_at_us INTEGER,
    day TEXT NOT NULL,
    source_file TEXT,
    source_line INTEGER,
    ingest_id TEXT NOT NULL,
    superseded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, memory_id, ingest_id)
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT NOT NULL,
    memory_id TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    text TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    user_id TEXT NOT NULL,
    day TEXT NOT NULL,
    ingest_id TEXT NOT NULL,
    PRIMARY KEY (day, ingest_id, chunk_id)
);
-- A rowid table: the vectors (1-1.5 KB) go in at its end, and only its small key index takes
-- the random hashes. WITHOUT ROWID, each new vector went into a random leaf of a B-tree of
-- vectors: inserts ran at a third of the speed once it held 300,000 (BENCHMARKS.md). Caches
-- made that way by earlier releases keep working as they are.
CREATE TABLE IF NOT EXISTS embedding_cache (
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_hash)
);
CREATE TABLE IF NOT EXISTS day_leases (
    day TEXT NOT NULL,
    holder TEXT NOT NULL,
    ingest_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (day, holder)
);
CREATE TABLE IF NOT EXISTS failed_ingestions (
    ingest_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);
-- Who was forgotten, up to when: a re-run of an earlier day skips their memories created up to
-- `up_to_us` (agent_id, session_id NULL: any).
CREATE TABLE IF NOT EXISTS tombstones (
    user_id TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    up_to_us INTEGER NOT NULL,
    forgotten_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    day TEXT NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    raw TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (day, file, line)
);
-- A run's quarantine of its days, staged before its writers run: it replaces the days'
-- quarantine when the run commits (with its rows), and goes when the run is rolled back.
CREATE TABLE IF NOT EXISTS quarantine_staged (
    ingest_id TEXT NOT NULL,
    day TEXT NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    raw TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (ingest_id, day, file, line)
);
CREATE TABLE IF NOT EXISTS quarantine_staged_days (
    ingest_id TEXT NOT NULL,
    day TEXT NOT NULL,
    staged_at REAL NOT NULL,
    PRIMARY KEY (ingest_id, day)
);
"""

MEMORY_COLUMNS = [
    "memory_id", "user_id", "agent_id", "session_id", "role", "content", "created_at",
    "created_at_us", "metadata", "content_hash", "expires_at_us", "day", "source_file", "source_line", "ingest_id",
]
CHUNK_COLUMNS = [
    "chunk_id", "memory_id", "chunk_index", "chunk_count", "text", "text_hash", "user_id", "day", "ingest_id",
]
BUSY_TIMEOUT_MS = 30_000
# Pages of 16 KiB for new databases: a quarter as many pages (B-tree pages, overflow pages, WAL
# frames) as SQLite's 4 KiB for the same bytes; batch inserts ran 20-30% faster and reads by
# id no slower (BENCHMARKS.md). Existing databases keep the page size they have.
PAGE_SIZE = 16_384
# The WAL is checkpointed once it holds this much, whatever the page size: SQLite's default
# of 1,000 pages, counted in pages of 4 KiB (larger pages would otherwise defer checkpoints).
WAL_CHECKPOINT_BYTES = 1000 * 4096
INTEGER_COLUMNS = {
    "created_at_us", "expires_at_us", "up_to_us", "source_line", "chunk_index", "chunk_count", "line", "superseded",
}


def select_list(columns: Sequence[str]) -> str:
    """Text columns read as BLOB: libsql stores a NUL inside text faithfully but cuts the
    text at the NUL when it hands it back as a string."""
    return ", ".join(c if c in INTEGER_COLUMNS else f"CAST({c} AS BLOB)" for c in columns)


def decode_row(columns: Sequence[str], row: tuple) -> dict:
    return {
        c: v.decode("utf-8") if isinstance(v, bytes) and c not in INTEGER_COLUMNS else v
        for c, v in zip(columns, row)
    }


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


def _days_clause(days: Sequence[str] | None) -> tuple[str, list]:
    """` WHERE day IN (...)` and its parameters; nothing for all days."""
    if days is None:
        return "", []
    return f" WHERE day IN ({placeholders(len(days))})", list(days)


def row_tuples(table: pa.Table, columns: Sequence[str], ingest_id: str) -> list[tuple]:
    """Rows of `columns` from `table`; a trailing `ingest_id` column is filled with the stamp."""
    data = [table.column(c).to_pylist() for c in columns[:-1]]
    return list(zip(*data, [ingest_id] * table.num_rows))


# SQLite binds at most 32766 parameters per statement.
MAX_PARAMS = 32766


def insert_rows(conn, table: str, columns: Sequence[str], rows: Sequence[tuple], verb: str = "INSERT OR REPLACE") -> None:
    """Insert with multi-row VALUES statements (fewer round trips than executemany)."""
    if not rows:
        return
    width = len(columns)
    per_statement = max(1, min(500, MAX_PARAMS // width))
    head = f"{verb} INTO {table} ({', '.join(columns)}) VALUES "
    one = "(" + placeholders(width) + ")"
    full_sql = head + ", ".join([one] * per_statement)
    for start in range(0, len(rows), per_statement):
        part = rows[start : start + per_statement]
        sql = full_sql if len(part) == per_statement else head + ", ".join([one] * len(part))
        conn.execute(sql, [value for row in part for value in row])


# Bulk insert: a batch in one statement with two large bound values instead of one bound value
# per cell. The libsql binding spends ~2 us binding each value while holding the GIL; here the
# texts of all columns go as one BLOB straight from the Arrow buffers, and every number (an
# integer cell, or a text's byte offset and length in that BLOB) as fixed-width ASCII decimal
# in a second BLOB, cut out again in SQL with substr and CAST. (Binding the batch as one JSON
# document was measured too: json.dumps and SQLite's per-cell `->>` cost nearly what binding does.)
# A column holding one value in every row of the batch (the day, a source file) is bound once.
_FOUR_DIGITS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), dtype=np.uint32)


def _groups(values: np.ndarray) -> int:
    """4-digit groups for the largest absolute value, with a digit to spare for the sign."""
    if values.min(initial=0) == np.iinfo(np.int64).min:
        raise OverflowError("-2**63 has no absolute value in int64")
    largest = max(int(values.max(initial=0)), -int(values.min(initial=0)))
    return -(-(len(str(largest)) + 1) // 4)


def _write_decimal(values: np.ndarray, null: np.ndarray | None, out: np.ndarray) -> None:
    """int64 `values` into `out` (rows x groups of uint32) as zero-padded ASCII decimal, '-'
    first when negative; all NUL bytes where `null`."""
    rest = np.abs(values)
    for g in reversed(range(out.shape[1])):
        rest, low = np.divmod(rest, 10_000)
        out[:, g] = _FOUR_DIGITS[low]
    negative = values < 0
    if negative.any():
        out.view(np.uint8)[negative, 0] = ord("-")  # view of the row's first group, first byte
    if null is not None:
        out[null] = 0


def _constant(column: pa.Array) -> bool:
    """Every row holds the same non-null value (and there are at least two rows)."""
    return len(column) > 1 and column.null_count == 0 and pc.all(pc.equal(column, column[0])).as_py()


def sql_type(arrow_type: pa.DataType) -> str | None:
    """The SQLite type `bulk_insert` stores an Arrow column as, if it can."""
    if pa.types.is_integer(arrow_type):
        return "INTEGER"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "TEXT"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or pa.types.is_fixed_size_binary(arrow_type):
        return "BLOB"
    return None


def _bytes_and_offsets(column: pa.Array) -> tuple[pa.Buffer, np.ndarray]:
    """A text or binary column's data buffer and its values' offsets in it (n + 1, int64)."""
    if pa.types.is_fixed_size_binary(column.type):
        size = column.type.byte_width
        return column.buffers()[1], (np.arange(len(column) + 1, dtype=np.int64) + column.offset) * size
    _, offset_buffer, data_buffer = column.buffers()
    offset_type = np.int64 if pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(
        offset_buffer, dtype=offset_type, count=len(column) + 1, offset=column.offset * np.dtype(offset_type).itemsize
    )
    return data_buffer, offsets.astype(np.int64)


# The batch's row numbers 0 .. n-1: SQLite's generate_series where the build has it (the libsql
# wheels do), else a recursive CTE, which alone costs ~7 ms per 8,000 rows against ~1 ms.
ROW_NUMBERS = "WITH batch(i) AS (SELECT value FROM generate_series(0, ?3 - 1)) "
ROW_NUMBERS_RECURSIVE = "WITH RECURSIVE batch(i) AS (SELECT 0 WHERE 0 < ?3 UNION ALL SELECT i + 1 FROM batch WHERE i + 1 < ?3) "


def has_generate_series(conn) -> bool:
    """Whether SQLite was built with generate_series. Only its absence ("no such table") means
    no: any other error (a closed or broken connection, a locked or corrupt database) is raised,
    not taken as an answer that would keep the store on the slow path for its lifetime."""
    try:
        return conn.execute("SELECT count(*) FROM generate_series(0, 2)").fetchone()[0] == 3
    except Exception as exc:
        if "no such table: generate_series" in str(exc).lower():
            return False
        raise


def bulk_insert(
    table: str, columns: Sequence[str], data: pa.Table, stamp: dict | None = None, verb: str = "INSERT OR REPLACE",
    *, series: bool = True,
) -> tuple[str, list]:
    """One statement (SQL and parameters) inserting every row of `data`; the columns in `stamp`
    get the one value given there for every row. Text, binary and integer columns. `series`:
    the database has generate_series."""
    stamp = stamp or {}
    statement = _BulkStatement(data.num_rows)
    exprs = []
    for name in columns:
        if name in stamp:
            exprs.append(statement.bound(stamp[name]))
            continue
        column = data.column(name).combine_chunks()
        kind = sql_type(column.type)
        if kind is None:
            raise TypeError(f"bulk_insert: column {name} is {column.type}, not text, binary or integer")
        if _constant(column):  # bound once, as bytes: exact for any int64 and any text (NUL too)
            value = column[0].as_py()
            exprs.append(f"CAST({statement.bound(value if kind == 'BLOB' else str(value).encode())} AS {kind})")
            continue
        null = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
        if kind == "INTEGER":
            exprs.append(statement.integer(column.fill_null(0).to_numpy(zero_copy_only=False), null))
        else:
            cut = statement.bytes_cut(column, null)
            exprs.append(cut if kind == "BLOB" else f"CAST({cut} AS TEXT)")  # a cut of a BLOB is a BLOB
    sql = (
        (ROW_NUMBERS if series else ROW_NUMBERS_RECURSIVE)
        + f"{verb} INTO {table} ({', '.join(columns)}) SELECT {', '.join(exprs)} FROM batch"
    )
    return sql, statement.params()


class _BulkStatement:
    """The parameters of one bulk insert, and the SQL expressions that cut each row's values
    out of them: ?1 the text and binary values (column after column, UTF-8 as Arrow holds it,
    joined once), ?2 the integers as fixed-width decimal digits (a row after another), ?3 the
    number of rows, ?4 the width of a row's digits in bytes; ?5 on, single values."""

    def __init__(self, rows: int):
        self.rows = rows
        self.texts: list = []  # buffers, joined once
        self.text_size = 0
        self.fields: list[tuple[np.ndarray, np.ndarray | None, int]] = []  # per field: values, null mask, groups
        self.width = 0  # bytes of digits per row
        self.singles: list = []  # ?5 on

    def bound(self, value) -> str:
        """A value bound once for every row."""
        self.singles.append(value)
        return f"?{4 + len(self.singles)}"

    def integer(self, values: np.ndarray, null: np.ndarray | None) -> str:
        """An integer per row, from its digits in ?2 (a NULL where `null`)."""
        values = values.astype(np.int64, copy=False)
        groups = _groups(values)
        self.fields.append((values, null, groups))
        cut = f"substr(?2, i * ?4 + {self.width + 1}, {4 * groups})"
        self.width += 4 * groups
        if null is None:
            return f"CAST({cut} AS INTEGER)"
        return f"CAST(nullif({cut}, zeroblob({4 * groups})) AS INTEGER)"

    def bytes_cut(self, column: pa.Array, null: np.ndarray | None) -> str:
        """A text or binary value per row, cut out of ?1."""
        data_buffer, offsets = _bytes_and_offsets(column)
        first, last = int(offsets[0]), int(offsets[-1])
        if last > first:
            self.texts.append(data_buffer.slice(first, last - first))
        lengths = np.diff(offsets)
        if null is None and len(lengths) and (lengths == lengths[0]).all():
            # Every value the same size (hashes, ids, timestamps, vectors): its place follows
            # from the row number, with no offset or length to cut out and parse.
            cut = f"substr(?1, i * {lengths[0]} + {self.text_size + 1}, {lengths[0]})"
        else:
            start = self.integer(offsets[:-1] - first + self.text_size + 1, None)  # 1-based, in the joined BLOB
            length = self.integer(lengths, null)
            cut = f"substr(?1, {start}, {length})"
        self.text_size += last - first
        return cut

    def params(self) -> list:
        texts = [*self.texts, b"\0"]  # never cut from, but SQLite's substr of an empty BLOB is NULL even for length 0
        digits = np.empty((self.rows, self.width // 4), dtype=np.uint32)
        at = 0
        for values, null, groups in self.fields:
            _write_decimal(values, null, digits[:, at : at + groups])
            at += groups
        return [b"".join(texts), digits.tobytes(), self.rows, self.width, *self.singles]


# Databases of earlier releases key memories and chunks otherwise (by id alone, before rows were
# versions; then by id and version). Opening one renames those tables aside, lets the schema
# create the current ones, and copies the rows.
KEYS = {"memories": ["day", "memory_id", "ingest_id"], "chunks": ["day", "ingest_id", "chunk_id"]}
# (the columns tables of earlier releases have: no expires_at_us)
COLUMNS = {"memories": [c for c in MEMORY_COLUMNS if c != "expires_at_us"], "chunks": CHUNK_COLUMNS}
ASIDE = ("{}_old_key", "{}_unversioned")  # the names tables are set aside under, now and before


def _old_key(conn, table: str) -> bool:
    info = conn.execute(f"PRAGMA table_info({table})").fetchall()  # (cid, name, type, notnull, default, pk)
    key = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5]]
    return bool(info) and key != KEYS[table]


def _set_aside(conn, table: str) -> list[str]:
    names = [aside.format(table) for aside in ASIDE]
    found = conn.execute(f"SELECT name FROM sqlite_master WHERE name IN ({placeholders(len(names))})", names).fetchall()
    return [row[0] for row in found]


def old_key_tables(conn) -> list[str]:
    """Tables still keyed as an earlier release keyed them, or set aside and not yet copied."""
    return [table for table in KEYS if _old_key(conn, table) or _set_aside(conn, table)]


def set_aside_old_key_tables(conn) -> None:
    for table in KEYS:
        if _old_key(conn, table):
            conn.execute(f"DROP INDEX IF EXISTS {table}_day")  # the current schema keeps none
            conn.execute(f"ALTER TABLE {table} RENAME TO {ASIDE[0].format(table)}")


def copy_old_key_rows(conn) -> None:
    for table in KEYS:
        columns = ", ".join(COLUMNS[table])
        for aside in _set_aside(conn, table):
            conn.execute(f"INSERT OR IGNORE INTO {table} ({columns}) SELECT {columns} FROM {aside}")
            conn.execute(f"DROP TABLE {aside}")
    touch(conn, "1 = 1", [])  # the versions copied in
    mark_superseded(conn)


def missing_columns(conn) -> set[str]:
    have = {row[1] for row in conn.execute("PRAGMA table_info(memories)").fetchall()}
    return {"expires_at_us", "superseded"} - have


def add_missing_columns(conn) -> None:
    """Columns added since a database was made: `expires_at_us` (nullable, so old rows simply
    lack the value) and `superseded`, marked at once for the versions already held."""
    missing = missing_columns(conn)
    if "expires_at_us" in missing:
        conn.execute("ALTER TABLE memories ADD COLUMN expires_at_us INTEGER")
    if "superseded" in missing:
        conn.execute("ALTER TABLE memories ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0")
        touch(conn, "1 = 1", [])
        mark_superseded(conn)


# Search shows a memory's current version only: its newest by created_at_us (then day, then
# run). Every change to a memory's rows (a run's days committed or rolled back, versions
# dropped, memories deleted) marks the others `superseded` in the same transaction, so that
# search reads the mark with the candidate's row instead of looking for newer versions at query
# time. The memory ids whose rows change are `touch`ed first, and `mark_superseded` ranks every
# version of those memories again. With no index on memory_id (see SCHEMA) that is one scan
# of the table per change: ~36 ms at 90,000 memories.
NEWEST_FIRST = "created_at_us DESC, day DESC, ingest_id DESC"


def touch(conn, where: str, params: Sequence) -> None:
    """Note the memory ids of the rows matching `where` for `mark_superseded`."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS touched (memory_id TEXT PRIMARY KEY)")
    conn.execute(f"INSERT OR IGNORE INTO temp.touched SELECT memory_id FROM memories WHERE {where}", params)


def mark_superseded(conn) -> None:
    """Mark every version of the touched memories but the newest `superseded` (and the newest not)."""
    if conn.execute("SELECT EXISTS (SELECT 1 FROM temp.touched)").fetchone()[0]:
        conn.execute(
            "UPDATE memories SET superseded = ranked.place > 1 FROM ("
            f"SELECT rowid AS row, row_number() OVER (PARTITION BY user_id, memory_id ORDER BY {NEWEST_FIRST}) AS place "
            "FROM memories WHERE memory_id IN (SELECT memory_id FROM temp.touched)) AS ranked "
            "WHERE memories.rowid = ranked.row AND memories.superseded != (ranked.place > 1)"
        )
    conn.execute("DELETE FROM temp.touched")


def explain_libsql(exc: BaseException, url: str, cause: str | None = None) -> StoreUnavailable | None:
    """The LibSQL adapter's error classification. The libsql driver raises a bare ValueError
    carrying only SQLite's message (no result code, no extended code, no error classes), so
    SQLITE_BUSY/SQLITE_LOCKED (transient) and a full or read-only disk (terminal) can only be
    told by SQLite's fixed message texts and the errno of OS errors (errors.CAUSES), here in
    one place; any other driver error stays as raised and is terminal for the writer."""
    return explain(exc, f"LibSQL database {url!r}", SETTING, cause=cause, path=local_path(url))


def connect(url: str, auth_token: str | None = None, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
    """One LibSQL connection in autocommit mode, WAL and a busy timeout set."""
    import libsql

    with explained(lambda exc: explain_libsql(exc, url, "cannot be opened")):
        remote = url.startswith(("libsql://", "http://", "https://", "ws://", "wss://"))
        if remote:
            return libsql.connect(url, auth_token=auth_token or "", isolation_level=None)
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        conn = libsql.connect(url, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # takes effect only where the file is new
        conn.execute("PRAGMA journal_mode = WAL")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, WAL_CHECKPOINT_BYTES // page_size)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable at checkpoints, never corrupt
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: batch inserts touch many index pages
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn


_WRITE_LOCKS: dict[str, threading.Lock] = {}  # one per database in this process
_REGISTRY_LOCK = threading.Lock()


def _write_lock(url: str) -> threading.Lock:
    key = url if "://" in url else os.path.realpath(url)
    with _REGISTRY_LOCK:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


class LibsqlPool:
    """A fixed number of connections, opened on demand and handed out one caller at a time."""

    def __init__(self, url: str, size: int = 4, auth_token: str | None = None, busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.url = url
        self.size = size
        self.auth_token = auth_token
        self.busy_timeout_ms = busy_timeout_ms
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()
        self._all: list = []

    @contextmanager
    def connection(self) -> Iterator:
        """A pooled connection; a lock, a full or a read-only disk met on it raised as
        StoreUnavailable (reads too: the writer retries a transient one wherever it happens)."""
        conn = self._acquire()
        try:
            with explained(lambda exc: explain_libsql(exc, self.url)):
                yield conn
        finally:
            self._idle.put(conn)

    def _acquire(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._opened < self.size:
                self._opened += 1
                conn = connect(self.url, self.auth_token, self.busy_timeout_ms)
                self._all.append(conn)
                return conn
        return self._idle.get()

    @contextmanager
    def transaction(self) -> Iterator:
        """A pooled connection in a write transaction. Writers in this process take turns on
        a lock first: the libsql binding keeps the GIL while SQLite's busy handler waits, so
        a thread waiting there would stop the thread that holds the lock from committing
        (a deadlock until the busy timeout). Other processes still wait in SQLite."""
        with _write_lock(self.url), self.connection() as conn, transaction(conn):
            yield conn

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._opened = 0
        self._idle = queue.LifoQueue()


@contextmanager
def transaction(conn) -> Iterator:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (unless SQLite already did, as it
    does when the disk is full)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# New cache vectors per statement: SQLite refuses a BLOB over 1 GB, and a caller may put a
# whole day's vectors at once.
CACHE_ROWS_PER_STATEMENT = 16_384


class LibsqlStore(DayReads):
    days_filter = staticmethod(_days_clause)

    def __init__(self, pool: LibsqlPool):
        self.pool = pool
        self.url = pool.url
        with explained(lambda exc: self.explain(exc, "cannot be opened")), pool.connection() as conn:
            if old_key_tables(conn):  # read without a lock: writing only when there is work
                with transaction(conn):
                    set_aside_old_key_tables(conn)
            conn.executescript(SCHEMA)
            if missing_columns(conn):
                with transaction(conn):
                    if missing_columns(conn):  # another process may have added them meanwhile
                        add_missing_columns(conn)
            self.series = has_generate_series(conn)
            if old_key_tables(conn):
                with transaction(conn):
                    copy_old_key_rows(conn)

    def close(self) -> None:
        self.pool.close()

    def explain(self, exc: BaseException, cause: str | None = None) -> StoreUnavailable | None:
        """`exc` as a StoreUnavailable naming this database and AGENTMEM_DATABASE_URL, when the
        environment caused it (locked, full, read-only) or `cause` is given."""
        return explain_libsql(exc, self.pool.url, cause)

    @contextmanager
    def writing(self) -> Iterator:
        """A pooled connection in one transaction; the environment's failures explained."""
        with explained(self.explain), self.pool.transaction() as conn:
            yield conn

    def probe(self) -> None:
        """Take the write lock and write nothing: fails now when locked or read-only."""
        with self.writing() as conn:
            conn.execute("DELETE FROM day_leases WHERE 0")

    def write(self, memories: pa.Table, chunks: pa.Table, ingest_id: str) -> int:
        """Insert a batch of memories and chunks, stamped with `ingest_id`, in one transaction
        (a retried batch replaces its own rows)."""
        if memories.num_rows and pc.max(pc.abs(memories["created_at_us"])).as_py() >= 2**53:
            # libsql binds larger Python ints as floats: refuse rather than lose precision
            raise ValueError("created_at_us beyond 2**53 cannot be stored exactly in LibSQL")
        statements = [
            bulk_insert(table, columns, rows, {"ingest_id": ingest_id}, series=self.series)
            for table, columns, rows in (("memories", MEMORY_COLUMNS, memories), ("chunks", CHUNK_COLUMNS, chunks))
            if rows.num_rows
        ]
        with self.writing() as conn:
            for sql, params in statements:
                conn.execute(sql, params)
        return chunks.num_rows

    def versions(self, days: Sequence[str]) -> list[str]:
        """The ingestions whose rows `days` hold."""
        where, params = _days_clause(days)
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT ingest_id FROM memories{where} UNION SELECT ingest_id FROM chunks{where}", params + params
            ).fetchall()
        return sorted(r[0] for r in rows)

    def drop_versions(self, days: Sequence[str], ingest_ids: Sequence[str]) -> None:
        """Delete the memories and chunks of `days` written by the ingestions `ingest_ids`."""
        if not ingest_ids:
            return
        params = [*days, *ingest_ids]
        where = f"day IN ({placeholders(len(days))}) AND ingest_id IN ({placeholders(len(ingest_ids))})"
        with self.writing() as conn:
            touch(conn, where, params)
            conn.execute(f"DELETE FROM chunks WHERE {where}", params)
            conn.execute(f"DELETE FROM memories WHERE {where}", params)
            mark_superseded(conn)

    def mark_failed(self, ingest_id: str, reason: str) -> None:
        """Record that the ingestion failed: its other writers stop and remove their rows."""
        with self.writing() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO failed_ingestions (ingest_id, reason, failed_at) VALUES (?, ?, ?)",
                [ingest_id, reason, time.time()],
            )

    def failure(self, ingest_id: str) -> str | None:
        """Why the ingestion failed, if one of its writers recorded a failure."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT reason FROM failed_ingestions WHERE ingest_id = ?", [ingest_id]).fetchone()
        return row[0] if row else None

    def cached_vectors(self, model: str, hashes: Sequence[str]) -> dict[str, bytes]:
        """Vectors (float32 bytes) already computed by `model` for these text hashes."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(hashes))
        with self.pool.connection() as conn:
            for start in range(0, len(unique), 900):
                part = unique[start : start + 900]
                rows = conn.execute(
                    f"SELECT text_hash, vector FROM embedding_cache WHERE model = ? "
                    f"AND text_hash IN ({placeholders(len(part))})",
                    [model, *part],
                ).fetchall()
                found.update(rows)
        return found

    def cache_vectors(self, model: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Keep `vectors` (one row of float32 per hash) computed by `model` for the texts of
        `hashes`; a hash kept before keeps its vector. In one bulk statement: the vectors go
        straight from the array, none made a Python object."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(hashes):
            return
        if vectors.ndim != 2 or len(vectors) != len(hashes):
            raise ValueError(f"{len(hashes)} hashes for vectors of shape {vectors.shape}")
        size = vectors.shape[1] * vectors.itemsize
        rows = pa.table({
            "text_hash": pa.array(hashes, pa.string()),
            "vector": pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), len(vectors), [None, pa.py_buffer(vectors)]),
        })
        columns = ["model", "text_hash", "vector"]
        with self.writing() as conn:
            for start in range(0, rows.num_rows, CACHE_ROWS_PER_STATEMENT):  # BLOBs of at most ~25 MB
                part = rows.slice(start, CACHE_ROWS_PER_STATEMENT)
                conn.execute(*bulk_insert("embedding_cache", columns, part, {"model": model}, "INSERT OR IGNORE", series=self.series))

    def try_lease(self, days: Sequence[str], ingest_id: str, holder: str, ttl: float) -> list[dict]:
        """Take (or renew) `holder`'s lease on `days` unless another ingestion holds a live one;
        returns the blocking leases (empty when taken). A lease of a dead process on this host,
        or one past its expiry, does not block."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        columns = ["day", "holder", "ingest_id", "host", "pid", "expires_at"]
        with self.writing() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(columns)} FROM day_leases WHERE day IN ({placeholders(len(days))}) AND ingest_id != ?",
                [*days, ingest_id],
            ).fetchall()
            blocking = [
                lease for lease in (dict(zip(columns, r)) for r in rows)
                if lease_blocks(lease, host, now)
            ]
            if not blocking:
                insert_rows(
                    conn, "day_leases", columns, [(d, holder, ingest_id, host, pid, now + ttl) for d in days]
                )
        return blocking

    def release_lease(self, days: Sequence[str], holder: str) -> None:
        with self.writing() as conn:
            conn.execute(
                f"DELETE FROM day_leases WHERE holder = ? AND day IN ({placeholders(len(days))})", [holder, *days]
            )

    def replace_quarantine(self, days: Sequence[str], records: Sequence) -> int:
        """Make the quarantine of `days` exactly `records` (QuarantineRecord-like objects) now.
        A run stages its quarantine instead (`stage_quarantine`), so that it goes with its rows."""
        day_params = list(days)
        with self.writing() as conn:
            conn.execute(f"DELETE FROM quarantine WHERE day IN ({placeholders(len(day_params))})", day_params)
            if records:
                conn.executemany(
                    "INSERT OR REPLACE INTO quarantine (day, file, line, raw, reason) VALUES (?, ?, ?, ?, ?)",
                    [(r.day, r.file, r.line, r.raw, r.reason) for r in records],
                )
        return len(records)

    def stage_quarantine(self, days: Sequence[str], records: Sequence, ingest_id: str) -> int:
        """Keep `records` as the quarantine `days` get when the ingestion `ingest_id` commits
        (`commit_days`); its rollback drops them, and the days keep the quarantine they had."""
        day_params = list(days)
        where = f"ingest_id = ? AND day IN ({placeholders(len(day_params))})"
        with self.writing() as conn:
            conn.execute(f"DELETE FROM quarantine_staged WHERE {where}", [ingest_id, *day_params])
            if records:
                conn.executemany(
                    "INSERT OR REPLACE INTO quarantine_staged (ingest_id, day, file, line, raw, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(ingest_id, r.day, r.file, r.line, r.raw, r.reason) for r in records],
                )
            now = time.time()
            insert_rows(conn, "quarantine_staged_days", ["ingest_id", "day", "staged_at"], [(ingest_id, d, now) for d in day_params])
        return len(records)

    def commit_days(self, days: Sequence[str], ingest_id: str, replaces: Sequence[str]) -> None:
        """In one transaction: drop the versions `replaces` of `days`, mark the versions the
        days' memories now have on other days, and give the days the quarantine `ingest_id`
        staged for them (days it staged none for keep theirs)."""
        day_params = list(days)
        in_days = f"day IN ({placeholders(len(day_params))})"
        with self.writing() as conn:
            touch(conn, in_days, day_params)
            if replaces:
                where = f"{in_days} AND ingest_id IN ({placeholders(len(replaces))})"
                conn.execute(f"DELETE FROM chunks WHERE {where}", [*day_params, *replaces])
                conn.execute(f"DELETE FROM memories WHERE {where}", [*day_params, *replaces])
            mark_superseded(conn)
            staged = [
                row[0] for row in conn.execute(
                    f"SELECT day FROM quarantine_staged_days WHERE ingest_id = ? AND {in_days}", [ingest_id, *day_params]
                ).fetchall()
            ]
            if staged:
                in_staged = f"day IN ({placeholders(len(staged))})"
                conn.execute(f"DELETE FROM quarantine WHERE {in_staged}", staged)
                conn.execute(
                    f"INSERT OR REPLACE INTO quarantine (day, file, line, raw, reason) SELECT day, file, line, raw, reason "
                    f"FROM quarantine_staged WHERE ingest_id = ? AND {in_staged}",
                    [ingest_id, *staged],
                )
            # this run's staging, and that of the runs it replaces (killed ones leave theirs)
            for owner in [ingest_id, *replaces]:
                self._drop_staged_quarantine(conn, owner, day_params)

    def rollback_days(self, days: Sequence[str], ingest_id: str) -> None:
        """In one transaction: the rows and the staged quarantine of `ingest_id` in `days` go."""
        day_params = list(days)
        where = f"day IN ({placeholders(len(day_params))}) AND ingest_id = ?"
        with self.writing() as conn:
            touch(conn, where, [*day_params, ingest_id])
            conn.execute(f"DELETE FROM chunks WHERE {where}", [*day_params, ingest_id])
            conn.execute(f"DELETE FROM memories WHERE {where}", [*day_params, ingest_id])
            mark_superseded(conn)
            self._drop_staged_quarantine(conn, ingest_id, day_params)

    @staticmethod
    def _drop_staged_quarantine(conn, ingest_id: str, days: Sequence[str]) -> None:
        where = f"ingest_id = ? AND day IN ({placeholders(len(days))})"
        conn.execute(f"DELETE FROM quarantine_staged WHERE {where}", [ingest_id, *days])
        conn.execute(f"DELETE FROM quarantine_staged_days WHERE {where}", [ingest_id, *days])

    def chunk_ids(self, days: Sequence[str] | None = None) -> list[str]:
        where, params = _days_clause(days)
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT chunk_id FROM chunks{where}", params).fetchall()
        return [r[0] for r in rows]

    def chunk_id_batches(self, days: Sequence[str] | None = None, batch_rows: int = 8192) -> Iterator[list[str]]:
        """The chunk ids of `days` (of all days when None), a batch at a time."""
        where, params = _days_clause(days)
        with self.pool.connection() as conn:
            cursor = conn.execute(f"SELECT chunk_id FROM chunks{where}", params)
            while rows := cursor.fetchmany(batch_rows):
                yield [r[0] for r in rows]

    def memories(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """Full memory rows by (day, memory_id), as their rows are keyed, with `superseded`
        (a newer version of the memory is held); keys LibSQL does not hold are absent."""
        wanted = sorted(set(keys))
        columns = [*MEMORY_COLUMNS, "superseded"]
        out: dict[tuple[str, str], dict] = {}
        with self.pool.connection() as conn:
            for start in range(0, len(wanted), 900):
                part = wanted[start : start + 900]
                # one index seek per key (day IN ... AND memory_id IN ... seeks every pairing:
                # 3-4x slower for a search's candidates spread over many days)
                rows = conn.execute(
                    f"SELECT {select_list(columns)} FROM memories WHERE (day, memory_id) IN "
                    f"(VALUES {', '.join(['(?, ?)'] * len(part))})",
                    [value for key in part for value in key],
                ).fetchall()
                for row in rows:
                    record = decode_row(columns, row)
                    key = record["day"], record["memory_id"]
                    record["metadata"] = json.loads(record["metadata"])
                    record["superseded"] = superseded(record, out.get(key))
                    out[key] = record
        return out

    def quarantine(self, days: Sequence[str] | None = None) -> list[dict]:
        columns = ["day", "file", "line", "raw", "reason"]
        where, params = _days_clause(days)
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {select_list(columns)} FROM quarantine{where} ORDER BY day, file, line", params
            ).fetchall()
        return [decode_row(columns, r) for r in rows]

    # ------------------------------------------------------------------ lifecycle
    # (engine/lifecycle.py drives these; the same methods on every system of record)

    def versions_of(self, user_id: str, memory_id: str) -> list[dict]:
        """Every stored version of one memory of one user, oldest first (a plain scan: the
        table keeps no index on memory_id, so that inserts stay in their day's pages)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {select_list(MEMORY_COLUMNS)} FROM memories WHERE memory_id = ? AND user_id = ? "
                "ORDER BY created_at_us, day, ingest_id",
                [memory_id, user_id],
            ).fetchall()
        out = []
        for row in rows:
            record = decode_row(MEMORY_COLUMNS, row)
            record["metadata"] = json.loads(record["metadata"])
            out.append(record)
        return out

    def current_count(self, now_us: int) -> int:
        """Memories as search sees them: one per (user, memory_id), not expired."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT count(*) FROM (SELECT user_id, memory_id, max(created_at_us) AS newest, expires_at_us "
                "FROM memories GROUP BY user_id, memory_id) WHERE expires_at_us IS NULL OR expires_at_us > ?",
                [now_us],
            ).fetchone()[0]

    def current_in_days(self, days: Sequence[str], now_us: int) -> dict[str, int]:
        """Of the memories stored for `days`: how many versions, and how many of those are
        current (the memory's newest version across all days, ties to the later day) and
        not expired: what search can return from those days."""
        marks = placeholders(len(days))
        with self.pool.connection() as conn:
            versions, current = conn.execute(
                "SELECT count(*), coalesce(sum(CASE WHEN place = 1 AND (expires_at_us IS NULL OR expires_at_us > ?) "
                "THEN 1 ELSE 0 END), 0) FROM ("
                "SELECT day, expires_at_us, row_number() OVER (PARTITION BY user_id, memory_id "
                "ORDER BY created_at_us DESC, day DESC, ingest_id DESC) AS place FROM memories "
                f"WHERE (user_id, memory_id) IN (SELECT user_id, memory_id FROM memories WHERE day IN ({marks}))"
                f") AS ranked WHERE day IN ({marks})",
                [now_us, *days, *days],
            ).fetchone()
        return {"versions": versions, "current": current}

    def scope_keys(self, user_id: str, agent_id: str | None, session_id: str | None, up_to_us: int) -> list[tuple[str, str, str]]:
        """(day, user_id, memory_id) of the scope's memory rows created up to `up_to_us`."""
        clauses, params = ["user_id = ?", "created_at_us <= ?"], [user_id, up_to_us]
        for column, value in (("agent_id", agent_id), ("session_id", session_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return self.memory_keys(" AND ".join(clauses), params)

    def expired_keys(self, at_us: int) -> list[tuple[str, str, str]]:
        """Every version past its expires_at, and every version of a memory whose current
        version is past it (SQLite: the bare expires_at_us is that of the max(created_at_us) row)."""
        return self.memory_keys(
            "expires_at_us <= ? OR (user_id, memory_id) IN (SELECT user_id, memory_id FROM "
            "(SELECT user_id, memory_id, max(created_at_us), expires_at_us FROM memories GROUP BY user_id, memory_id) "
            "WHERE expires_at_us <= ?)",
            [at_us, at_us],
        )

    def memory_keys(self, where: str, params: Sequence) -> list[tuple[str, str, str]]:
        """(day, user_id, memory_id) of the memory rows matching `where` (bound `params`)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT day, user_id, memory_id FROM memories WHERE {where}", list(params)
            ).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    def delete_memories(self, keys: Sequence[tuple[str, str, str]], *, secure: bool = False) -> dict:
        """Delete the memories and chunks of `keys` (day, user_id, memory_id), every run's
        rows, in one transaction; then the embedding-cache entries that only their chunks used
        (of every model). `secure`: SQLite overwrites what it deletes with zeros."""
        keys = sorted(set(keys))
        if not keys:
            return {"memories": 0, "chunks": 0, "cache_entries": 0}
        with explained(self.explain), self.pool.transaction() as conn:
            if secure:
                conn.execute("PRAGMA secure_delete = ON")
            try:
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (day TEXT, user_id TEXT, memory_id TEXT)")
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed_hashes (text_hash TEXT PRIMARY KEY)")
                conn.execute("DELETE FROM doomed")
                conn.execute("DELETE FROM doomed_hashes")
                insert_rows(conn, "doomed", ["day", "user_id", "memory_id"], keys, verb="INSERT")
                match = "(day, user_id, memory_id) IN (SELECT day, user_id, memory_id FROM doomed)"
                conn.execute(f"INSERT OR IGNORE INTO doomed_hashes SELECT text_hash FROM chunks WHERE {match}")
                chunks = conn.execute(f"DELETE FROM chunks WHERE {match}").rowcount
                touch(conn, match, [])
                memories = conn.execute(f"DELETE FROM memories WHERE {match}").rowcount
                mark_superseded(conn)
                cache = conn.execute(
                    "DELETE FROM embedding_cache WHERE text_hash IN (SELECT text_hash FROM doomed_hashes) "
                    "AND text_hash NOT IN (SELECT text_hash FROM chunks)"
                ).rowcount
                conn.execute("DELETE FROM doomed")
                conn.execute("DELETE FROM doomed_hashes")
            finally:
                if secure:
                    conn.execute("PRAGMA secure_delete = OFF")
        return {"memories": memories, "chunks": chunks, "cache_entries": cache}

    def delete_quarantined(self, keys: Sequence[tuple[str, str, int]], *, secure: bool = False) -> int:
        """Delete quarantined lines by (day, file, line)."""
        if not keys:
            return 0
        with explained(self.explain), self.pool.transaction() as conn:
            if secure:
                conn.execute("PRAGMA secure_delete = ON")
            for day, file, line in keys:
                conn.execute("DELETE FROM quarantine WHERE day = ? AND file = ? AND line = ?", [day, file, line])
            if secure:
                conn.execute("PRAGMA secure_delete = OFF")
        return len(keys)

    def add_tombstone(self, user_id: str, agent_id: str | None, session_id: str | None, up_to_us: int, at: str) -> None:
        with self.writing() as conn:
            conn.execute(
                "INSERT INTO tombstones (user_id, agent_id, session_id, up_to_us, forgotten_at) VALUES (?, ?, ?, ?, ?)",
                [user_id, agent_id, session_id, up_to_us, at],
            )

    def tombstones(self) -> list[dict]:
        columns = ["user_id", "agent_id", "session_id", "up_to_us", "forgotten_at"]
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT {select_list(columns)} FROM tombstones").fetchall()
        return [decode_row(columns, row) for row in rows]

    def live_leases(self) -> list[dict]:
        """Leases of ingestions still writing (not past expiry, not of a dead process here)."""
        host, now = socket.gethostname(), time.time()
        columns = ["day", "holder", "ingest_id", "host", "pid", "expires_at"]
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM day_leases").fetchall()
        return [
            lease for lease in (dict(zip(columns, r)) for r in rows)
            if lease_blocks(lease, host, now)
        ]

    def scrub(self) -> int:
        """Leave no deleted bytes behind: VACUUM rewrites the database without its free pages
        (and the deleted text in them), then the WAL is checkpointed and truncated. Returns the
        bytes the database file holds afterwards (what VACUUM wrote)."""
        if local_path(self.pool.url) is None:
            return 0  # a remote server manages its own pages
        with explained(self.explain), _write_lock(self.pool.url), self.pool.connection() as conn:
            conn.execute("PRAGMA temp_store = FILE")  # the transient copy on disk, not in memory
            conn.execute("VACUUM")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return page_size * pages
