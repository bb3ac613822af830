"""LanceDB side: one row per chunk with its vector; a day is replaced in one commit."""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .chunking import CHUNK_SCHEMA

# Columns kept in LanceDB: what search filters on and shows, besides the vector.
LANCE_COLUMNS = [
    "chunk_id", "memory_id", "chunk_index", "text", "user_id", "agent_id",
    "session_id", "role", "created_at", "created_at_us", "day", "ingest_id",
]


def sql_literal(value: str) -> str:
    """A LanceDB (DataFusion SQL) string literal that `value` cannot escape from."""
    if not isinstance(value, str):
        raise TypeError(f"filter value must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("filter value must not contain NUL")
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


def lance_schema(dim: int) -> pa.Schema:
    fields = [CHUNK_SCHEMA.field(name) for name in LANCE_COLUMNS if name != "ingest_id"]
    fields.insert(LANCE_COLUMNS.index("ingest_id"), pa.field("ingest_id", pa.string()))
    return pa.schema(fields + [pa.field("vector", pa.list_(pa.float32(), dim))])


class LanceStore:
    def __init__(self, uri: str, table_name: str = "memories"):
        self.uri = uri
        self.table_name = table_name
        self._db = None
        self._table = None

    @property
    def db(self):
        if self._db is None:
            import lancedb

            self._db = lancedb.connect(self.uri)
        return self._db

    def table(self, dim: int | None = None):
        """The chunk table; created on first write (needs `dim`), None if absent on read."""
        if self._table is None:
            if self.table_name in self.db.list_tables().tables:
                self._table = self.db.open_table(self.table_name)
            elif dim is not None:
                self._table = self.db.create_table(
                    self.table_name, schema=lance_schema(dim), exist_ok=True
                )
        else:
            self._table.checkout_latest()
        return self._table

    def has_rows(self, days: Sequence[str]) -> bool:
        table = self.table()
        return table is not None and table.count_rows(in_list("day", days)) > 0

    def write(self, chunks: pa.Table, ingest_id: str, *, upsert: bool) -> int:
        """Add a batch of chunks (with `vector`), stamped with `ingest_id`.

        `upsert` merges on chunk_id, for days that may already hold some of these rows;
        without it rows are appended, which is several times faster.
        """
        dim = chunks.schema.field("vector").type.list_size
        table = self.table(dim)
        data = chunks.append_column("ingest_id", pa.array([ingest_id] * chunks.num_rows, pa.string()))
        data = data.select(LANCE_COLUMNS + ["vector"]).cast(lance_schema(dim))
        if upsert:
            table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        else:
            table.add(data)
        return data.num_rows

    def delete_stale(self, days: Sequence[str], ingest_id: str) -> None:
        """Drop the rows of `days` that the ingestion `ingest_id` did not write."""
        table = self.table()
        if table is not None:
            table.delete(f"{in_list('day', days)} AND ingest_id != {sql_literal(ingest_id)}")

    def chunk_ids(self, days: Sequence[str] | None = None) -> list[str]:
        table = self.table()
        if table is None:
            return []
        where = in_list("day", days) if days is not None else None
        return self._scan(table, ["chunk_id"], where).column("chunk_id").to_pylist()

    def chunk_id_batches(self, days: Sequence[str] | None = None, batch_rows: int = 8192) -> Iterator[list[str]]:
        """The chunk ids of `days` (of all days when None), a batch at a time."""
        table = self.table()
        if table is not None:
            where = in_list("day", days) if days is not None else None
            for batch in self._scan_query(table, ["chunk_id"], where).to_batches(batch_rows):
                yield batch.column("chunk_id").to_pylist()

    @staticmethod
    def _scan(table, columns: list[str], where: str | None) -> pa.Table:
        return LanceStore._scan_query(table, columns, where).to_arrow()

    @staticmethod
    def _scan_query(table, columns: list[str], where: str | None):
        """All rows matching `where` (a plain scan: no vector, no default limit)."""
        query = table.search().select(columns).limit(max(1, table.count_rows(where)))
        return query.where(where) if where else query

    def count(self) -> int:
        table = self.table()
        return 0 if table is None else table.count_rows()

    def vector_health(self, days: Sequence[str], batch_rows: int = 8192) -> dict:
        """Dimension and count of rows with a NaN or zero vector for `days` (read batch by batch)."""
        table = self.table()
        if table is None:
            return {"dim": 0, "rows": 0, "bad_vectors": 0}
        dim = table.schema.field("vector").type.list_size
        rows = bad = 0
        for batch in self._scan_query(table, ["vector"], in_list("day", days)).to_batches(batch_rows):
            flat = np.asarray(pc.list_flatten(batch.column("vector")), dtype=np.float32).reshape(-1, dim)
            bad += int((np.isnan(flat).any(axis=1) | (np.abs(flat).sum(axis=1) == 0)).sum())
            rows += len(flat)
        return {"dim": dim, "rows": rows, "bad_vectors": bad}

    def search(
        self, vector: np.ndarray, *, where: str, limit: int
    ) -> list[dict]:
        table = self.table()
        if table is None:
            return []
        return (
            table.search(vector.astype(np.float32), vector_column_name="vector")
            .where(where, prefilter=True)
            .limit(limit)
            .select(["chunk_id", "memory_id", "text", "_distance"])
            .to_list()
        )


def scope_filter(user_id: str, agent_id: str | None = None, session_id: str | None = None) -> str:
    """The filter that confines a search to one user (and optionally one agent or session)."""
    clauses = [f"user_id = {sql_literal(user_id)}"]
    if agent_id is not None:
        clauses.append(f"agent_id = {sql_literal(agent_id)}")
    if session_id is not None:
        clauses.append(f"session_id = {sql_literal(session_id)}")
    return " AND ".join(clauses)
