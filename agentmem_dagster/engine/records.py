"""Read one day of the landing zone into Arrow memories (a table, or a Parquet file written
batch by batch) plus quarantine.

Landing layout: ``<landing>/<YYYY-MM-DD>/*.jsonl`` or ``*.jsonl.gz``, one JSON object
per line. Bad lines never raise: each becomes a :class:`QuarantineRecord` whose
``reason`` is ``"<code>: <detail>"`` with a :class:`Reason` code.

Plain Python + pyarrow only, so the engine can be tested and reused without Dagster.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import operator
import re
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .parquet import BATCH_ROWS, aside, read_batches, read_table, write_parquet

MEMORY_SCHEMA = pa.schema(
    [
        pa.field("memory_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("agent_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("role", pa.string()),
        pa.field("content", pa.string(), nullable=False),
        pa.field("created_at", pa.string(), nullable=False),
        pa.field("created_at_us", pa.int64(), nullable=False),
        pa.field("metadata", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        # optional: after this instant the memory is never returned, and retention removes it
        pa.field("expires_at_us", pa.int64()),
        pa.field("day", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int32(), nullable=False),
    ]
)

MAX_LINE_BYTES = 8 * 1024 * 1024
"""Lines longer than this (excluding the line ending) are quarantined as line_too_long."""

RAW_CAP_BYTES = 64 * 1024
"""At most this much of a bad line is kept in ``QuarantineRecord.raw``."""

LANDING_SUFFIXES = (".jsonl", ".jsonl.gz")

_BOM = b"\xef\xbb\xbf"
# readline() limit with room for "\r\n": a chunk that fills it without ending in a
# newline is certainly an over-long line.
_READ_LIMIT = MAX_LINE_BYTES + 2
_DRAIN_CHUNK = 1024 * 1024
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a truncated or corrupt gzip stream raises while being read.
_CORRUPT_GZIP = (EOFError, zlib.error, gzip.BadGzipFile)

_REQUIRED = ("user_id", "content", "created_at")
_OPTIONAL_STRINGS = ("agent_id", "session_id", "role")
_JSON_TYPE_NAMES = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


class Reason(StrEnum):
    """Quarantine reason codes (the part of ``QuarantineRecord.reason`` before ":")."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    EMPTY_FIELD = "empty_field"
    WRONG_TYPE = "wrong_type"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_METADATA = "invalid_metadata"
    LINE_TOO_LONG = "line_too_long"
    CORRUPT_FILE = "corrupt_file"
    NOT_LANDING_FILE = "not_landing_file"
    OUTSIDE_LANDING = "outside_landing"


@dataclass(frozen=True)
class QuarantineRecord:
    day: str
    file: str
    line: int  # 1-based; 0 = a whole-file problem (e.g. corrupt gzip)
    raw: str
    reason: str  # "<code>: <human detail>"

    @property
    def code(self) -> str:
        """The Reason code part of ``reason``."""
        return self.reason.split(":", 1)[0]


@dataclass
class LandingDay:
    day: str
    memories: pa.Table | None = None  # None when written to a file (write_landing_day)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    duplicates_replaced: int = 0
    files: int = 0
    lines: int = 0
    forgotten: int = 0  # records (and bad lines) a tombstone covers: skipped, neither stored nor quarantined


class _Bad(Exception):
    """Internal: a line failed validation."""

    def __init__(self, code: Reason, detail: str):
        self.reason = f"{code}: {detail}"
        super().__init__(self.reason)


# --------------------------------------------------------------------------- helpers


def _raw_text(data: bytes, total_len: int | None = None) -> str:
    """Decode (part of) a raw line for quarantine, capped at RAW_CAP_BYTES."""
    total = len(data) if total_len is None else total_len
    text = data[:RAW_CAP_BYTES].decode("utf-8", errors="backslashreplace")
    if total > RAW_CAP_BYTES:
        text += f"…[truncated {total - RAW_CAP_BYTES} bytes]"
    return text


def _strip_eol(data: bytes) -> bytes:
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    return data


