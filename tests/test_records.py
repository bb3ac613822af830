import datetime as dt
import gzip
import hashlib
import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmem_dagster.engine.records import (
    MAX_LINE_BYTES,
    MEMORY_SCHEMA,
    RAW_CAP_BYTES,
    LandingDay,
    QuarantineRecord,
    Reason,
    derive_memory_id,
    landing_days,
    landing_fingerprint,
    parse_line,
    read_landing_day,
    write_landing_day,
)

DAY = "2024-05-01"


def rec(**overrides) -> dict:
    base = {"user_id": "u1", "content": "hello", "created_at": "2024-05-01T12:00:00Z"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def jline(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def write(landing: Path, name: str, lines: list[bytes], *, sep: bytes = b"\n", day: str = DAY) -> Path:
    path = landing / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = sep.join(lines) + sep
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def source_lines(result: LandingDay) -> list[int]:
    return result.memories.column("source_line").to_pylist()


def codes(result: LandingDay) -> list[tuple[int, str]]:
    return [(q.line, q.code) for q in result.quarantine]


# ----------------------------------------------------------------- bad lines


BAD_LINES = [
    pytest.param(b'\xff\xfe{"user_id": "u"}', Reason.INVALID_UTF8, id="invalid_utf8"),
    pytest.param(b'{"user_id": "u1", "content": "\\ud800", "created_at": "2024-05-01"}',
                 Reason.INVALID_UTF8, id="lone_surrogate"),
    pytest.param(b'{"user_id": "u1", ', Reason.INVALID_JSON, id="invalid_json"),
    pytest.param(b'{"user_id": "u1", "content": "x", "created_at": "2024-05-01", "metadata": {"a": NaN}}',
                 Reason.INVALID_JSON, id="nan"),
    pytest.param(b"[1, 2, 3]", Reason.NOT_AN_OBJECT, id="array"),
    pytest.param(b'"just a string"', Reason.NOT_AN_OBJECT, id="string"),
    pytest.param(jline(rec(user_id=...)), Reason.MISSING_FIELD, id="missing_user_id"),
    pytest.param(jline(rec(content=None)), Reason.MISSING_FIELD, id="null_content"),
    pytest.param(jline(rec(created_at=...)), Reason.MISSING_FIELD, id="missing_created_at"),
    pytest.param(jline(rec(user_id="")), Reason.EMPTY_FIELD, id="empty_user_id"),
    pytest.param(jline(rec(content=" \t\n ")), Reason.EMPTY_FIELD, id="whitespace_content"),
    pytest.param(jline(rec(memory_id="")), Reason.EMPTY_FIELD, id="empty_memory_id"),
    pytest.param(jline(rec(user_id=42)), Reason.WRONG_TYPE, id="user_id_number"),
    pytest.param(jline(rec(role=["user"])), Reason.WRONG_TYPE, id="role_list"),
    pytest.param(jline(rec(memory_id=7)), Reason.WRONG_TYPE, id="memory_id_number"),
    pytest.param(jline(rec(created_at=1714564800)), Reason.WRONG_TYPE, id="created_at_number"),
    pytest.param(jline(rec(created_at="yesterday")), Reason.INVALID_TIMESTAMP, id="bad_timestamp"),
    pytest.param(jline(rec(created_at="2024-02-30T00:00:00Z")), Reason.INVALID_TIMESTAMP, id="bad_date"),
    pytest.param(jline(rec(metadata=[1, 2])), Reason.INVALID_METADATA, id="metadata_list"),
    pytest.param(jline(rec(metadata="{}")), Reason.INVALID_METADATA, id="metadata_string"),
]


@pytest.mark.parametrize("bad, code", BAD_LINES)
def test_bad_line_is_quarantined_and_good_lines_kept(tmp_path, bad, code):
    write(tmp_path, "a.jsonl", [jline(rec(content="one")), bad, b"", jline(rec(content="four"))])

    result = read_landing_day(tmp_path, DAY)

    assert codes(result) == [(2, code)]
    q = result.quarantine[0]
    assert q.day == DAY and q.file == f"{DAY}/a.jsonl"
    assert q.reason.startswith(f"{code}: ") and len(q.reason) > len(code) + 2
    assert q.raw == bad.decode("utf-8", errors="backslashreplace")
    assert result.memories.column("content").to_pylist() == ["one", "four"]
    assert source_lines(result) == [1, 4]
    assert (result.files, result.lines) == (1, 3)


def test_wrong_type_names_the_field():
    q = parse_line(jline(rec(role=["user"])), day=DAY, file="f", line=3)
    assert isinstance(q, QuarantineRecord)
    assert q.reason.startswith("wrong_type: role")
    assert q.line == 3


def test_surrogate_escapes():
    pair = parse_line(jline(rec()).replace(b'"hello"', b'"smile \\ud83d\\ude00"'), day=DAY, file="f", line=1)
    assert pair["content"] == "smile 😀"
    lone = parse_line(jline(rec(metadata={"k": "x"})).replace(b'"x"', b'"\\udfff"'), day=DAY, file="f", line=1)
    assert lone.code == Reason.INVALID_UTF8 and "metadata" in lone.reason


def test_quarantined_raw_is_capped():
    bad = b"{" + b"x" * (RAW_CAP_BYTES + 500)
    q = parse_line(bad, day=DAY, file="f", line=1)
    assert q.code == Reason.INVALID_JSON
    assert q.raw == bad[:RAW_CAP_BYTES].decode() + "…[truncated 501 bytes]"


def test_invalid_json_includes_decoder_message():
    q = parse_line(b'{"a": }', day=DAY, file="f", line=1)
    assert q.reason.startswith("invalid_json: Expecting value")


# ----------------------------------------------------------------- parsing details


def test_parse_line_returns_all_schema_columns():
    row = parse_line(
        jline(rec(agent_id="a1", role="user", metadata={"k": "é", "n": [1, 2.5]})) + b"\r\n",
        day=DAY, file=f"{DAY}/x.jsonl", line=9,
    )
    assert list(row) == MEMORY_SCHEMA.names
    assert row["agent_id"] == "a1" and row["session_id"] is None and row["role"] == "user"
    assert row["created_at"] == "2024-05-01T12:00:00.000000Z"
    assert row["created_at_us"] == 1714564800 * 1_000_000
    assert row["metadata"] == '{"k":"é","n":[1,2.5]}'
    assert row["content_hash"] == hashlib.sha256(b"hello").hexdigest()
    assert (row["day"], row["source_file"], row["source_line"]) == (DAY, f"{DAY}/x.jsonl", 9)


@pytest.mark.parametrize(
    "given, normalised, micros",
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000000Z", 1714564800_000000),
        ("2024-05-01T12:00:00", "2024-05-01T12:00:00.000000Z", 1714564800_000000),
        ("2024-05-01T12:00:00.123+02:00", "2024-05-01T10:00:00.123000Z", 1714557600_123000),
        ("1969-12-31T23:59:59.999999-00:00", "1969-12-31T23:59:59.999999Z", -1),
    ],
)
def test_timestamps_normalised_to_utc(given, normalised, micros):
    row = parse_line(jline(rec(created_at=given)), day=DAY, file="f", line=1)
    assert (row["created_at"], row["created_at_us"]) == (normalised, micros)


def test_null_optional_fields_and_unknown_fields():
    row = parse_line(
        jline(rec(agent_id=None, role=None, metadata=None, memory_id=None, extra={"x": 1})),
        day=DAY, file="f", line=1,
    )
    assert row["agent_id"] is None and row["role"] is None
    assert row["metadata"] == "{}"
    assert row["memory_id"] == derive_memory_id("u1", "2024-05-01T12:00:00Z", "hello")


def test_derived_memory_id_is_stable():
    mid = derive_memory_id("u1", "2024-05-01T12:00:00Z", "hello")
    assert re.fullmatch("[0-9a-f]{32}", mid)
    expected = hashlib.sha256(b"u1\x1f2024-05-01T12:00:00.000000Z\x1fhello").hexdigest()[:32]
    assert mid == expected
    # Equivalent spellings of the same instant give the same id.
    assert derive_memory_id("u1", "2024-05-01T14:00:00+02:00", "hello") == mid
    assert derive_memory_id("u1", "2024-05-01T12:00:00", "hello") == mid
    assert derive_memory_id("u1", "2024-05-01T12:00:00Z", "hello!") != mid
    assert derive_memory_id("u2", "2024-05-01T12:00:00Z", "hello") != mid


def test_unicode_content_round_trips_exactly(tmp_path):
    contents = [
        "emoji 😀👩‍👩‍👧 flags 🇫🇷",
        "中文 日本語 한국어",
        "e\u0301 combining vs \u00e9 precomposed",
        "nul\x00inside\x00",
        "  leading and trailing spaces \t",
        "line\u2028separator and \r\n escaped newline",
        "\ufeffbom inside content",
    ]
    write(tmp_path, "a.jsonl", [jline(rec(content=c, memory_id=str(i))) for i, c in enumerate(contents)]
          + [json.dumps(rec(content=contents[0], memory_id="ascii")).encode()])

    result = read_landing_day(tmp_path, DAY)

    assert result.quarantine == []
    got = result.memories.column("content").to_pylist()
    assert got == contents + [contents[0]]
    hashes = result.memories.column("content_hash").to_pylist()
    assert hashes == [hashlib.sha256(c.encode("utf-8")).hexdigest() for c in got]


# ----------------------------------------------------------------- file handling


def test_bom_crlf_and_blank_lines(tmp_path):
    lines = [b"\xef\xbb\xbf" + jline(rec(content="a")), b"", b"   \t", jline(rec(content="b")), b"\r",
             b"\xef\xbb\xbf" + jline(rec(content="c"))]
    write(tmp_path, "crlf.jsonl", lines, sep=b"\r\n")

    result = read_landing_day(tmp_path, DAY)

    assert result.quarantine == []
    assert result.memories.column("content").to_pylist() == ["a", "b", "c"]
    assert source_lines(result) == [1, 4, 6]
    assert result.lines == 3


def test_last_line_without_newline(tmp_path):
    path = tmp_path / DAY / "a.jsonl"
    path.parent.mkdir()
    path.write_bytes(jline(rec(content="a")) + b"\n" + jline(rec(content="b")))
    assert read_landing_day(tmp_path, DAY).memories.column("content").to_pylist() == ["a", "b"]


def test_duplicate_memory_id_last_wins(tmp_path):
    write(tmp_path, "a.jsonl", [jline(rec(memory_id="m1", content="v1")),
                                jline(rec(memory_id="m2", content="other")),
                                jline(rec(memory_id="m1", content="v2"))])
    write(tmp_path, "b.jsonl", [jline(rec(memory_id="m1", content="v3"))])

    result = read_landing_day(tmp_path, DAY)

    table = result.memories
    assert table.column("memory_id").to_pylist() == ["m2", "m1"]  # the winner stays in its place
    assert table.column("content").to_pylist() == ["other", "v3"]
    assert table.column("source_file").to_pylist() == [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl"]
    assert result.duplicates_replaced == 2
    assert (result.files, result.lines) == (2, 4)


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 100])
def test_written_day_equals_read_day(tmp_path, batch_rows):
    """write_landing_day streams the day to Parquet in batches: whatever the batch size, the
    file holds what read_landing_day returns, duplicates across batches and files resolved."""
    write(tmp_path, "a.jsonl", [jline(rec(memory_id="m1", content="v1")), b"{bad",
                                jline(rec(memory_id="m2", content="other")),
                                jline(rec(memory_id="m1", content="v2")),
                                jline(rec(memory_id="m3", content="three"))])
    write(tmp_path, "b.jsonl.gz", [jline(rec(memory_id="m2", content="again")), jline(rec(memory_id="m4"))])
    read = read_landing_day(tmp_path, DAY)

    path = tmp_path / "out" / "day.parquet"
    written = write_landing_day(tmp_path, DAY, path, batch_rows=batch_rows)

    assert pq.read_table(path).equals(read.memories)
    assert read.memories.column("content").to_pylist() == ["v2", "three", "again", "hello"]
    assert written.memories is None and written.quarantine == read.quarantine
    assert (written.duplicates_replaced, written.files, written.lines) == (2, 2, 7)
    assert sorted(p.name for p in path.parent.iterdir()) == ["day.parquet"]  # nothing left aside


