"""LanceDB side: one row per chunk with its vector; a day is replaced in one commit."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .chunking import CHUNK_SCHEMA
from .errors import StoreUnavailable, explain, explained, local_path
from .objstore import S3Settings, claim, is_object_uri, require_conditional_put

# Columns kept in LanceDB: what search filters on and shows, besides the vector.
LANCE_COLUMNS = [
    "chunk_id", "memory_id", "chunk_index", "text", "user_id", "agent_id",
    "session_id", "role", "created_at", "created_at_us", "day", "ingest_id",
]


# Scalar indexes on what searches filter by and what writes match on.
SCALAR_INDEXES = ("user_id", "agent_id", "session_id", "created_at_us", "day", "chunk_id")  # B-trees
# Below this many rows a brute-force scan is fast enough and needs no training.
VECTOR_INDEX_MIN_ROWS = 100_000
# Partitions probed, and candidates re-ranked on the full vectors: PQ distances alone found
# 38% of the true top 10 at 1M rows, re-ranking 200 candidates 96% (BENCHMARKS.md).
VECTOR_NPROBES, VECTOR_CANDIDATES = 20, 200
# LanceDB caches manifests and file metadata per connection, up to 1 GiB by default, and the
# memory is not given back when the connection goes. Every commit adds a manifest: after 5,000
# small commits (the bench's per-record rung) the process held 1.1 GB more and both stores'
# writes ran a third slower, for the rest of the process. Searching a table of 100k chunks
# cached 14 MB in all, and searched as fast as with the default (BENCHMARKS.md).
METADATA_CACHE_BYTES = 64 << 20


def sql_literal(value: str) -> str:
    """A LanceDB (DataFusion SQL) string literal that `value` cannot escape from."""
    if not isinstance(value, str):
        raise TypeError(f"filter value must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("filter value must not contain NUL")
    return "'" + value.replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


# Stored without compression: LanceDB's default compresses the strings and tries the vectors
# (which do not shrink): a third of its CPU per write, for 14% less disk (BENCHMARKS.md).
UNCOMPRESSED = {"lance-encoding:compression": "none"}


def lance_schema(dim: int, model=None) -> pa.Schema:
    """The chunk table's schema; `model` (a ModelId), when given, is recorded in its metadata:
    the index knows the model that built it."""
    fields = [CHUNK_SCHEMA.field(name) for name in LANCE_COLUMNS if name != "ingest_id"]
    fields.insert(LANCE_COLUMNS.index("ingest_id"), pa.field("ingest_id", pa.string()))
    fields.append(pa.field("vector", pa.list_(pa.float32(), dim)))
    schema = pa.schema([f.with_metadata(UNCOMPRESSED) if f.type == pa.string() or f.name == "vector" else f for f in fields])
    if model is not None:
        schema = schema.with_metadata({
            MODEL_KEY: model.key, MODEL_NAME: model.name, MODEL_PATH: model.path or "",
            CREATED_US: str(time.time_ns() // 1000),
        })
    return schema


# The schema metadata of a chunk table: the model that built it, and when it was made.
MODEL_KEY, MODEL_NAME, MODEL_PATH, CREATED_US = "agentmem.model", "agentmem.model_name", "agentmem.model_path", "agentmem.created_us"
TABLE_PREFIX = "memories"
SEARCH_TABLE_TTL = 2.0


class LanceStore:
    """The chunk table. With `model` (a ModelId), one table per model: writes go to the table
    that model built (a new one, `memories_<hash>`, beside the others when there is none yet),
    and searches read the oldest table (the one every day is in) until a newer one holds every
    day; then `retire_tables` drops the older ones. A table made before models were recorded
    is taken as the current model's when the dimensions agree. Without `model`: `table_name`."""

    def __init__(self, uri: str, table_name: str = "memories", model=None):
        self.uri = uri
        self.model = model
        # s3://bucket/prefix: endpoint and keys from the AWS_* variables
        self.storage_options = S3Settings.from_env().lance_options() if is_object_uri(uri) else None
        self._table_name = table_name if model is None else None
        self._db = None
        self._table = None
        self._async_table = None
        self._async_name = None
        self._search_info = None
        self._adopted = False  # the table is one made before models were recorded
        self._session = None
        self._opening = threading.Lock()

    def explain(self, exc: BaseException, cause: str | None = None) -> StoreUnavailable | None:
        """`exc` as a StoreUnavailable naming this database and AGENTMEM_LANCEDB_URI, when the
        environment caused it (full, read-only) or `cause` is given."""
        return explain(exc, f"LanceDB {self.uri!r}", "AGENTMEM_LANCEDB_URI", cause=cause, path=local_path(self.uri))

    @property
    def session(self):
        """The caches this store's connections share, bounded (METADATA_CACHE_BYTES)."""
        if self._session is None:
            import lancedb

            self._session = lancedb.Session(metadata_cache_size_bytes=METADATA_CACHE_BYTES)
        return self._session

    @property
    def db(self):
        if self._db is None:
            import lancedb

            if self.storage_options is not None:
                # Lance commits with If-None-Match: *; a server that ignores it loses rows silently
                require_conditional_put(self.uri)
            with explained(lambda exc: self.explain(exc, "cannot be opened or reached")):
                db = lancedb.connect(self.uri, session=self.session, storage_options=self.storage_options)
                db.list_tables()  # reach the storage now rather than at the first write
            self._db = db
        return self._db

    def probe(self) -> None:
        """Open the database (in object storage, after proving the server honours conditional
        PUT) and, when it is a local directory, write a block there and remove it."""
        _ = self.db  # opening it is the first probe
        path = local_path(self.uri)
        if path is not None:
            with explained(lambda exc: self.explain(exc, "is not writable")):
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path) as f:
                    f.write(bytes(4096))
                    f.flush()

    # ------------------------------------------------------------------ tables per model

    def tables(self) -> list[dict]:
        """The chunk tables, oldest first: name, model key, name and path, dim, creation time."""
        names = [n for n in self.db.list_tables().tables if n == TABLE_PREFIX or n.startswith(TABLE_PREFIX + "_")]
        return sorted((self._info(name) for name in names), key=lambda t: (t["created_us"], t["name"]))

    def _info(self, name: str) -> dict:
        schema = self.db.open_table(name).schema
        meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        return {
            "name": name,
            "model": meta.get(MODEL_KEY),  # None: made before models were recorded
            "model_name": meta.get(MODEL_NAME),
            "model_path": meta.get(MODEL_PATH) or None,
            "dim": schema.field("vector").type.list_size,
            "created_us": int(meta.get(CREATED_US, 0)),
        }

    def _resolve(self, dim: int | None) -> str | None:
        """The name of the table the model writes to (None: none yet, and `dim` unknown)."""
        if self.model is None:
            return self._table_name
        tables = self.tables()
        for table in tables:
            if table["model"] == self.model.key:
                return table["name"]
        if not tables:
            return TABLE_PREFIX if dim is not None else None
        if len(tables) == 1 and tables[0]["model"] is None and dim in (None, tables[0]["dim"]):
            return tables[0]["name"]  # made before models were recorded: adopted
        if dim is None:
            return None
        return f"{TABLE_PREFIX}_{hashlib.sha256(self.model.key.encode()).hexdigest()[:12]}"

    @property
    def table_name(self) -> str | None:
        """The table this store writes to (None: not made yet)."""
        return self._table_name if self._table_name is not None else self._resolve(None)

    def search_table_info(self, cached: bool = True) -> dict | None:
        """The table searches read: the oldest (with a model: see the class). Looked up again
        at most every SEARCH_TABLE_TTL seconds (a search costs no listing of the tables)."""
        now = time.monotonic()
        if cached and self._search_info is not None and now - self._search_info[0] < SEARCH_TABLE_TTL:
            return self._search_info[1]
        info = self._search_table_info()
        self._search_info = (now, info) if info is not None else None
        return info

    def _search_table_info(self) -> dict | None:
        if self.model is None:
            return self._info(self._table_name) if self._table_name in self.db.list_tables().tables else None
        tables = self.tables()
        return tables[0] if tables else None

    def retire_tables(self, days: Sequence[str]) -> dict:
        """When the model's own table holds every one of `days` (those the system of record
        holds), drop the older tables: searches move to it. Returns what was done."""
        if self.model is None:
            return {"migrating": False, "dropped": []}
        tables = self.tables()
        mine = next((t for t in tables if t["model"] == self.model.key), None)
        others = [t["name"] for t in tables if mine is None or t["name"] != mine["name"]]
        if mine is None or not others:
            return {"migrating": False, "dropped": []}
        table = self.db.open_table(mine["name"])
        have = set(self._scan(table, ["day"], None)["day"].to_pylist()) if table.count_rows() else set()
        missing = sorted(set(days) - have)
        if missing:
            return {"migrating": True, "dropped": [], "days_missing": len(missing), "days": len(set(days))}
        for name in others:
            self.db.drop_table(name)
        self._async_table = self._search_info = None
        return {"migrating": False, "dropped": others}

    def _all_tables(self) -> list:
        if self.model is None:
            table = self.table()
            return [] if table is None else [table]
        return [self.db.open_table(t["name"]) for t in self.tables()]

    def table(self, dim: int | None = None):
        """The chunk table; created on first write (needs `dim`), None if absent on read."""
        if self._table is not None:
            if dim is not None and self._adopted and self._table.schema.field("vector").type.list_size != dim:
                # a table made before models were recorded, opened for reading, belongs to another
                # model: this model writes to a table of its own
                self._table, self._table_name, self._adopted = None, None, False
            else:
                self._table.checkout_latest()
                return self._table
        with self._opening:  # threads of one writer may both find it absent
            if self._table is None:
                name = self._table_name if self._table_name is not None else self._resolve(dim)
                if name is None:
                    return None
                if dim is not None:  # opens it when another thread or process created it first
                    self._table = self._create(name, dim)
                    self._table_name = name
                elif name in self.db.list_tables().tables:
                    self._table = self.db.open_table(name)
                    self._table_name = name
                    self._adopted = self.model is not None and self._info(name)["model"] is None
        return self._table

    def _create(self, name: str, dim: int, wait_s: float = 60.0):
        """Create the table, or open it when another process has. In object storage, processes
        that find it absent at once must not all create it: Lance commits a creation as an
        overwrite, and a second one, retried on top of the first, empties the table (seen: 4
        processes appending to a new table, one append refused as "incompatible with concurrent
        transaction Overwrite"). So one process claims the creation with a conditional PUT
        (the probe proved the server honours it) and the others wait for the table to open."""
        schema = lance_schema(dim, self.model)
        if self.storage_options is None:
            return self.db.create_table(name, schema=schema, exist_ok=True)
        with explained(self.explain):
            if name not in self.db.list_tables().tables and claim(f"{self.uri.rstrip('/')}/.agentmem-create/{name}"):
                return self.db.create_table(name, schema=schema, exist_ok=True)
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    return self.db.open_table(name)
                except (ValueError, RuntimeError, OSError):  # not committed yet
                    if time.monotonic() > deadline:  # the claimant died before creating it
                        return self.db.create_table(name, schema=schema, exist_ok=True)
                    time.sleep(0.2)

    def write(self, chunks: pa.Table, ingest_id: str) -> int:
        """Append a batch of chunks (with `vector`), stamped with `ingest_id`. Rows of earlier
        ingestions of the same days stay until `drop_versions`: appending is several times
        faster than merging on chunk_id, and a failed run can be taken back exactly."""
        dim = chunks.schema.field("vector").type.list_size
        data = chunks.append_column("ingest_id", pa.array([ingest_id] * chunks.num_rows, pa.string()))
        data = data.select(LANCE_COLUMNS + ["vector"]).cast(lance_schema(dim))
        with explained(self.explain):
            self.table(dim).add(data)
        return data.num_rows

    def versions(self, days: Sequence[str]) -> list[str]:
        """The ingestions whose rows `days` hold."""
        table = self.table()
        if table is None:
            return []
        with explained(self.explain):
            found = self._scan(table, ["ingest_id"], in_list("day", days))
        return sorted(set(found["ingest_id"].to_pylist()))

    def drop_versions(self, days: Sequence[str], ingest_ids: Sequence[str]) -> None:
        """Delete the rows of `days` written by the ingestions `ingest_ids`."""
        table = self.table()
        if table is not None and ingest_ids:
            with explained(self.explain):
                table.delete(f"{in_list('day', days)} AND {in_list('ingest_id', ingest_ids)}")

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

    def rankings(
        self, *, vector: np.ndarray | None, text: str | None, where: str, limit: int
    ) -> tuple[list[dict], list[dict]]:
        """The chunks nearest to `vector` (with `_distance`) and the chunks matching the
        words of `text` (BM25, with `_score`) among the rows matching `where`, best first;
        both queries run at once, in one trip to LanceDB's event loop.

        The text is matched as plain words, never parsed as query syntax. Rows written since
        the indexes were last refreshed are searched too (by a scan)."""
        from lancedb.background_loop import LOOP

        table = self._search_table()
        if table is None:
            return [], []
        # day and id: the key of the memory in LibSQL; the scope columns, so that what the filter let
        # through can be checked before hydration
        columns = ["chunk_id", "memory_id", "day", "text", "user_id", "agent_id", "session_id", "role", "created_at_us"]

        async def vector_rows(indexed: set[str]):
            if vector is None:
                return []
            def nearest():
                query = table.query().nearest_to(vector.astype(np.float32)).column("vector").where(where)
                return query.limit(limit).select(columns + ["_distance"])

            if "vector" in indexed:
                refine = max(2, VECTOR_CANDIDATES // limit)
                rows = (await nearest().nprobes(VECTOR_NPROBES).refine_factor(refine).to_arrow()).to_pylist()
                if len(rows) == limit:
                    return rows
                # The probed partitions held fewer than `limit` rows of this scope (a small
                # one, spread thin): rank all of its rows exactly instead.
                return (await nearest().bypass_vector_index().to_arrow()).to_pylist()
            return (await nearest().to_arrow()).to_pylist()

        async def text_rows(indexed: set[str]):
            if text is None or "text" not in indexed:
                return []
            from lancedb.query import MatchQuery

            query = table.query().nearest_to_text(MatchQuery(text, "text"))
            return (await query.where(where).limit(limit).select(columns + ["_score"]).to_arrow()).to_pylist()

        async def both():
            indexed = {index.columns[0] for index in await table.list_indices()}
            return await asyncio.gather(vector_rows(indexed), text_rows(indexed))

        return tuple(LOOP.run(both()))

    def _search_table(self):
        """The table through LanceDB's async API (one event-loop trip per search instead of
        one per builder call), reading the latest version on every query; opened again when
        searches have moved to another model's table."""
        if self._async_table is not None and self.model is None:
            return self._async_table
        info = self.search_table_info()
        if info is None:
            return None
        if self._async_table is None or self._async_name != info["name"]:
            import lancedb
            from lancedb.background_loop import LOOP

            async def open_table():
                db = await lancedb.connect_async(
                    self.uri, read_consistency_interval=timedelta(0), session=self.session,
                    storage_options=self.storage_options,
                )
                return await db.open_table(info["name"])

            self._async_table = LOOP.run(open_table())
            self._async_name = info["name"]
        return self._async_table

    def maintain(self, vector_index_min_rows: int = VECTOR_INDEX_MIN_ROWS) -> dict:
        """Create the indexes that are missing, fold new rows into them and compact fragments.

        Meant to run from one place after writes (the `search_index` asset), never from
        each writer: concurrent optimizes would only conflict."""
        from lancedb.index import FTS, BTree, IvfPq

        table = self.table()
        if table is None:
            return {"rows": 0, "created": [], "indexes": {}}
        existing = {tuple(index.columns)[0] for index in table.list_indices()}
        created = []
        for column in SCALAR_INDEXES:
            if column not in existing:
                table.create_index(column, config=BTree())
                created.append(column)
        if "text" not in existing:
            table.create_index("text", config=FTS(with_position=False))
            created.append("text")
        rows = table.count_rows()
        if "vector" not in existing and rows >= vector_index_min_rows:
            dim = table.schema.field("vector").type.list_size
            # ~4k rows per partition; sub-vectors of 8 dimensions keep recall high for 256-384 d.
            table.create_index("vector", config=IvfPq(num_partitions=max(1, rows // 4096), num_sub_vectors=dim // 8))
            created.append("vector")
        table.optimize()  # compaction, new rows into every index, old versions pruned
        return {"rows": rows, "created": created, "indexes": self.index_status()}

    # ------------------------------------------------------------------ lifecycle

    def delete_where(self, where: str) -> int:
        """Delete the rows matching `where` from every chunk table (every model's); returns how
        many there were in the table searches read."""
        counts = []
        with explained(self.explain):
            for table in self._all_tables() if self.model is not None else [self.table()]:
                if table is None:
                    continue
                doomed = table.count_rows(where)
                if doomed:
                    table.delete(where)
                counts.append((table.name, doomed))
        searched = self.search_table_info()
        return next((n for name, n in counts if searched and name == searched["name"]), sum(n for _, n in counts))

    def delete_memories(self, keys: Sequence[tuple[str, str, str]], per_statement: int = 500) -> int:
        """Delete every chunk of the memories `keys` (day, user_id, memory_id), every run's rows."""
        groups: dict[tuple[str, str], list[str]] = {}
        for day, user_id, memory_id in keys:
            groups.setdefault((day, user_id), []).append(memory_id)
        deleted = 0
        for (day, user_id), ids in sorted(groups.items()):
            for start in range(0, len(ids), per_statement):
                deleted += self.delete_where(
                    f"day = {sql_literal(day)} AND user_id = {sql_literal(user_id)} "
                    f"AND {in_list('memory_id', ids[start:start + per_statement])}"
                )
        return deleted

    def purge(self) -> dict:
        """Leave no deleted row anywhere in the table's files: every fragment holding a deleted
        row is rewritten without it (Lance's own compaction, told to materialize any deletion:
        LanceDB's optimize() only rewrites fragments past 10% deleted), the scalar and full-text
        indexes are built again, and every older version, with the files only it used, is
        removed. Meant to run when no writer is at work (forget waits for the day leases)."""
        import warnings

        import lance
        from lancedb.index import FTS, BTree

        started_bytes = _dir_bytes(local_path(self.uri))
        rewritten = 0
        with explained(self.explain):
            for table in self._all_tables():
                dataset = lance.dataset(f"{self.uri.rstrip('/')}/{table.name}.lance", storage_options=self.storage_options)
                metrics = dataset.optimize.compact_files(materialize_deletions=True, materialize_deletions_threshold=0.0)
                rewritten += metrics.fragments_removed
                table.checkout_latest()
                for index in table.list_indices():
                    column = index.columns[0]
                    if column == "vector":
                        continue  # remapped by the compaction; it holds row ids and codes, no text
                    table.drop_index(index.name)
                    table.create_index(column, config=FTS(with_position=False) if column == "text" else BTree())
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "removes every version except the latest": meant
                    table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
        return {
            "fragments_rewritten": rewritten,
            "bytes_removed": max(0, started_bytes - _dir_bytes(local_path(self.uri))),
        }

    def index_status(self) -> dict[str, dict]:
        """Per indexed column: index type, rows indexed and rows not yet indexed."""
        table = self.table()
        if table is None:
            return {}
        out = {}
        for index in table.list_indices():
            stats = table.index_stats(index.name)
            out[index.columns[0]] = {
                "type": stats.index_type,
                "indexed": stats.num_indexed_rows,
                "unindexed": stats.num_unindexed_rows,
            }
        return out


def _dir_bytes(path) -> int:
    if path is None or not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def scope_filter(
    user_id: str,
    agent_id: str | None = None,
    session_id: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
) -> str:
    """The filter that confines a search to one user (and optionally one agent, one
    session, and `since_us <= created_at_us < until_us`)."""
    clauses = [f"user_id = {sql_literal(user_id)}"]
    if agent_id is not None:
        clauses.append(f"agent_id = {sql_literal(agent_id)}")
    if session_id is not None:
        clauses.append(f"session_id = {sql_literal(session_id)}")
    if since_us is not None:
        clauses.append(f"created_at_us >= {int(since_us)}")
    if until_us is not None:
        clauses.append(f"created_at_us < {int(until_us)}")
    return " AND ".join(clauses)
