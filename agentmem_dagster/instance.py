"""The Dagster instance of the embedded default: Dagster's SQLite storage, with event batches
written in one transaction.

Dagster already hands a step's asset events to its storage in batches (one per output: a
materialization per day of the run; one for the run's planned events) when
`DAGSTER_EVENT_BATCH_SIZE` is set, but its SQLite storage stores a batch one event at a time,
each in transactions of its own on two database files (the run's and the cross-run index),
each with an fsync: 8 ms an event on a quiet disk, 50 ms on a busy one. This storage opens each
file once per batch and commits once. Nothing else changes: same files, same schema, so
`dagster dev` and the UI read them as usual."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import NullPool

# Events per batch handed to the storage: larger than any run's batch of day events.
EVENT_BATCH_SIZE = "100000"


def enable_event_batches() -> None:
    """Have Dagster hand asset events to the storage in batches (read by the instance at each
    event, so setting it in this process is enough; step processes inherit it)."""
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose `store_event_batch` is one transaction per database file.
    (It relies on SqliteEventLogStorage's internals `_connect`, `_initdb`, `_db_lock`,
    `_initialized_dbs` of dagster 1.13; tests/test_instance.py checks what it stores.)"""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        enable_event_batches()  # for processes that load the instance without `agentmem`: the UI, the daemon
        self._batch = threading.local()
        self._tables: set[str] = set()
        super().__init__(base_dir or str(Path(os.environ["DAGSTER_HOME"], "history", "runs")), inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": dg.Field(dg.StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def has_table(self, table_name: str) -> bool:
        """Asked for every asset event (Dagster's version opens the index database each time);
        a table that exists stays."""
        if table_name not in self._tables:
            if not super().has_table(table_name):
                return False
            self._tables.add(table_name)
        return True

    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        batch = getattr(self._batch, "connections", None)
        if batch is None:
            with super()._connect(shard) as conn:
                yield conn
            return
        if shard not in batch:
            batch[shard] = self._batch.stack.enter_context(self._open(shard))
        yield batch[shard]

    @contextmanager
    def _open(self, shard: str) -> Iterator:
        """What SqliteEventLogStorage._connect does, without its lock (held for the whole batch)."""
        engine = create_engine(
            self.conn_string_for_shard(shard), poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        )
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        with engine.connect() as conn, conn.begin():
            yield conn

    def store_event_batch(self, events: Sequence) -> None:
        with self._db_lock, ExitStack() as stack:
            self._batch.connections, self._batch.stack = {}, stack
            try:
                for event in events:
                    self.store_event(event)
            finally:
                self._batch.connections = None


def write_instance_config(home: Path) -> Path:
    """`dagster.yaml` for the embedded default, unless the Dagster home has one already
    (written aside, then renamed: several `agentmem` may start at once)."""
    path = home / "dagster.yaml"
    if not path.exists():
        template = resources.files(__package__).joinpath("dagster.yaml").read_text(encoding="utf-8")
        event_log_dir = json.dumps(str(home.absolute() / "history" / "runs"))[1:-1]  # quoted YAML string
        tmp = path.with_name(f".dagster.yaml.{os.getpid()}.tmp")
        tmp.write_text(template.replace("{event_log_dir}", event_log_dir), encoding="utf-8")
        os.replace(tmp, path)
    return path