def test_identical_records_without_id_dedupe(tmp_path):
    write(tmp_path, "a.jsonl", [jline(rec()), jline(rec(created_at="2024-05-01T14:00:00+02:00"))])
    result = read_landing_day(tmp_path, DAY)
    assert result.memories.num_rows == 1 and result.duplicates_replaced == 1


def test_gz_file_is_read_and_files_sorted(tmp_path):
    write(tmp_path, "b.jsonl.gz", [jline(rec(content="from gz"))])
    write(tmp_path, "a.jsonl", [jline(rec(content="from plain"))])
    write(tmp_path, "notes.txt", [b"ignored"])
    write(tmp_path, "c.json", [jline(rec(content="ignored too"))])
    (tmp_path / DAY / "sub").mkdir()
    write(tmp_path, "sub/d.jsonl", [jline(rec(content="not recursive"))])

    result = read_landing_day(tmp_path, DAY)

    assert result.memories.column("content").to_pylist() == ["from plain", "from gz"]
    assert result.memories.column("source_file").to_pylist() == [f"{DAY}/a.jsonl", f"{DAY}/b.jsonl.gz"]
    assert result.files == 2
    # the rest is reported, never skipped silently: one whole-file record each
    assert [(q.file, q.line, q.code) for q in result.quarantine] == [
        (f"{DAY}/c.json", 0, Reason.NOT_LANDING_FILE),
        (f"{DAY}/notes.txt", 0, Reason.NOT_LANDING_FILE),
        (f"{DAY}/sub", 0, Reason.NOT_LANDING_FILE),
    ]
    assert "a folder" in result.quarantine[2].reason


