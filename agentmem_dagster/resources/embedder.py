import dagster as dg
from pydantic import PrivateAttr

from ..engine.embedding import DEFAULT_MAX_TOKENS, Embedder


class EmbedderResource(dg.ConfigurableResource):
    """A fastembed model, loaded once per process on first use."""

    model: str
    model_path: str | None = None
    batch_size: int | None = None  # texts per model call; None: the measured best for the model
    threads: int | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    chunk_overlap: int = 32

    _embedder: Embedder | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._embedder = Embedder(
            self.model,
            self.model_path,
            batch_size=self.batch_size,
            threads=self.threads,
            max_tokens=self.max_tokens,
        )

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:  # used outside a run, e.g. from a sensor or the CLI
            self.setup_for_execution(None)
        return self._embedder
