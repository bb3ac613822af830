"""The engine's stores and model opened from the environment contract (used outside Dagster)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .embedding import Embedder
from .lance_store import LanceStore
from .libsql_store import LibsqlPool, LibsqlStore
from .settings import Settings


@dataclass
class MemoryEngine:
    settings: Settings

    @classmethod
    def from_env(cls) -> "MemoryEngine":
        return cls(Settings.from_env())

    @cached_property
    def embedder(self) -> Embedder:
        return Embedder(self.settings.embed_model, self.settings.embed_model_path)

    @cached_property
    def lance(self) -> LanceStore:
        return LanceStore(self.settings.lancedb_uri)

    @cached_property
    def libsql(self) -> LibsqlStore:
        return LibsqlStore(LibsqlPool(self.settings.libsql_url, size=2))

    def stats(self, days=None) -> dict:
        counts = self.libsql.counts(days)
        lance_ids = sorted(self.lance.chunk_ids(days))
        return {
            "memories": counts["memories"],
            "chunks": counts["chunks"],
            "libsql_rows": counts["chunks"],
            "lancedb_rows": len(lance_ids),
            "quarantined": counts["quarantine"],
            "consistent": lance_ids == sorted(self.libsql.chunk_ids(days)),
        }

    def close(self) -> None:
        if "libsql" in self.__dict__:
            self.libsql.pool.close()