@pytest.mark.parametrize("name", ["x.json", "x.ndjson", "x.JSONL", ".hidden.jsonl.tmp"])
def test_a_file_that_is_not_a_landing_file_is_reported(tmp_path, name):
    write(tmp_path, name, [jline(rec())])
    result = read_landing_day(tmp_path, DAY)
    [q] = result.quarantine
    assert (q.file, q.line, q.raw, q.code) == (f"{DAY}/{name}", 0, "", Reason.NOT_LANDING_FILE)
    assert "does not end .jsonl or .jsonl.gz" in q.reason
    assert result.files == 0 and result.memories.num_rows == 0


def test_symbolic_links_leaving_the_landing_zone_are_refused(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    secret = write(outside, "secret.jsonl", [jline(rec(memory_id="secret", content="from outside"))])
    write(landing, "a.jsonl", [jline(rec(memory_id="inside", content="inside"))])
    write(landing, "b.jsonl", [jline(rec(memory_id="other-day", content="another day file"))], day="2024-05-02")
    (landing / DAY / "out.jsonl").symlink_to(secret)
    (landing / DAY / "in.jsonl").symlink_to(landing / "2024-05-02" / "b.jsonl")  # inside the zone: read
    (landing / DAY / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (landing / "2024-05-03").symlink_to(outside / DAY, target_is_directory=True)  # a day folder leaving it

    result = read_landing_day(landing, DAY)
    assert sorted(result.memories.column("memory_id").to_pylist()) == ["inside", "other-day"]
    reasons = {q.file: q.code for q in result.quarantine}
    assert reasons == {f"{DAY}/out.jsonl": Reason.OUTSIDE_LANDING, f"{DAY}/gone.jsonl": Reason.OUTSIDE_LANDING}
    refused = read_landing_day(landing, "2024-05-03")
    assert refused.memories.num_rows == 0 and [q.code for q in refused.quarantine] == [Reason.OUTSIDE_LANDING]


def test_truncated_gz_keeps_earlier_lines_and_other_files(tmp_path):
    lines = [jline(rec(memory_id=f"g{i}", content=f"gz line {i} " + os.urandom(64).hex())) for i in range(2000)]
    path = write(tmp_path, "a.jsonl.gz", lines)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    write(tmp_path, "b.jsonl", [jline(rec(memory_id="p1", content="plain"))])

    result = read_landing_day(tmp_path, DAY)

    [q] = result.quarantine
    assert q.file == f"{DAY}/a.jsonl.gz" and q.code == Reason.CORRUPT_FILE
    ids = result.memories.column("memory_id").to_pylist()
    kept = [i for i in ids if i.startswith("g")]
    assert 0 < len(kept) < 2000
    assert kept == [f"g{i}" for i in range(len(kept))]
    assert q.line > len(kept)
    assert ids[-1] == "p1"
    assert result.files == 2


def test_not_a_gzip_file_is_corrupt(tmp_path):
    (tmp_path / DAY).mkdir()
    (tmp_path / DAY / "a.jsonl.gz").write_bytes(b"this is not gzip\n")
    write(tmp_path, "b.jsonl", [jline(rec())])

    result = read_landing_day(tmp_path, DAY)

    assert codes(result) == [(0, "corrupt_file")]
    assert result.memories.num_rows == 1


def test_multi_mib_line_accepted(tmp_path):
    content = "x" * (5 * 1024 * 1024) + "é"
    write(tmp_path, "a.jsonl", [jline(rec(content=content)), jline(rec(content="after"))])

    result = read_landing_day(tmp_path, DAY)

    assert result.quarantine == []
    assert result.memories.column("content").to_pylist() == [content, "after"]


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz"])
def test_line_over_8_mib_quarantined(tmp_path, name):
    huge = jline(rec(content="y" * (MAX_LINE_BYTES + 10)))
    write(tmp_path, name, [jline(rec(content="before")), huge, jline(rec(content="after"))], sep=b"\r\n")

    result = read_landing_day(tmp_path, DAY)

    assert codes(result) == [(2, "line_too_long")]
    raw = result.quarantine[0].raw
    assert raw.startswith('{"user_id": "u1", "content": "yyy')
    assert raw.endswith(f"…[truncated {len(huge) - RAW_CAP_BYTES} bytes]")
    assert len(raw) < RAW_CAP_BYTES + 100
    assert result.memories.column("content").to_pylist() == ["before", "after"]
    assert result.lines == 3


def test_missing_day_folder_is_empty(tmp_path):
    result = read_landing_day(tmp_path / "nowhere", DAY)
    assert result.files == 0 and result.lines == 0 and result.quarantine == []
    assert result.memories.num_rows == 0
    assert result.memories.schema == MEMORY_SCHEMA


def test_table_schema(tmp_path):
    write(tmp_path, "a.jsonl", [jline(rec(session_id="s", metadata={"a": 1}))])
    table = read_landing_day(tmp_path, DAY).memories
    assert table.schema == MEMORY_SCHEMA
    assert table.column("session_id").to_pylist() == ["s"]
    assert table.column("agent_id").to_pylist() == [None]


def test_bad_day_argument_raises(tmp_path):
    with pytest.raises(ValueError):
        read_landing_day(tmp_path, "../etc")


def test_landing_days(tmp_path):
    for name in ["2024-05-02", "2024-05-01", "2024-02-30", "2024-5-1", "latest", "2024-05-01x"]:
        (tmp_path / name).mkdir()
    (tmp_path / "2024-05-03").write_text("a file, not a folder")
    assert landing_days(tmp_path) == ["2024-05-01", "2024-05-02"]
    assert landing_days(tmp_path / "missing") == []


def test_landing_fingerprint_changes(tmp_path):
    assert landing_fingerprint(tmp_path, DAY) == ""
    a = write(tmp_path, "a.jsonl", [jline(rec())])
    first = landing_fingerprint(tmp_path, DAY)
    assert len(first) == 64
    assert landing_fingerprint(tmp_path, DAY) == first

    write(tmp_path, "ignored.txt", [b"x"])
    assert landing_fingerprint(tmp_path, DAY) == first

    write(tmp_path, "b.jsonl.gz", [jline(rec())])
    added = landing_fingerprint(tmp_path, DAY)
    assert added != first

    a.write_bytes(a.read_bytes() + jline(rec(content="more")) + b"\n")
    appended = landing_fingerprint(tmp_path, DAY)
    assert appended != added

    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same size, new mtime
    assert landing_fingerprint(tmp_path, DAY) != appended


# ----------------------------------------------------------------- property


def _no_newline(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return chars.map(lambda s: s.replace("\n", " "))


_non_blank = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())
_valid_record = st.fixed_dictionaries(
    {"user_id": _non_blank, "content": _non_blank,
     "created_at": st.datetimes(min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2250, 1, 1)).map(lambda d: d.isoformat())},
    optional={"role": st.none() | st.text(max_size=5), "agent_id": st.none() | st.text(max_size=5),
              "metadata": st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
              "extra": st.integers()},
)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
_line = st.one_of(
    _valid_record.map(lambda r: ("record", r)),
    _no_newline(st.text(max_size=40)).map(lambda s: ("text", s)),
    _json_value.map(lambda v: ("json", v)),
    st.binary(max_size=20).map(lambda b: ("bytes", b.replace(b"\n", b" "))),
)


def _encode(i: int, kind: str, value, ascii_json: bool) -> bytes:
    if kind == "record":
        return json.dumps({**value, "memory_id": f"id-{i}"}, ensure_ascii=ascii_json).encode("utf-8")
    if kind == "json":
        return json.dumps(value, ensure_ascii=ascii_json).encode("utf-8")
    if kind == "text":
        return value.encode("utf-8")
    return value


def _is_blank(raw: bytes) -> bool:
    return not raw.removeprefix(b"\xef\xbb\xbf").strip()


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(_line, max_size=25), ascii_json=st.booleans(), crlf=st.booleans())
def test_every_line_is_in_table_or_quarantine(tmp_path_factory, lines, ascii_json, crlf):
    landing = tmp_path_factory.mktemp("landing")
    raws = [_encode(i, kind, value, ascii_json) for i, (kind, value) in enumerate(lines)]
    write(landing, "a.jsonl", raws, sep=b"\r\n" if crlf else b"\n")

    result = read_landing_day(landing, DAY)

    expected = {i + 1 for i, raw in enumerate(raws) if not _is_blank(raw)}
    in_table = source_lines(result)
    quarantined = [q.line for q in result.quarantine]
    assert result.duplicates_replaced == 0
    assert len(set(in_table)) == len(in_table) and len(set(quarantined)) == len(quarantined)
    assert set(in_table).isdisjoint(quarantined)
    assert set(in_table) | set(quarantined) == expected
    assert result.lines == len(expected)
    # Valid generated records always make it into the table.
    valid = {i + 1 for i, (kind, _) in enumerate(lines) if kind == "record"}
    assert valid <= set(in_table)
