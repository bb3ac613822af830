import dagster as dg
from pydantic import PrivateAttr

from ..engine.lance_store import LanceStore


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB chunk table (a local directory or an object-store URI)."""

    uri: str
    table: str = "memories"

    _store: LanceStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Imported here, with the step's process (~2 s: it cannot be preloaded in the forkserver,
        # its runtime is not fork-safe), rather than inside the first write the step times.
        import lancedb  # noqa: F401

        self._store = LanceStore(self.uri, self.table)

    @property
    def store(self) -> LanceStore:
        if self._store is None:
            self.setup_for_execution(None)
        return self._store
