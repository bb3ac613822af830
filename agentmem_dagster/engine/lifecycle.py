"""The memory lifecycle: versions and history, expiry, erasure (forget) with tombstones.

Versions. A `memory_id` names one memory of one user across days; each day that sends it
again holds another version (its rows keyed by day). The current version is the newest
`created_at` (ties: the later day), whatever order the days were ingested in: the system of
record marks the others `superseded` whenever a memory's rows change (a day committed or
rolled back, memories deleted), and search leaves marked rows out, so the run order never
decides. Older versions stay in both stores as history.

Expiry. A version past its `expires_at` is never returned (search leaves it out when it reads
the candidates' rows); `remove_expired` (the retention asset) deletes expired versions from both stores,
and every version of a memory whose current version has expired, so that an older version
does not come back in its place.

Erasure. `forget` removes every trace of a user's (or an agent's, or a session's) memories:
both stores (LibSQL with secure_delete, then VACUUM and a truncated WAL; LanceDB with every
fragment that held them rewritten, the text indexes rebuilt and every older version removed),
the embedding-cache entries only they used, the quarantined lines they sent, and the staged
Parquet files. It first records a tombstone (who, up to when), which ingestion honours: a
re-run of an earlier day skips their memories created up to then.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .lance_store import LanceStore, scope_filter
from .objstore import location
from .parquet import aside, read_batches, read_schema, read_table, write_parquet
from .record_store import SystemOfRecord
from .records import timestamp_micros


def now_us() -> int:
    return time.time_ns() // 1000


def iso(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Scope:
    """Whose memories: one user, optionally narrowed to one agent and one session."""

    user_id: str
    agent_id: str | None = None
    session_id: str | None = None

    def __post_init__(self):
        for name in ("user_id", "agent_id", "session_id"):
            value = getattr(self, name)
            if value is None and name != "user_id":
                continue
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
            if "\x00" in value:
                raise ValueError(f"{name} must not contain NUL")

    def lance_where(self) -> str:
        return scope_filter(self.user_id, self.agent_id, self.session_id)

    def sql(self) -> tuple[str, list]:
        clauses, params = ["user_id = ?"], [self.user_id]
        for column in ("agent_id", "session_id"):
            if (value := getattr(self, column)) is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return " AND ".join(clauses), params

    def mask(self, table: pa.Table) -> np.ndarray:
        """True for the rows of `table` (with user_id, agent_id, session_id) in this scope."""
        match = pc.equal(table["user_id"], self.user_id)
        for column in ("agent_id", "session_id"):
            if (value := getattr(self, column)) is not None:
                match = pc.and_(match, pc.equal(table[column], value))
        return match.fill_null(False).to_numpy(zero_copy_only=False)

    def matches_raw(self, raw: str) -> bool:
        """Whether a quarantined line was sent by this scope: its JSON when it parses, else
        the field spelled out in the raw text."""
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            return all(
                obj.get(column) == value
                for column, value in (("user_id", self.user_id), ("agent_id", self.agent_id), ("session_id", self.session_id))
                if value is not None
            )
        return all(
            re.search(rf'"{column}"\s*:\s*{re.escape(json.dumps(value, ensure_ascii=False))}', raw)
            or re.search(rf'"{column}"\s*:\s*{re.escape(json.dumps(value))}', raw)
            for column, value in (("user_id", self.user_id), ("agent_id", self.agent_id), ("session_id", self.session_id))
            if value is not None
        )


# --------------------------------------------------------------------------- tombstones


def tombstone_scopes(tombstones: Iterable[dict]) -> list[tuple[Scope, int]]:
    return [(Scope(t["user_id"], t["agent_id"], t["session_id"]), int(t["up_to_us"])) for t in tombstones]


def forgotten_mask(table: pa.Table, tombstones: Sequence[tuple[Scope, int]]) -> np.ndarray:
    """True for the memory rows a tombstone covers (in its scope, created up to its time)."""
    out = np.zeros(table.num_rows, dtype=bool)
    if not tombstones or not table.num_rows:
        return out
    created = table["created_at_us"].to_numpy(zero_copy_only=False)
    for scope, up_to in tombstones:
        out |= scope.mask(table) & (created <= up_to)
    return out


def drop_forgotten(table: pa.Table, tombstones: Sequence[tuple[Scope, int]]) -> tuple[pa.Table, int]:
    mask = forgotten_mask(table, tombstones)
    if not mask.any():
        return table, 0
    return table.filter(pa.array(~mask)), int(mask.sum())


def forgotten_line(raw: str, tombstones: Sequence[tuple[Scope, int]]) -> bool:
    """Whether a quarantined line belongs to someone forgotten (created up to the tombstone,
    or with no readable time)."""
    if not tombstones:
        return False
    try:
        created = timestamp_micros(json.loads(raw)["created_at"])
    except Exception:  # noqa: BLE001 - not JSON, no created_at, unreadable: judged by who alone
        created = None
    return any(scope.matches_raw(raw) and (created is None or created <= up_to) for scope, up_to in tombstones)


# --------------------------------------------------------------------------- versions


class NoSuchMemory(LookupError):
    pass


def history(libsql: SystemOfRecord, user_id: str, memory_id: str) -> list[dict]:
    """Every version of the memory, oldest first, the current one flagged."""
    versions = libsql.versions_of(user_id, memory_id)
    if not versions:
        raise NoSuchMemory(f"no memory {memory_id!r} for user {user_id!r}")
    # one row per day (a re-run may briefly leave two versions of one day: the newest run wins)
    by_day: dict[str, dict] = {}
    for record in versions:
        by_day[record["day"]] = record
    ordered = sorted(by_day.values(), key=lambda r: (r["created_at_us"], r["day"]))
    return [
        {
            "memory_id": r["memory_id"],
            "content": r["content"],
            "created_at": r["created_at"],
            "day": r["day"],
            "metadata": r["metadata"],
            "agent_id": r["agent_id"],
            "session_id": r["session_id"],
            "expires_at": iso(r["expires_at_us"]),
            "current": i == len(ordered) - 1,
        }
        for i, r in enumerate(ordered)
    ]


# --------------------------------------------------------------------------- expiry


def remove_expired(lance: LanceStore, libsql: SystemOfRecord, at_us: int | None = None) -> dict:
    """Delete from both stores every version past its expires_at, and every version of a
    memory whose current version is past it. LibSQL first: a memory it lacks is never shown."""
    at_us = now_us() if at_us is None else at_us
    started = time.perf_counter()
    keys = libsql.expired_keys(at_us)
    removed = libsql.delete_memories(keys)
    lance_rows = lance.delete_memories(keys)
    return {
        "expired_memories": len({(user, memory_id) for _, user, memory_id in keys}),
        "versions": removed["memories"],
        "chunks": removed["chunks"],
        "lancedb_rows": lance_rows,
        "cache_entries": removed["cache_entries"],
        "at": iso(at_us),
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------- forget


def scrub_staging(staging: Path | None, scope: Scope) -> dict:
    """Rewrite every staged Parquet file without the scope's rows (a file whose rows all go is
    rewritten empty, so the next step still finds it)."""
    files = rows = 0
    if staging is None or not location(staging).is_dir():
        return {"files": 0, "rows": 0}
    for path in sorted(location(staging).rglob("*.parquet"), key=str):
        schema = read_schema(path)
        if "user_id" not in schema.names:
            continue
        columns = [c for c in ("user_id", "agent_id", "session_id") if c in schema.names]
        probe = read_table(path, columns=columns)
        if not scope.mask(_with_columns(probe)).any():
            continue
        kept_rows = 0
        copy = aside(path, "forget")

        def kept(path=path):
            nonlocal kept_rows
            for batch in read_batches(path):
                mask = scope.mask(_with_columns(batch))
                kept_rows += int((~mask).sum())
                yield batch.filter(pa.array(~mask))

        write_parquet(copy, schema, kept())
        rows += probe.num_rows - kept_rows
        copy.replace(path)
        files += 1
    return {"files": files, "rows": rows}


def _with_columns(table: pa.Table) -> pa.Table:
    for column in ("agent_id", "session_id"):
        if column not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, pa.string()))
    return table


def wait_for_writers(libsql: SystemOfRecord, wait: float, on_wait: Callable[[str], None] | None = None) -> None:
    """Wait until no ingestion holds a live day lease: one that read the landing files before
    the tombstone was recorded may still be writing the memories about to be forgotten."""
    deadline = time.monotonic() + wait
    delay = 0.05
    told = set()
    while leases := libsql.live_leases():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"ingestion {leases[0]['ingest_id']} is still writing day {leases[0]['day']} after {wait:g}s; "
                "nothing was forgotten yet (the tombstone is recorded): run forget again once it is done"
            )
        if on_wait and leases[0]["ingest_id"] not in told:  # once per ingestion waited for
            told.add(leases[0]["ingest_id"])
            on_wait(f"waiting for ingestion {leases[0]['ingest_id']} (day {leases[0]['day']}) to finish")
        time.sleep(delay)
        delay = min(2 * delay, 2.0)


def forget(
    lance: LanceStore,
    libsql: SystemOfRecord,
    scope: Scope,
    *,
    staging: Path | None = None,
    at_us: int | None = None,
    wait: float = 3600.0,
    on_wait: Callable[[str], None] | None = None,
) -> dict:
    """Erase the scope's memories created up to `at_us` (now) from everything the project keeps,
    and record the tombstone that keeps them out of later runs. An unknown user is no error:
    nothing is found, nothing removed (the tombstone is still recorded)."""
    started = time.perf_counter()
    at_us = now_us() if at_us is None else at_us
    libsql.add_tombstone(scope.user_id, scope.agent_id, scope.session_id, at_us, iso(now_us()))
    wait_for_writers(libsql, wait, on_wait)
    keys = libsql.scope_keys(scope.user_id, scope.agent_id, scope.session_id, at_us)
    removed = libsql.delete_memories(keys, secure=True)
    lance_rows = lance.delete_where(f"{scope.lance_where()} AND created_at_us <= {int(at_us)}")
    tombstone = [(scope, at_us)]
    lines = [(q["day"], q["file"], q["line"]) for q in libsql.quarantine() if forgotten_line(q["raw"], tombstone)]
    quarantined = libsql.delete_quarantined(lines, secure=True)
    staged = scrub_staging(staging, scope)
    found = bool(keys or lance_rows or quarantined or staged["rows"])
    database_bytes = libsql.scrub() if found else 0
    purged = lance.purge() if found else {"fragments_rewritten": 0, "bytes_removed": 0}
    return {
        "memories": len({(user, memory_id) for _, user, memory_id in keys}),
        "versions": removed["memories"],
        "chunks": removed["chunks"],
        "lancedb_rows": lance_rows,
        "cache_entries": removed["cache_entries"],
        "quarantined_lines": quarantined,
        "staged_files": staged["files"],
        "staged_rows": staged["rows"],
        "libsql_bytes_rewritten": database_bytes,
        "lancedb_fragments_rewritten": purged["fragments_rewritten"],
        "lancedb_bytes_removed": purged["bytes_removed"],
        "tombstone": {"user_id": scope.user_id, "agent_id": scope.agent_id, "session_id": scope.session_id, "up_to": iso(at_us)},
        "seconds": round(time.perf_counter() - started, 3),
    }


def ingestion_filter(libsql: SystemOfRecord):
    """What ingestion must skip under the recorded tombstones (None when there are none)."""
    from .records import Forgotten

    tombstones = tombstone_scopes(libsql.tombstones())
    if not tombstones:
        return None
    return Forgotten(rows=lambda table: forgotten_mask(table, tombstones), line=lambda raw: forgotten_line(raw, tombstones))


# --------------------------------------------------------------------------- model migration


def finish_migration(lance: LanceStore, libsql: SystemOfRecord) -> dict:
    """When the configured model's table holds every day the system of record holds, drop the
    older models' tables: searches move to it (until then they read the old one)."""
    return lance.retire_tables(libsql.days())