def _is_blank(data: bytes) -> bool:
    """Only ASCII whitespace (incl. CR), possibly after a BOM."""
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    return not data.strip()


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; they are not JSON and would make
    # the stored metadata text invalid JSON.
    raise ValueError(f"{name} is not valid JSON")


# Reused: json.loads/dumps with arguments build a new decoder/encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_METADATA_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# Strict UTF-8 decoding cannot yield surrogates, but a JSON escape such as "\ud800"
# can, and Arrow cannot store a lone one. Lines with such an escape get a full check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_encodable(**values: str | None) -> None:
    for name, value in values.items():
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _Bad(Reason.INVALID_UTF8, f"{name} is not valid Unicode ({exc.reason})") from None


def _parse_timestamp(value: str) -> tuple[str, int]:
    """Return (normalised UTC ISO string, microseconds since epoch); naive means UTC."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    else:
        dt = dt.astimezone(UTC)  # may raise OverflowError near year 1 / 9999
    delta = dt - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if abs(micros) >= 2**53:  # the stores' integers are exact only below 2**53 (years 1685-2255)
        raise ValueError(f"{value!r} is outside the supported years 1685-2255")
    text = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond
    )
    return text, micros


def timestamp_micros(value: str) -> int:
    """Microseconds since the epoch of an ISO-8601 time, as stored in `created_at_us`."""
    try:
        return _parse_timestamp(value)[1]
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not an ISO-8601 time: {value!r} ({exc})") from None


def _memory_id(user_id: str, normalised_created_at: str, content: str) -> str:
    joined = "\x1f".join((user_id, normalised_created_at, content))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


def derive_memory_id(user_id: str, created_at: str, content: str) -> str:
    """Stable id for a record without memory_id.

    created_at is normalised first, so equivalent spellings of the same instant
    ("...Z", "+00:00", naive) give the same id. Raises ValueError if unparseable.
    """
    normalised, _ = _parse_timestamp(created_at)
    return _memory_id(user_id, normalised, content)


# --------------------------------------------------------------------------- one line


def _validate(obj: Any, check_unicode: bool) -> dict[str, Any]:
    """Check a decoded JSON value; return the record's data columns or raise _Bad."""
    if not isinstance(obj, dict):
        raise _Bad(Reason.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(obj)}")

    for name in _REQUIRED:
        value = obj.get(name)
        if value is None:
            raise _Bad(Reason.MISSING_FIELD, f"{name} is required")
        if not isinstance(value, str):
            raise _Bad(Reason.WRONG_TYPE, f"{name} must be a string, got {_json_type(value)}")
        if not value.strip():
            raise _Bad(Reason.EMPTY_FIELD, f"{name} must not be empty or whitespace")

    for name in _OPTIONAL_STRINGS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise _Bad(Reason.WRONG_TYPE, f"{name} must be a string, got {_json_type(value)}")

    memory_id = obj.get("memory_id")
    if memory_id is not None:
        if not isinstance(memory_id, str):
            raise _Bad(Reason.WRONG_TYPE, f"memory_id must be a string, got {_json_type(memory_id)}")
        if not memory_id.strip():
            raise _Bad(Reason.EMPTY_FIELD, "memory_id must not be empty or whitespace")

    metadata = obj.get("metadata")
    if metadata is None:
        metadata_text = "{}"
    elif not isinstance(metadata, dict):
        raise _Bad(Reason.INVALID_METADATA, f"metadata must be an object, got {_json_type(metadata)}")
    else:
        try:
            metadata_text = _METADATA_ENCODER.encode(metadata)
        except (ValueError, RecursionError) as exc:
            raise _Bad(Reason.INVALID_METADATA, f"metadata cannot be serialised: {exc}") from None

    try:
        created_at, created_at_us = _parse_timestamp(obj["created_at"])
    except (ValueError, OverflowError) as exc:
        raise _Bad(Reason.INVALID_TIMESTAMP, f"created_at {obj['created_at']!r}: {exc}") from None

    expires_at_us = None
    if (expires_at := obj.get("expires_at")) is not None:
        if not isinstance(expires_at, str):
            raise _Bad(Reason.WRONG_TYPE, f"expires_at must be a string, got {_json_type(expires_at)}")
        try:
            expires_at_us = _parse_timestamp(expires_at)[1]
        except (ValueError, OverflowError) as exc:
            raise _Bad(Reason.INVALID_TIMESTAMP, f"expires_at {expires_at!r}: {exc}") from None

    user_id, content = obj["user_id"], obj["content"]
    agent_id, session_id, role = obj.get("agent_id"), obj.get("session_id"), obj.get("role")
    if check_unicode:
        _check_encodable(memory_id=memory_id, user_id=user_id, agent_id=agent_id, session_id=session_id,
                         role=role, content=content, metadata=metadata_text)
    return {
        "memory_id": memory_id if memory_id is not None else _memory_id(user_id, created_at, content),
        "user_id": user_id,
        "agent_id": agent_id,
        "session_id": session_id,
        "role": role,
        "content": content,
        "created_at": created_at,
        "created_at_us": created_at_us,
        "metadata": metadata_text,
        "content_hash": hashlib.sha256(content.encode("utf-8")).hexdigest(),
        "expires_at_us": expires_at_us,
    }


