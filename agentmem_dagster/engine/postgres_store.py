"""PostgreSQL side, the system of record for the scale-out path: the same interface and
semantics as `libsql_store.LibsqlStore` (see `record_store.SystemOfRecord`), through psycopg 3
and a psycopg_pool connection pool.

What differs from LibSQL, on purpose:
- Batches go in with COPY (text format, built column-wise by Arrow), one transaction per batch. A batch whose rows are already
  there (a retry after a commit whose answer was lost) goes through a temporary table and
  INSERT ... ON CONFLICT instead, so a retried batch still replaces its own rows.
- PostgreSQL's TEXT cannot hold NUL; free text (memory content, chunk text, quarantined raw
  lines and their reasons) is kept as BYTEA holding the UTF-8 bytes, so any text round-trips.
  Identifiers (user, agent, session, memory ids) are TEXT: one holding NUL is refused.
- Writers are not serialised by one database lock: PostgreSQL's row locks and MVCC let
  ingestions of different days write at once; the day leases take a table lock to decide.
- `scrub` (after forget) is VACUUM FULL of the tables holding memory text, then a CHECKPOINT:
  the tables are rewritten without the deleted rows. What PostgreSQL may still hold is said
  in the README ("System of record on PostgreSQL").
- Errors are classified by SQLSTATE (and psycopg's error classes), never by message text.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import StoreError, StoreUnavailable, TerminalStoreError, TransientStoreError, detail
from .libsql_store import CHUNK_COLUMNS, MEMORY_COLUMNS, _bytes_and_offsets
from .record_store import SETTING, DayReads, lease_blocks, redacted, superseded

ID = 'TEXT COLLATE "C"'  # ids and days compare bytewise, as SQLite's BINARY does
# Every version of a memory, ranked newest first (the current one is 1): see `mark_superseded`.
RANKED = (
    "SELECT day, memory_id, ingest_id, row_number() OVER (PARTITION BY user_id, memory_id "
    "ORDER BY created_at_us DESC, day DESC, ingest_id DESC) AS place FROM memories"
)
MARK = "UPDATE memories m SET superseded = r.place > 1 FROM ({ranked}) r WHERE m.day = r.day AND m.memory_id = r.memory_id AND m.ingest_id = r.ingest_id AND m.superseded <> (r.place > 1)"
# Schema steps, applied in order once each; `agentmem_schema` records how many a database has.
MIGRATIONS = [
    f"""
    CREATE TABLE memories (
        memory_id {ID} NOT NULL, user_id {ID} NOT NULL, agent_id {ID}, session_id {ID}, role TEXT,
        content BYTEA NOT NULL, created_at TEXT NOT NULL, created_at_us BIGINT NOT NULL, metadata TEXT NOT NULL,
        content_hash TEXT NOT NULL, expires_at_us BIGINT, day {ID} NOT NULL, source_file TEXT, source_line BIGINT,
        ingest_id {ID} NOT NULL,
        PRIMARY KEY (day, memory_id, ingest_id)
    );
    CREATE TABLE chunks (
        chunk_id {ID} NOT NULL, memory_id {ID} NOT NULL, chunk_index INTEGER NOT NULL, chunk_count INTEGER NOT NULL,
        text BYTEA NOT NULL, text_hash {ID} NOT NULL, user_id {ID} NOT NULL, day {ID} NOT NULL, ingest_id {ID} NOT NULL,
        PRIMARY KEY (day, ingest_id, chunk_id)
    );
    CREATE TABLE embedding_cache (
        model TEXT NOT NULL, text_hash {ID} NOT NULL, vector BYTEA NOT NULL, PRIMARY KEY (model, text_hash)
    );
    CREATE TABLE day_leases (
        day {ID} NOT NULL, holder TEXT NOT NULL, ingest_id {ID} NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (day, holder)
    );
    CREATE TABLE failed_ingestions (ingest_id {ID} PRIMARY KEY, reason TEXT NOT NULL, failed_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE tombstones (
        user_id {ID} NOT NULL, agent_id {ID}, session_id {ID}, up_to_us BIGINT NOT NULL, forgotten_at TEXT NOT NULL
    );
    CREATE TABLE quarantine (
        day {ID} NOT NULL, file TEXT NOT NULL, line BIGINT NOT NULL, raw BYTEA NOT NULL, reason BYTEA NOT NULL,
        PRIMARY KEY (day, file, line)
    );
    CREATE TABLE quarantine_staged (
        ingest_id {ID} NOT NULL, day {ID} NOT NULL, file TEXT NOT NULL, line BIGINT NOT NULL, raw BYTEA NOT NULL,
        reason BYTEA NOT NULL, PRIMARY KEY (ingest_id, day, file, line)
    );
    CREATE TABLE quarantine_staged_days (
        ingest_id {ID} NOT NULL, day {ID} NOT NULL, staged_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (ingest_id, day)
    );
    """,
    # history reads a memory's versions by (user_id, memory_id): an index, unlike on LibSQL, where
    # a batch's random ids dirtied pages all over it; here index pages are cheap next to the WAL.
    "CREATE INDEX memories_user_memory ON memories (user_id, memory_id)",
    # which versions are no longer current (record_store.SystemOfRecord), marked for those held
    "ALTER TABLE memories ADD COLUMN superseded BOOLEAN NOT NULL DEFAULT false; " + MARK.format(ranked=RANKED),
]
MIGRATION_LOCK = 0x61676D656D  # pg_advisory_xact_lock key: one migrator at a time

TYPES = {  # the PostgreSQL type of every column COPY writes (binary COPY needs them)
    "memory_id": "text", "user_id": "text", "agent_id": "text", "session_id": "text", "role": "text",
    "content": "bytea", "created_at": "text", "created_at_us": "int8", "metadata": "text", "content_hash": "text",
    "expires_at_us": "int8", "day": "text", "source_file": "text", "source_line": "int8", "ingest_id": "text",
    "chunk_id": "text", "chunk_index": "int4", "chunk_count": "int4", "text": "bytea", "text_hash": "text",
    "model": "text", "vector": "bytea", "file": "text", "line": "int8", "raw": "bytea", "reason": "bytea",
}
BYTEA_TEXT = {"content", "text", "raw", "reason"}  # text kept as UTF-8 bytes (NUL-safe)
KEYS = {"memories": ["day", "memory_id", "ingest_id"], "chunks": ["day", "ingest_id", "chunk_id"]}
LEASE_COLUMNS = ["day", "holder", "ingest_id", "host", "pid", "expires_at"]
QUARANTINE_COLUMNS = ["day", "file", "line", "raw", "reason"]
TOMBSTONE_COLUMNS = ["user_id", "agent_id", "session_id", "up_to_us", "forgotten_at"]
SCRUBBED = ["memories", "chunks", "embedding_cache", "quarantine", "quarantine_staged", "tombstones"]

# SQLSTATE -> (transient, cause for StoreUnavailable or None). Classes match on their first two
# characters when the exact code is not listed.
TRANSIENT_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57014",  # query_canceled (statement_timeout, lock_timeout)
    "57P01", "57P02", "57P03",  # admin_shutdown, crash_shutdown, cannot_connect_now
    "53300",  # too_many_connections
    "53200",  # out_of_memory
}
TRANSIENT_CLASSES = {"08", "40"}  # connection exception, transaction rollback
UNAVAILABLE = {
    "53100": ("has no space left on its disk", "free space on the server, or set {setting} to another database"),
    "25006": ("is read-only", "point {setting} at a writable primary"),
    "42501": ("refuses this user the needed privilege", "grant it, or set {setting} to another user"),
    "3D000": ("does not exist", "create it, or fix the database name in {setting}"),
}
UNAVAILABLE_CLASSES = {
    "28": ("refused the credentials", "fix the user and password in {setting}"),
}


def _state(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def classify(exc: BaseException, url: str) -> StoreError | None:
    """`exc` (a psycopg or psycopg_pool error) as a StoreError: StoreUnavailable when the
    environment is the cause (with the setting to change), else transient or terminal by its
    SQLSTATE or class. None for anything that is not a driver error."""
    import psycopg
    import psycopg_pool

    if isinstance(exc, StoreError):
        return exc
    what = f"PostgreSQL database {redacted(url)!r}"
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return TransientStoreError(f"{what}: no pooled connection came free in time ({detail(exc)})")
    if not isinstance(exc, psycopg.Error):
        return None
    state = _state(exc)
    found = UNAVAILABLE.get(state or "") or UNAVAILABLE_CLASSES.get((state or "")[:2])
    if found is not None:
        cause, todo = found
        return StoreUnavailable(f"{what} {cause} ({detail(exc)}): {todo.format(setting=SETTING)}.")
    if state is None and isinstance(exc, psycopg.OperationalError):
        # No SQLSTATE: libpq reports a failed or lost connection without one, whether the server
        # is down (may come back), or refused the user, password or database name. All count as
        # transient (a few retries), and the message carries the server's reason.
        return StoreUnavailable(
            f"{what} cannot be reached or refused the connection ({detail(exc)}): start it, or check the host, "
            f"port, user, password and database name in {SETTING}.",
            transient=True,
        )
    if state in TRANSIENT_STATES or (state or "")[:2] in TRANSIENT_CLASSES:
        return TransientStoreError(f"{what}: {detail(exc)} (SQLSTATE {state}; may succeed if retried)")
    if isinstance(exc, psycopg.DataError) and state is None:  # refused by the client, e.g. NUL in TEXT
        return TerminalStoreError(f"{what} cannot store this value: {detail(exc)}")
    return TerminalStoreError(f"{what}: {detail(exc)}" + (f" (SQLSTATE {state})" if state else ""))


@contextmanager
def classified(url: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        found = classify(exc, url)
        if found is None or found is exc:
            raise
        raise found from exc


class PostgresPool:
    """psycopg_pool's ConnectionPool (autocommit connections; writes open a transaction),
    opened on first use so that a pool made before a fork is only used after it."""

    def __init__(self, url: str, size: int = 4, timeout: float = 60.0):
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.url = url
        self.size = size
        self.timeout = timeout
        self._pool = None
        self._lock = threading.Lock()

    def _open(self):
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=self.size, timeout=self.timeout, open=True,
                    kwargs={"autocommit": True}, check=ConnectionPool.check_connection,
                    name="agentmem",
                )
            return self._pool

    @contextmanager
    def connection(self) -> Iterator:
        with classified(self.url), self._open().connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator:
        with classified(self.url), self._open().connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def connect(url: str):
    """One autocommit connection, errors classified (migrations, tests)."""
    import psycopg

    with classified(url):
        return psycopg.connect(url, autocommit=True, connect_timeout=10)


def migrate(url: str) -> int:
    """Bring the schema up to date, one step at a time, under an advisory lock; returns the
    schema version."""
    with connect(url) as conn, classified(url), conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        conn.execute("CREATE TABLE IF NOT EXISTS agentmem_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM agentmem_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO agentmem_schema (version) VALUES (0)")
            version = 0
        else:
            version = row[0]
        for step in MIGRATIONS[version:]:
            conn.execute(step)
        if version < len(MIGRATIONS):
            conn.execute("UPDATE agentmem_schema SET version = %s", [len(MIGRATIONS)])
        return len(MIGRATIONS)


def touch(conn, where: str, params: Sequence) -> None:
    """Note the (user_id, memory_id) of the rows matching `where` for `mark_superseded`."""
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS agentmem_touched (user_id {ID}, memory_id {ID}) ON COMMIT DELETE ROWS"
    )
    conn.execute(f"INSERT INTO agentmem_touched SELECT DISTINCT user_id, memory_id FROM memories WHERE {where}", params)


def mark_superseded(conn) -> None:
    """Mark every version of the touched memories but the newest `superseded` (and the newest
    not), in the caller's transaction; the (user_id, memory_id) index finds their versions."""
    touched = "(user_id, memory_id) IN (SELECT user_id, memory_id FROM agentmem_touched)"
    conn.execute(MARK.format(ranked=f"{RANKED} WHERE {touched}"))
    conn.execute("DELETE FROM agentmem_touched")


def _column(table: pa.Table, name: str) -> list:
    column = table.column(name)
    if name in BYTEA_TEXT:  # UTF-8 as Arrow holds it, as bytes
        column = pc.cast(column, pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
    return column.to_pylist()


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes | memoryview) else value


def _decode(columns: Sequence[str], row: Sequence) -> dict:
    return {c: (_text(bytes(v)) if c in BYTEA_TEXT and v is not None else v) for c, v in zip(columns, row)}


def _utf8(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def _copy(conn, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([TYPES[c] for c in columns])
        for row in rows:
            copy.write_row(row)


# COPY's text format, built by Arrow's compute kernels a column at a time (no Python object per
# row or cell): each value escaped for COPY (backslash, tab, newline, carriage return), NULL as
# \N, BYTEA text first escaped for bytea's escape input format (a backslash doubled, NUL as
# \000, every other byte as it is, UTF-8 included), the columns joined by tabs and the rows by
# newlines into one buffer. Binary COPY fed row by row (`copy.write_row`) took the same wall
# time for 50,000 chunks here (2.4-3.8 s either way, on a loaded machine), but ~600,000 Python
# calls holding the GIL, which the other store's writer thread of the same process needs; this
# way makes ~14,000, the rest in Arrow's kernels.
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _copy_text_column(column, name: str) -> pa.ChunkedArray | pa.Array:
    integer = pa.types.is_integer(column.type)
    column = pc.cast(column, pa.large_string())
    if not integer:
        if name in BYTEA_TEXT and pc.any(pc.match_substring_regex(column, "[\\\\\x00]")).as_py():
            column = pc.replace_substring(column, "\\", "\\\\")
            column = pc.replace_substring(column, "\x00", "\\000")
        if pc.any(pc.match_substring_regex(column, "[\\\\\t\n\r]")).as_py():  # one scan; most columns need nothing
            for plain, escaped in _COPY_ESCAPES:
                column = pc.replace_substring(column, plain, escaped)
    return pc.fill_null(column, "\\N")


def copy_text(table: pa.Table, columns: Sequence[str], stamp: dict[str, str]) -> pa.Buffer:
    """The rows of `table` as COPY text-format data for `columns`; the columns in `stamp` get
    that one value in every row."""
    n = table.num_rows
    parts = [
        _copy_text_column(pa.repeat(pa.scalar(stamp[c], pa.large_string()), n) if c in stamp else table.column(c), c)
        for c in columns
    ]
    lines = pc.binary_join_element_wise(*parts, pa.scalar("\t", pa.large_string()))
    lines = pc.binary_join_element_wise(
        lines, pa.repeat(pa.scalar("", pa.large_string()), n), pa.scalar("\n", pa.large_string())
    )
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    data_buffer, offsets = _bytes_and_offsets(lines)
    return data_buffer.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _upsert(conn, table: str, columns: Sequence[str], rows: Sequence[Sequence], key: Sequence[str], update: bool) -> None:
    """COPY into a temporary table like `table`, then INSERT ... ON CONFLICT: the last row of a
    key wins (`update`), or the row already there does (not `update`)."""
    stage = f"agentmem_stage_{table}"
    conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS, agentmem_seq BIGSERIAL) ON COMMIT DELETE ROWS")
    _copy(conn, stage, columns, rows)
    names, keys = ", ".join(columns), ", ".join(key)
    on_conflict = (
        "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
        if update and len(columns) > len(key) else "DO NOTHING"
    )
    conn.execute(
        f"INSERT INTO {table} ({names}) SELECT DISTINCT ON ({keys}) {names} FROM {stage} "
        f"ORDER BY {keys}, agentmem_seq DESC ON CONFLICT ({keys}) {on_conflict}"
    )
    conn.execute(f"DELETE FROM {stage}")


def _insert(conn, table: str, columns: Sequence[str], data: pa.Table, stamp: dict[str, str], payload: pa.Buffer) -> None:
    """COPY `payload` (`copy_text` of `data`) straight into `table`; where a key is already
    there (a retried batch), replace those rows instead."""
    import psycopg

    try:
        with conn.transaction():  # a savepoint: a conflict undoes this COPY only
            with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                copy.write(payload)
    except psycopg.errors.UniqueViolation:
        rows = list(zip(*[_column(data, c) if c not in stamp else [stamp[c]] * data.num_rows for c in columns]))
        _upsert(conn, table, columns, rows, KEYS[table], update=True)


def _days(days: Sequence[str] | None) -> tuple[str, list]:
    return ("", []) if days is None else (" WHERE day = ANY(%s)", [list(days)])


class PostgresStore(DayReads):
    """The system of record on PostgreSQL (see the module's docstring for what differs)."""

    days_filter = staticmethod(_days)

    def __init__(self, pool: PostgresPool):
        self.pool = pool
        self.url = pool.url
        self.schema_version = migrate(pool.url)

    def close(self) -> None:
        self.pool.close()

    def writing(self):
        return self.pool.transaction()

    def probe(self) -> None:
        """A write transaction that writes nothing: fails now on a read-only or unreachable server."""
        with self.writing() as conn:
            conn.execute("DELETE FROM day_leases WHERE false")

    # ------------------------------------------------------------------ ingestion

    def write(self, memories: pa.Table, chunks: pa.Table, ingest_id: str) -> int:
        """A batch of memories and chunks stamped with `ingest_id`, in one transaction, by COPY
        (text format, built by Arrow: `copy_text`)."""
        stamp = {"ingest_id": ingest_id}
        work = [
            (table, columns, rows, copy_text(rows, columns, stamp))
            for table, columns, rows in (("memories", MEMORY_COLUMNS, memories), ("chunks", CHUNK_COLUMNS, chunks))
            if rows.num_rows
        ]
        with self.writing() as conn:
            for table, columns, rows, payload in work:
                _insert(conn, table, columns, rows, stamp, payload)
        return chunks.num_rows

    def versions(self, days: Sequence[str]) -> list[str]:
        where, params = _days(days)
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT ingest_id FROM memories{where} UNION SELECT ingest_id FROM chunks{where}", params + params
            ).fetchall()
        return sorted(r[0] for r in rows)

    def drop_versions(self, days: Sequence[str], ingest_ids: Sequence[str]) -> None:
        if not ingest_ids:
            return
        where, params = "day = ANY(%s) AND ingest_id = ANY(%s)", [list(days), list(ingest_ids)]
        with self.writing() as conn:
            touch(conn, where, params)
            for table in ("chunks", "memories"):
                conn.execute(f"DELETE FROM {table} WHERE {where}", params)
            mark_superseded(conn)

    def commit_days(self, days: Sequence[str], ingest_id: str, replaces: Sequence[str]) -> None:
        """In one transaction: drop the versions `replaces` of `days`, mark the versions the
        days' memories now have on other days, and give the days the quarantine `ingest_id`
        staged for them (days it staged none for keep theirs)."""
        days = list(days)
        with self.writing() as conn:
            touch(conn, "day = ANY(%s)", [days])
            if replaces:
                for table in ("chunks", "memories"):
                    conn.execute(f"DELETE FROM {table} WHERE day = ANY(%s) AND ingest_id = ANY(%s)", [days, list(replaces)])
            mark_superseded(conn)
            staged = [row[0] for row in conn.execute(
                "SELECT day FROM quarantine_staged_days WHERE ingest_id = %s AND day = ANY(%s)", [ingest_id, days]
            ).fetchall()]
            if staged:
                conn.execute("DELETE FROM quarantine WHERE day = ANY(%s)", [staged])
                conn.execute(
                    "INSERT INTO quarantine (day, file, line, raw, reason) SELECT day, file, line, raw, reason "
                    "FROM quarantine_staged WHERE ingest_id = %s AND day = ANY(%s) "
                    "ON CONFLICT (day, file, line) DO UPDATE SET raw = EXCLUDED.raw, reason = EXCLUDED.reason",
                    [ingest_id, staged],
                )
            for owner in [ingest_id, *replaces]:
                self._drop_staged_quarantine(conn, owner, days)

    def rollback_days(self, days: Sequence[str], ingest_id: str) -> None:
        days = list(days)
        where, params = "day = ANY(%s) AND ingest_id = %s", [days, ingest_id]
        with self.writing() as conn:
            touch(conn, where, params)
            for table in ("chunks", "memories"):
                conn.execute(f"DELETE FROM {table} WHERE {where}", params)
            mark_superseded(conn)
            self._drop_staged_quarantine(conn, ingest_id, days)

    @staticmethod
    def _drop_staged_quarantine(conn, ingest_id: str, days: list[str]) -> None:
        for table in ("quarantine_staged", "quarantine_staged_days"):
            conn.execute(f"DELETE FROM {table} WHERE ingest_id = %s AND day = ANY(%s)", [ingest_id, days])

    def mark_failed(self, ingest_id: str, reason: str) -> None:
        with self.writing() as conn:
            conn.execute(
                "INSERT INTO failed_ingestions (ingest_id, reason, failed_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (ingest_id) DO NOTHING",
                [ingest_id, reason.replace("\x00", "\\0"), time.time()],
            )

    def failure(self, ingest_id: str) -> str | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT reason FROM failed_ingestions WHERE ingest_id = %s", [ingest_id]).fetchone()
        return row[0] if row else None

    def try_lease(self, days: Sequence[str], ingest_id: str, holder: str, ttl: float) -> list[dict]:
        """Take (or renew) `holder`'s lease on `days` unless another ingestion holds a live one;
        returns the blocking leases (empty when taken). The table is locked while deciding."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self.writing() as conn:
            conn.execute("LOCK TABLE day_leases IN SHARE ROW EXCLUSIVE MODE")
            rows = conn.execute(
                f"SELECT {', '.join(LEASE_COLUMNS)} FROM day_leases WHERE day = ANY(%s) AND ingest_id <> %s",
                [list(days), ingest_id],
            ).fetchall()
            blocking = [lease for lease in (dict(zip(LEASE_COLUMNS, r)) for r in rows) if lease_blocks(lease, host, now)]
            if not blocking:
                conn.cursor().executemany(
                    "INSERT INTO day_leases (day, holder, ingest_id, host, pid, expires_at) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (day, holder) DO UPDATE SET ingest_id = EXCLUDED.ingest_id, host = EXCLUDED.host, "
                    "pid = EXCLUDED.pid, expires_at = EXCLUDED.expires_at",
                    [(d, holder, ingest_id, host, pid, now + ttl) for d in days],
                )
        return blocking

    def release_lease(self, days: Sequence[str], holder: str) -> None:
        with self.writing() as conn:
            conn.execute("DELETE FROM day_leases WHERE holder = %s AND day = ANY(%s)", [holder, list(days)])

    def live_leases(self) -> list[dict]:
        host, now = socket.gethostname(), time.time()
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT {', '.join(LEASE_COLUMNS)} FROM day_leases").fetchall()
        return [lease for lease in (dict(zip(LEASE_COLUMNS, r)) for r in rows) if lease_blocks(lease, host, now)]

    def replace_quarantine(self, days: Sequence[str], records: Sequence) -> int:
        with self.writing() as conn:
            conn.execute("DELETE FROM quarantine WHERE day = ANY(%s)", [list(days)])
            if records:
                _upsert(conn, "quarantine", QUARANTINE_COLUMNS, [
                    (r.day, r.file, r.line, _utf8(r.raw), _utf8(r.reason)) for r in records
                ], ["day", "file", "line"], update=True)
        return len(records)

    def stage_quarantine(self, days: Sequence[str], records: Sequence, ingest_id: str) -> int:
        days = list(days)
        with self.writing() as conn:
            conn.execute("DELETE FROM quarantine_staged WHERE ingest_id = %s AND day = ANY(%s)", [ingest_id, days])
            if records:
                _upsert(conn, "quarantine_staged", ["ingest_id", *QUARANTINE_COLUMNS], [
                    (ingest_id, r.day, r.file, r.line, _utf8(r.raw), _utf8(r.reason)) for r in records
                ], ["ingest_id", "day", "file", "line"], update=True)
            now = time.time()
            conn.cursor().executemany(
                "INSERT INTO quarantine_staged_days (ingest_id, day, staged_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (ingest_id, day) DO UPDATE SET staged_at = EXCLUDED.staged_at",
                [(ingest_id, d, now) for d in days],
            )
        return len(records)

    # ------------------------------------------------------------------ embedding cache

    def cached_vectors(self, model: str, hashes: Sequence[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(hashes))
        if not unique:
            return {}
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT text_hash, vector FROM embedding_cache WHERE model = %s AND text_hash = ANY(%s)", [model, unique]
            ).fetchall()
        return {h: bytes(v) for h, v in rows}

    def cache_vectors(self, model: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Keep `vectors` computed by `model` for `hashes`; a hash kept before keeps its vector."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(hashes):
            return
        if vectors.ndim != 2 or len(vectors) != len(hashes):
            raise ValueError(f"{len(hashes)} hashes for vectors of shape {vectors.shape}")
        rows = [(model, h, v.tobytes()) for h, v in zip(hashes, vectors)]
        with self.writing() as conn:
            _upsert(conn, "embedding_cache", ["model", "text_hash", "vector"], rows, ["model", "text_hash"], update=False)

    # ------------------------------------------------------------------ reads

    def chunk_ids(self, days: Sequence[str] | None = None) -> list[str]:
        return [i for batch in self.chunk_id_batches(days) for i in batch]

    def chunk_id_batches(self, days: Sequence[str] | None = None, batch_rows: int = 8192) -> Iterator[list[str]]:
        where, params = _days(days)
        with self.pool.connection() as conn, conn.transaction():
            with conn.cursor(name="agentmem_chunk_ids") as cursor:
                cursor.execute(f"SELECT chunk_id FROM chunks{where}", params)
                while rows := cursor.fetchmany(batch_rows):
                    yield [r[0] for r in rows]

    def memories(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """Full memory rows by (day, memory_id), with `superseded` (a newer version of the
        memory is held); keys not held are absent."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        columns = [*MEMORY_COLUMNS, "superseded"]
        out: dict[tuple[str, str], dict] = {}
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(columns)} FROM memories "
                "WHERE (day, memory_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                [[d for d, _ in wanted], [m for _, m in wanted]],
            ).fetchall()
        for row in rows:
            record = _decode(columns, row)
            record["metadata"] = json.loads(record["metadata"])
            key = record["day"], record["memory_id"]
            record["superseded"] = superseded(record, out.get(key))
            out[key] = record
        return out

    def quarantine(self, days: Sequence[str] | None = None) -> list[dict]:
        where, params = _days(days)
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(QUARANTINE_COLUMNS)} FROM quarantine{where} ORDER BY day, file COLLATE \"C\", line",
                params,
            ).fetchall()
        return [_decode(QUARANTINE_COLUMNS, r) for r in rows]

    # ------------------------------------------------------------------ lifecycle

    def versions_of(self, user_id: str, memory_id: str) -> list[dict]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(MEMORY_COLUMNS)} FROM memories WHERE memory_id = %s AND user_id = %s "
                "ORDER BY created_at_us, day, ingest_id",
                [memory_id, user_id],
            ).fetchall()
        out = []
        for row in rows:
            record = _decode(MEMORY_COLUMNS, row)
            record["metadata"] = json.loads(record["metadata"])
            out.append(record)
        return out

    CURRENT = (
        "SELECT DISTINCT ON (user_id, memory_id) user_id, memory_id, expires_at_us FROM memories "
        "ORDER BY user_id, memory_id, created_at_us DESC"
    )

    def current_count(self, now_us: int) -> int:
        with self.pool.connection() as conn:
            return conn.execute(
                f"SELECT count(*) FROM ({self.CURRENT}) AS cur WHERE expires_at_us IS NULL OR expires_at_us > %s",
                [now_us],
            ).fetchone()[0]

    def current_in_days(self, days: Sequence[str], now_us: int) -> dict[str, int]:
        with self.pool.connection() as conn:
            versions, current = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE place = 1 AND (expires_at_us IS NULL OR expires_at_us > %s)) "
                "FROM (SELECT day, expires_at_us, row_number() OVER (PARTITION BY user_id, memory_id "
                "ORDER BY created_at_us DESC, day DESC, ingest_id DESC) AS place FROM memories "
                "WHERE (user_id, memory_id) IN (SELECT user_id, memory_id FROM memories WHERE day = ANY(%s))"
                ") AS ranked WHERE day = ANY(%s)",
                [now_us, list(days), list(days)],
            ).fetchone()
        return {"versions": versions, "current": current}

    def scope_keys(self, user_id: str, agent_id: str | None, session_id: str | None, up_to_us: int) -> list[tuple[str, str, str]]:
        clauses, params = ["user_id = %s", "created_at_us <= %s"], [user_id, up_to_us]
        for column, value in (("agent_id", agent_id), ("session_id", session_id)):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        return self._keys(" AND ".join(clauses), params)

    def expired_keys(self, at_us: int) -> list[tuple[str, str, str]]:
        return self._keys(
            f"expires_at_us <= %s OR (user_id, memory_id) IN "
            f"(SELECT user_id, memory_id FROM ({self.CURRENT}) AS cur WHERE expires_at_us <= %s)",
            [at_us, at_us],
        )

    def _keys(self, where: str, params: Sequence) -> list[tuple[str, str, str]]:
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT DISTINCT day, user_id, memory_id FROM memories WHERE {where}", list(params)).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    def delete_memories(self, keys: Sequence[tuple[str, str, str]], *, secure: bool = False) -> dict:
        """Delete the memories and chunks of `keys` (day, user_id, memory_id), every run's rows,
        and the cache entries only their chunks used, in one transaction. `secure` changes
        nothing here: PostgreSQL keeps dead rows until VACUUM, which `scrub` runs."""
        keys = sorted(set(keys))
        if not keys:
            return {"memories": 0, "chunks": 0, "cache_entries": 0}
        with self.writing() as conn:
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS agentmem_doomed (day TEXT COLLATE \"C\", user_id TEXT COLLATE \"C\", "
                "memory_id TEXT COLLATE \"C\") ON COMMIT DELETE ROWS"
            )
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS agentmem_gone (text_hash TEXT COLLATE \"C\") ON COMMIT DELETE ROWS")
            _copy(conn, "agentmem_doomed", ["day", "user_id", "memory_id"], keys)
            match = "USING agentmem_doomed d WHERE t.day = d.day AND t.user_id = d.user_id AND t.memory_id = d.memory_id"
            chunks = conn.execute(
                f"WITH gone AS (DELETE FROM chunks t {match} RETURNING t.text_hash) "
                "INSERT INTO agentmem_gone SELECT text_hash FROM gone"
            ).rowcount
            touch(conn, "(day, user_id, memory_id) IN (SELECT day, user_id, memory_id FROM agentmem_doomed)", [])
            memories = conn.execute(f"DELETE FROM memories t {match}").rowcount
            mark_superseded(conn)
            cache = conn.execute(
                "DELETE FROM embedding_cache e WHERE e.text_hash IN (SELECT text_hash FROM agentmem_gone) "
                "AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.text_hash = e.text_hash)"
            ).rowcount
        return {"memories": memories, "chunks": chunks, "cache_entries": cache}

    def delete_quarantined(self, keys: Sequence[tuple[str, str, int]], *, secure: bool = False) -> int:
        if not keys:
            return 0
        with self.writing() as conn:
            conn.cursor().executemany(
                "DELETE FROM quarantine WHERE day = %s AND file = %s AND line = %s", [list(k) for k in keys]
            )
        return len(keys)

    def add_tombstone(self, user_id: str, agent_id: str | None, session_id: str | None, up_to_us: int, at: str) -> None:
        with self.writing() as conn:
            conn.execute(
                "INSERT INTO tombstones (user_id, agent_id, session_id, up_to_us, forgotten_at) VALUES (%s, %s, %s, %s, %s)",
                [user_id, agent_id, session_id, up_to_us, at],
            )

    def tombstones(self) -> list[dict]:
        with self.pool.connection() as conn:
            rows = conn.execute(f"SELECT {', '.join(TOMBSTONE_COLUMNS)} FROM tombstones").fetchall()
        return [dict(zip(TOMBSTONE_COLUMNS, r)) for r in rows]

    def scrub(self) -> int:
        """VACUUM FULL of the tables that held memory text (each rewritten into new files
        without the dead rows; the old files are unlinked), then a CHECKPOINT where this user
        may run one. Returns the bytes those tables hold afterwards."""
        import psycopg

        with self.pool.connection() as conn:  # autocommit: VACUUM cannot run in a transaction
            conn.execute(f"VACUUM FULL {', '.join(SCRUBBED)}")
            try:
                conn.execute("CHECKPOINT")
            except psycopg.errors.InsufficientPrivilege:
                pass  # a managed server checkpoints on its own schedule (README)
            return conn.execute(
                "SELECT sum(pg_total_relation_size(c))::bigint FROM unnest(%s::regclass[]) AS c", [SCRUBBED]
            ).fetchone()[0]
