import dagster as dg
from pydantic import PrivateAttr

from ..engine.libsql_store import BUSY_TIMEOUT_MS
from ..engine.record_store import SystemOfRecord, open_store, store_kind


class DatabaseResource(dg.ConfigurableResource):
    """The system of record, reached through a fixed-size connection pool: LibSQL for a file
    path, `file:` or a `libsql://`/`https://` URL (with `auth_token`), PostgreSQL for a
    `postgresql://` URL (AGENTMEM_DATABASE_URL)."""

    url: str
    pool_size: int = 4
    auth_token: str | None = None  # libsql:// servers (AGENTMEM_DATABASE_AUTH_TOKEN)
    busy_timeout_ms: int = BUSY_TIMEOUT_MS  # LibSQL files: how long a write waits for another writer's lock

    _store: SystemOfRecord | None = PrivateAttr(default=None)

    @property
    def kind(self) -> str:
        """`libsql` or `postgres`."""
        return store_kind(self.url)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        options = {"busy_timeout_ms": self.busy_timeout_ms} if self.kind == "libsql" else {}
        self._store = open_store(self.url, auth_token=self.auth_token, pool_size=self.pool_size, **options)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> SystemOfRecord:
        if self._store is None:
            self.setup_for_execution(None)
        return self._store