def parse_line(raw: bytes, *, day: str, file: str, line: int) -> dict | QuarantineRecord:
    """Parse one landing line into a dict of MEMORY_SCHEMA columns, or quarantine it.

    ``raw`` may carry its line ending and a leading BOM. Callers skip blank lines
    (a blank line given here is quarantined as invalid_json). ``file`` is the path
    relative to the landing root and becomes ``source_file``.
    """
    data = _strip_eol(raw)
    if data.startswith(_BOM):
        data = data[len(_BOM):]

    def quarantine(code: Reason, detail: str) -> QuarantineRecord:
        return QuarantineRecord(day, file, line, _raw_text(data), f"{code}: {detail}")

    if len(data) > MAX_LINE_BYTES:
        return quarantine(Reason.LINE_TOO_LONG, f"{len(data)} bytes > {MAX_LINE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return quarantine(Reason.INVALID_UTF8, str(exc))
    try:
        obj = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return quarantine(Reason.INVALID_JSON, str(exc) or type(exc).__name__)
    try:
        record = _validate(obj, check_unicode="\\u" in text and bool(_SURROGATE_ESCAPE.search(text)))
    except _Bad as bad:
        return QuarantineRecord(day, file, line, _raw_text(data), bad.reason)
    record["day"] = day
    record["source_file"] = file
    record["source_line"] = line
    return record


# --------------------------------------------------------------------------- files


def _physical_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes, int]]:
    """Yield (1-based line number, line bytes without ending, length) per line.

    Streams with a bounded readline so an over-long line is never held whole: for
    such a line only its first RAW_CAP_BYTES are yielded, with the full length.
    """
    line_no = 0
    while chunk := stream.readline(_READ_LIMIT):
        line_no += 1
        if chunk.endswith(b"\n") or len(chunk) < _READ_LIMIT:
            data = _strip_eol(chunk)
            yield line_no, data, len(data)
            continue
        head, total = chunk[:RAW_CAP_BYTES], len(chunk)
        while not chunk.endswith(b"\n") and (chunk := stream.readline(_DRAIN_CHUNK)):
            total += len(chunk)
        if chunk:
            total -= len(chunk) - len(_strip_eol(chunk))
        yield line_no, head, total


def _day_folder(landing: str | Path, day: str) -> Path:
    if not is_day_name(day):
        raise ValueError(f"not a YYYY-MM-DD day: {day!r}")
    return Path(landing) / day


def is_day_name(name: str) -> bool:
    """True for a real calendar date spelled YYYY-MM-DD."""
    if not _DAY_RE.fullmatch(name):
        return False
    try:
        date.fromisoformat(name)
    except ValueError:
        return False
    return True


