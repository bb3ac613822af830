import dagster as dg
from pydantic import PrivateAttr

from ..engine.lance_store import LanceStore


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB chunk table (a local directory or an object-store URI)."""

    uri: str
    table: str = "memories"
    # The embedding model (name, local directory): with it, one chunk table per model (its name
    # and a fingerprint of its weights), and a change of model migrates to a new table.
    model: str | None = None
    model_path: str | None = None

    _store: LanceStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Imported here, with the step's process (it cannot be preloaded in the forkserver: its
        # event loop thread would not survive the fork), rather than inside the first write the
        # step times. Its dependencies are preloaded (definitions.py): ~0.4 s left of ~2 s.
        import lancedb  # noqa: F401

        from ..engine.embedding import model_identity

        identity = model_identity(self.model, self.model_path) if self.model else None
        self._store = LanceStore(self.uri, self.table, model=identity)

    @property
    def store(self) -> LanceStore:
        if self._store is None:
            self.setup_for_execution(None)
        return self._store
