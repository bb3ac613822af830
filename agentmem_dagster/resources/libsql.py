import dagster as dg
from pydantic import PrivateAttr

from ..engine.libsql_store import BUSY_TIMEOUT_MS, LibsqlPool, LibsqlStore


class LibSQLResource(dg.ConfigurableResource):
    """The LibSQL system of record, reached through a fixed-size connection pool."""

    url: str
    pool_size: int = 4
    auth_token: str | None = None
    busy_timeout_ms: int = BUSY_TIMEOUT_MS  # how long a write waits for another writer's lock

    _pool: LibsqlPool | None = PrivateAttr(default=None)
    _store: LibsqlStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._pool = LibsqlPool(self.url, self.pool_size, self.auth_token, self.busy_timeout_ms)
        self._store = LibsqlStore(self._pool)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.close()

    @property
    def store(self) -> LibsqlStore:
        if self._store is None:
            self.setup_for_execution(None)
        return self._store