def _day_entries(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The day folder's landing files, sorted by name, and every other entry with the reason
    it is not read: a name not ending .jsonl or .jsonl.gz, a folder, a broken link, or a
    symbolic link that leaves the landing zone (the folder's parent)."""
    if not folder.is_dir():
        return [], []
    root = folder.parent.resolve()
    files, others = [], []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        target = path.resolve()
        if (path.is_symlink() or folder.is_symlink()) and not target.is_relative_to(root):
            others.append((path, f"{Reason.OUTSIDE_LANDING}: a symbolic link to {target}, outside the landing zone {root}: not read"))
        elif not path.name.endswith(LANDING_SUFFIXES):
            kind = "a folder" if path.is_dir() else "a file"
            others.append((path, f"{Reason.NOT_LANDING_FILE}: {kind} whose name does not end .jsonl or .jsonl.gz: not read"))
        elif not path.is_file():
            kind = "a folder" if path.is_dir() else "a broken link" if path.is_symlink() and not path.exists() else "not a regular file"
            others.append((path, f"{Reason.NOT_LANDING_FILE}: {kind}, not a landing file: not read"))
        else:
            files.append(path)
    return files, others


def _landing_files(folder: Path) -> list[Path]:
    return _day_entries(folder)[0]


# Rows are kept as tuples in schema order: far smaller than dicts at 200k rows,
# and zip(*rows) transposes them to columns cheaply.
_as_row = operator.itemgetter(*MEMORY_SCHEMA.names)


def _to_table(rows: Collection[tuple]) -> pa.Table:
    if not rows:
        return MEMORY_SCHEMA.empty_table()
    return pa.table(dict(zip(MEMORY_SCHEMA.names, zip(*rows))), schema=MEMORY_SCHEMA)


def _landing_rows(folder: Path, landed: LandingDay) -> Iterator[tuple]:
    """Every valid record of the day's files in order, duplicates included, as MEMORY_SCHEMA
    rows; bad lines and corrupt gzip files go to ``landed.quarantine``, files and lines are counted."""
    day = landed.day
    files, others = _day_entries(folder)
    for path, reason in others:  # reported, never silently skipped
        landed.quarantine.append(QuarantineRecord(day, f"{day}/{path.name}", 0, "", reason))
    for path in files:
        landed.files += 1
        rel = f"{day}/{path.name}"
        opener = gzip.open if path.name.endswith(".gz") else open
        last_line = 0
        with opener(path, "rb") as stream:
            try:
                for line_no, data, size in _physical_lines(stream):
                    last_line = line_no
                    if _is_blank(data):
                        continue
                    landed.lines += 1
                    if size > MAX_LINE_BYTES:
                        reason = f"{Reason.LINE_TOO_LONG}: {size} bytes > {MAX_LINE_BYTES}"
                        landed.quarantine.append(
                            QuarantineRecord(day, rel, line_no, _raw_text(data, size), reason)
                        )
                        continue
                    result = parse_line(data, day=day, file=rel, line=line_no)
                    if isinstance(result, QuarantineRecord):
                        landed.quarantine.append(result)
                    else:
                        yield _as_row(result)
            except _CORRUPT_GZIP as exc:
                # Keep what was read; line 0 if nothing could be read at all,
                # else the first line that could not be read.
                broke_at = last_line + 1 if last_line else 0
                detail = f"{type(exc).__name__}: {exc}"
                landed.quarantine.append(
                    QuarantineRecord(day, rel, broke_at, "", f"{Reason.CORRUPT_FILE}: {detail}")
                )


def _last_of_each_id(memory_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True at the last occurrence of each memory_id: the record that wins over its duplicates."""
    codes = pc.index_in(memory_ids, value_set=pc.unique(memory_ids)).to_numpy(zero_copy_only=False)
    keep = np.zeros(len(codes), dtype=bool)
    _, first_from_end = np.unique(codes[::-1], return_index=True)
    keep[len(codes) - 1 - first_from_end] = True
    return keep


@dataclass(frozen=True)
class Forgotten:
    """What tombstones cover: `rows(table)` is True for the memory rows to skip, `line(raw)`
    for a bad line to leave out of the quarantine (engine/lifecycle.py builds one)."""

    rows: Callable[[pa.Table], np.ndarray]
    line: Callable[[str], bool]


def _skip_forgotten(batches: Iterable[pa.Table], landed: LandingDay, forgotten: Forgotten | None) -> Iterator[pa.Table]:
    for batch in batches:
        if forgotten is not None and batch.num_rows:
            mask = forgotten.rows(batch)
            if mask.any():
                landed.forgotten += int(mask.sum())
                batch = batch.filter(pa.array(~mask))
        yield batch


def _drop_forgotten_lines(landed: LandingDay, forgotten: Forgotten | None) -> None:
    if forgotten is not None and landed.quarantine:
        kept = [q for q in landed.quarantine if not forgotten.line(q.raw)]
        landed.forgotten += len(landed.quarantine) - len(kept)
        landed.quarantine = kept


def read_landing_day(landing: str | Path, day: str, forgotten: Forgotten | None = None) -> LandingDay:
    """Read every landing file of ``day`` (sorted by name) into a LandingDay.

    Bad lines and corrupt gzip files are quarantined; only I/O errors on the landing
    folder/files raise. A missing day folder gives an empty LandingDay (files=0). When a
    memory_id appears more than once, its last record wins, in the place of that record.
    """
    landed = LandingDay(day)
    table = _to_table(list(_landing_rows(_day_folder(landing, day), landed)))
    keep = _last_of_each_id(table["memory_id"])
    (landed.memories,) = _skip_forgotten([table.filter(keep)], landed, forgotten)
    landed.duplicates_replaced = len(keep) - int(keep.sum())
    _drop_forgotten_lines(landed, forgotten)
    return landed


def _batches(rows: Iterator[tuple], size: int) -> Iterator[pa.Table]:
    while part := list(islice(rows, size)):
        yield _to_table(part)


def write_landing_day(
    landing: str | Path, day: str, path: Path, batch_rows: int = BATCH_ROWS, forgotten: Forgotten | None = None
) -> LandingDay:
    """Like :func:`read_landing_day`, but the memories go to the Parquet file ``path`` in
    batches (row groups) of ``batch_rows``, in memory bounded by that (and the day's
    memory_ids, for duplicates): every valid record is written aside, then the records that
    lost to a later duplicate are left out of the final file. ``memories`` is None."""
    landed = LandingDay(day)
    everything = aside(path, "all")
    try:
        write_parquet(everything, MEMORY_SCHEMA, _batches(_landing_rows(_day_folder(landing, day), landed), batch_rows))
        _drop_forgotten_lines(landed, forgotten)
        keep = _last_of_each_id(read_table(everything, columns=["memory_id"])["memory_id"])
        landed.duplicates_replaced = len(keep) - int(keep.sum())
        if not landed.duplicates_replaced and forgotten is None:
            everything.replace(path)
            return landed
        write_parquet(path, MEMORY_SCHEMA, _skip_forgotten(_winners(read_batches(everything), keep), landed, forgotten))
    finally:
        everything.unlink(missing_ok=True)
    return landed


def _winners(batches: Iterable[pa.Table], keep: np.ndarray) -> Iterator[pa.Table]:
    start = 0
    for batch in batches:
        yield batch.filter(keep[start : start + batch.num_rows])
        start += batch.num_rows


def landing_days(landing: str | Path) -> list[str]:
    """Sorted names of day folders (real YYYY-MM-DD dates); [] if landing is missing."""
    root = Path(landing)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_day_name(p.name) and p.is_dir())


def landing_fingerprint(landing: str | Path, day: str) -> str:
    """sha256 over sorted (name, size, mtime_ns) of the day's landing files; "" if none.

    Cheap change detection for a sensor: adding, replacing or appending to a file
    changes it without reading any content.
    """
    files = _landing_files(_day_folder(landing, day))
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        st = path.stat()
        digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# Gzipped landing files hold about this many times their size in JSON (demo and chat data: 4-6x).
GZIP_RATIO = 5


def landing_bytes(landing: str | Path, days: Iterable[str]) -> int:
    """About how many bytes of JSON lines the days' landing files hold (gzip estimated), read
    from their sizes only: cheap enough to size a run before it starts."""
    total = 0
    for day in days:
        for path in _landing_files(_day_folder(landing, day)):
            total += path.stat().st_size * (GZIP_RATIO if path.name.endswith(".gz") else 1)
    return total
