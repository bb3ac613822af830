"""The system of record: one interface, two adapters (LibSQL, PostgreSQL), chosen by the URL.

Writer, search (hydration), lifecycle, ingest, checks and the CLI use only the methods of
`SystemOfRecord`; `tests/test_record_store.py` holds both adapters to the same contract.
Errors leave an adapter as `errors.StoreError` subclasses (transient or terminal, decided by
the adapter from its driver's error classes), or as `StoreUnavailable` naming the setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa

SETTING = "AGENTMEM_DATABASE_URL"
LEGACY_SETTING = "AGENTMEM_LIBSQL_URL"
AUTH_TOKEN_SETTING = "AGENTMEM_DATABASE_AUTH_TOKEN"

LIBSQL_REMOTE_SCHEMES = ("libsql", "https", "http", "ws", "wss")
POSTGRES_SCHEMES = ("postgresql", "postgres")


class BadDatabaseUrl(ValueError):
    """The database URL names no system of record this project can open (one line)."""


@runtime_checkable
class SystemOfRecord(Protocol):
    """Memories, chunks, quarantine, leases, tombstones and the embedding cache.

    Rows are versions: a run writes its rows stamped with its `ingest_id` beside earlier runs'
    rows of the same days, and `commit_days` drops the versions it replaces (with the
    quarantine it staged coming in) in one transaction; `rollback_days` drops its own.

    A memory sent on several days has a version per day; the current one is the newest by
    `created_at_us` (then day). Every change to a memory's rows (commit, rollback, dropped
    versions, deletion) marks its other versions `superseded` in the same transaction, and
    `memories` returns the mark: search leaves marked rows out without another look-up."""

    url: str

    # -- ingestion
    def probe(self) -> None: ...
    def write(self, memories: pa.Table, chunks: pa.Table, ingest_id: str) -> int: ...
    def versions(self, days: Sequence[str]) -> list[str]: ...
    def drop_versions(self, days: Sequence[str], ingest_ids: Sequence[str]) -> None: ...
    def commit_days(self, days: Sequence[str], ingest_id: str, replaces: Sequence[str]) -> None: ...
    def rollback_days(self, days: Sequence[str], ingest_id: str) -> None: ...
    def mark_failed(self, ingest_id: str, reason: str) -> None: ...
    def failure(self, ingest_id: str) -> str | None: ...
    def try_lease(self, days: Sequence[str], ingest_id: str, holder: str, ttl: float) -> list[dict]: ...
    def release_lease(self, days: Sequence[str], holder: str) -> None: ...
    def live_leases(self) -> list[dict]: ...
    def replace_quarantine(self, days: Sequence[str], records: Sequence) -> int: ...
    def stage_quarantine(self, days: Sequence[str], records: Sequence, ingest_id: str) -> int: ...

    # -- embedding cache
    def cached_vectors(self, model: str, hashes: Sequence[str]) -> dict[str, bytes]: ...
    def cache_vectors(self, model: str, hashes: Sequence[str], vectors: np.ndarray) -> None: ...

    # -- reads
    def chunk_ids(self, days: Sequence[str] | None = None) -> list[str]: ...
    def chunk_id_batches(self, days: Sequence[str] | None = None, batch_rows: int = 8192) -> Iterator[list[str]]: ...
    def memories(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict]: ...
    def quarantine(self, days: Sequence[str] | None = None) -> list[dict]: ...
    def days(self) -> list[str]: ...
    def counts(self, days: Sequence[str] | None = None) -> dict[str, int]: ...

    # -- lifecycle
    def versions_of(self, user_id: str, memory_id: str) -> list[dict]: ...
    def current_count(self, now_us: int) -> int: ...
    def current_in_days(self, days: Sequence[str], now_us: int) -> dict[str, int]: ...
    def scope_keys(
        self, user_id: str, agent_id: str | None, session_id: str | None, up_to_us: int
    ) -> list[tuple[str, str, str]]: ...
    def expired_keys(self, at_us: int) -> list[tuple[str, str, str]]: ...
    def delete_memories(self, keys: Sequence[tuple[str, str, str]], *, secure: bool = False) -> dict: ...
    def delete_quarantined(self, keys: Sequence[tuple[str, str, int]], *, secure: bool = False) -> int: ...
    def add_tombstone(self, user_id: str, agent_id: str | None, session_id: str | None, up_to_us: int, at: str) -> None: ...
    def tombstones(self) -> list[dict]: ...
    def scrub(self) -> int: ...

    def close(self) -> None: ...


def store_kind(url: str) -> str:
    """`libsql` (a file path, `file:`, or a `libsql://`/`https://` server) or `postgres`
    (`postgresql://`, `postgres://`); BadDatabaseUrl (one line) for anything else."""
    if not url or not url.strip():
        raise BadDatabaseUrl(f"{SETTING} is empty: give a file path, a libsql:// or a postgresql:// URL")
    if "\x00" in url:
        raise BadDatabaseUrl(f"{SETTING} must not contain NUL")
    if "://" not in url:
        return "libsql"  # a path (file:NAME is a path to SQLite too)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "file":
        return "libsql"
    if scheme in LIBSQL_REMOTE_SCHEMES:
        return "libsql"
    if scheme in POSTGRES_SCHEMES:
        return "postgres"
    raise BadDatabaseUrl(
        f"{SETTING} has the scheme {scheme!r}: use a file path, libsql:// (or https://) or postgresql://"
    )


def libsql_location(url: str) -> str:
    """What the libsql driver opens: a path for file: URLs, the URL otherwise."""
    if url.lower().startswith("file://"):
        return url[len("file://"):]
    return url


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def database_url(env: Mapping[str, str]) -> str | None:
    """AGENTMEM_DATABASE_URL, else the older AGENTMEM_LIBSQL_URL; None when neither is set."""
    return env.get(SETTING) or env.get(LEGACY_SETTING) or None


def open_store(url: str, *, auth_token: str | None = None, pool_size: int = 4, **options) -> SystemOfRecord:
    """The system of record `url` names, behind a pool of `pool_size` connections."""
    kind = store_kind(url)
    if kind == "postgres":
        from .postgres_store import PostgresPool, PostgresStore

        return PostgresStore(PostgresPool(url, size=pool_size))
    from .libsql_store import LibsqlPool, LibsqlStore

    return LibsqlStore(LibsqlPool(libsql_location(url), size=pool_size, auth_token=auth_token, **options))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DayReads:
    """Reads both SQL adapters write alike; an adapter gives its pool (`connection()`) and how
    its dialect filters by days (`days_filter`: a ` WHERE ...` clause and its parameters,
    nothing for all days)."""

    pool: object

    @staticmethod
    def days_filter(days: Sequence[str] | None) -> tuple[str, list]:
        raise NotImplementedError

    def days(self) -> list[str]:
        """The days that hold memories, in order."""
        with self.pool.connection() as conn:
            return [row[0] for row in conn.execute("SELECT DISTINCT day FROM memories ORDER BY day").fetchall()]

    def counts(self, days: Sequence[str] | None = None) -> dict[str, int]:
        where, params = self.days_filter(days)
        with self.pool.connection() as conn:
            return {
                table: conn.execute(f"SELECT count(*) FROM {table}{where}", params).fetchone()[0]
                for table in ("memories", "chunks", "quarantine")
            }


def superseded(record: Mapping, earlier: Mapping | None) -> bool:
    """The mark of a memory read by (day, memory_id) when that key holds rows of two runs (a
    re-run of the day in flight): only the committed run's rows carry a current mark, and
    either mark set leaves the version out."""
    return bool(record["superseded"]) or bool(earlier is not None and earlier["superseded"])


def lease_blocks(lease: Mapping, host: str, now: float) -> bool:
    """A lease blocks others unless past its expiry or held by a dead process on this host."""
    return lease["expires_at"] > now and not (lease["host"] == host and not alive(lease["pid"]))
