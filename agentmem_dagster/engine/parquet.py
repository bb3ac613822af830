"""Tables kept as one Parquet file per day, written and read batch by batch, so that no step
holds a whole day in memory: its peak is set by the batch size, not by the day's size.

A batch is a Parquet row group. The first step cuts the day into batches of `BATCH_ROWS`
memories; each later step reads its input one row group at a time and writes one row group
per batch, so a batch of memories stays one batch down to the stores.

A file is a local Path or, with AGENTMEM_STAGING_URI=s3://..., an ObjectPath in object storage
(so that steps on different machines hand each other files); both are read and written here."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .objstore import ObjectPath

Location = Path | ObjectPath

# Memories per batch: a few MB of memories, and of their chunks with vectors.
BATCH_ROWS = 8192


def aside(path: Location, what: str) -> Location:
    """A hidden name beside `path`, this process's own: two runs of one day may stage it at once."""
    return path.with_name(f".{path.name}.{what}.{os.getpid()}.{threading.get_ident()}")


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Every column but the lists (vectors): their floats hardly ever repeat, and trying a
    dictionary for them took 40% of the time to write a day's embeddings (BENCHMARKS.md)."""
    return [f.name for f in schema if not (pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type))]


@contextmanager
def _source(path: Location):
    """What pyarrow.parquet reads `path` from: the local path, or an open object."""
    if isinstance(path, ObjectPath):
        with path.fs.open_input_file(path.key) as f:
            yield f
    else:
        yield path


def read_metadata(path: Location) -> pq.FileMetaData:
    with _source(path) as source:
        return pq.read_metadata(source)


def read_schema(path: Location) -> pa.Schema:
    with _source(path) as source:
        return pq.read_schema(source)


def read_table(path: Location, columns: list[str] | None = None) -> pa.Table:
    with _source(path) as source:
        return pq.read_table(source, columns=columns)


def write_parquet(path: Location, schema: pa.Schema, batches: Iterable[pa.Table | pa.RecordBatch]) -> int:
    """Write `batches` to `path` as they come, one row group each; the file appears only once
    complete (written aside, then renamed). Returns the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = aside(path, "tmp")
    rows = 0
    try:
        where = {"where": tmp.key, "filesystem": tmp.fs} if isinstance(tmp, ObjectPath) else {"where": tmp}
        with pq.ParquetWriter(schema=schema, use_dictionary=dictionary_columns(schema), **where) as writer:
            for batch in batches:
                if batch.num_rows:
                    writer.write(batch, row_group_size=batch.num_rows)
                    rows += batch.num_rows
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def read_batches(path: Location, columns: list[str] | None = None, row_groups: Iterable[int] | None = None) -> Iterator[pa.Table]:
    """The file's row groups (or only `row_groups`), one table each."""
    # pre_buffer=False: by default pyarrow 26 buffers the whole file as soon as a row group
    # is read, so that reading a 300 MB file group by group peaks at 500 MB instead of 250 MB.
    with _source(path) as source, pq.ParquetFile(source, pre_buffer=False) as file:
        for group in range(file.num_row_groups) if row_groups is None else row_groups:
            yield file.read_row_group(group, columns=columns)


def coalesce(tables: Iterable[pa.Table], min_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """Consecutive tables joined until each holds at least `min_rows` rows (the last may hold
    fewer): the days of a range are a row group each, and a store pays per write, not per row
    (LanceDB ~0.05 s a commit), so 200 small days are written as one batch, not 200."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        pending.append(table)
        rows += table.num_rows
        if rows >= min_rows:
            yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            pending, rows = [], 0
    if pending:
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]


@dataclass(frozen=True)
class ShardPart:
    """Consecutive row groups of one day's file."""

    day: str
    path: Location
    row_groups: tuple[int, ...]
    rows: int

    def batches(self) -> Iterator[pa.Table]:
        return read_batches(self.path, row_groups=self.row_groups)


@dataclass(frozen=True)
class Shard:
    """What one step works on: consecutive row groups of the days, in day order. A shard may
    span days, so that a range of small days takes a few steps rather than one per day."""

    index: int
    parts: tuple[ShardPart, ...]

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)


@dataclass(frozen=True)
class DayFiles:
    """One Parquet file per day (in day order), read lazily: what the pipeline's steps hand
    each other instead of a table."""

    paths: Mapping[str, Location]

    def day(self, day: str) -> DayFiles:
        return DayFiles({day: self.paths[day]})

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for path in self.paths.values():
            yield from read_batches(path, columns)

    @property
    def num_rows(self) -> int:
        return sum(read_metadata(path).num_rows for path in self.paths.values())

    def head(self, rows: int = 5) -> pa.Table:
        first = next(self.batches(), None)
        return first.slice(0, rows) if first is not None else read_schema(next(iter(self.paths.values()))).empty_table()

    def shards(self, max_rows: int) -> list[Shard]:
        """The days' row groups, in order, cut into runs of at most `max_rows` rows (or one row group)."""
        shards: list[Shard] = []
        parts: list[ShardPart] = []
        rows = 0
        for day, path in self.paths.items():
            meta = read_metadata(path)
            groups: list[int] = []
            part_rows = 0
            for group in range(meta.num_row_groups):
                size = meta.row_group(group).num_rows
                if rows and rows + size > max_rows:
                    if groups:
                        parts.append(ShardPart(day, path, tuple(groups), part_rows))
                        groups, part_rows = [], 0
                    shards.append(Shard(len(shards), tuple(parts)))
                    parts, rows = [], 0
                groups.append(group)
                part_rows += size
                rows += size
            if groups:
                parts.append(ShardPart(day, path, tuple(groups), part_rows))
        if parts:
            shards.append(Shard(len(shards), tuple(parts)))
        return shards
