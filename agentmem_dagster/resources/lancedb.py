import dagster as dg
from pydantic import PrivateAttr

from ..engine.lance_store import LanceStore


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB chunk table (a local directory or an object-store URI)."""

    uri: str
    table: str = "memories"

    _store: LanceStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store = LanceStore(self.uri, self.table)

    @property
    def store(self) -> LanceStore:
        if self._store is None:
            self.setup_for_execution(None)
        return self._store
