"""The engine's stores and model opened from the environment contract (used outside Dagster)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from .embedding import Embedder
from .lance_store import LanceStore
from .record_store import SystemOfRecord, open_store
from .settings import Settings


@dataclass
class MemoryEngine:
    settings: Settings

    @classmethod
    def from_env(cls) -> MemoryEngine:
        return cls(Settings.from_env())

    @cached_property
    def embedder(self) -> Embedder:
        return Embedder(self.settings.embed_model, self.settings.embed_model_path)

    @cached_property
    def lance(self) -> LanceStore:
        return LanceStore(self.settings.lancedb_uri, model=self.embedder.identity)

    @cached_property
    def libsql(self) -> SystemOfRecord:
        """The system of record (LibSQL or PostgreSQL, by AGENTMEM_DATABASE_URL)."""
        return open_store(self.settings.database_url, auth_token=self.settings.database_auth_token, pool_size=2)

    def stats(self, days=None) -> dict:
        """Totals; over all days (`days` None), `memories` counts current versions, not expired,
        and `versions` every stored version."""
        from .lifecycle import now_us

        counts = self.libsql.counts(days)
        compared = compare_chunk_ids(self.lance, self.libsql, days)
        current = self.libsql.current_count(now_us()) if days is None else counts["memories"]
        return {
            "memories": current,
            "versions": counts["memories"],
            "chunks": counts["chunks"],
            "libsql_rows": counts["chunks"],
            "lancedb_rows": compared["lancedb_chunks"],
            "quarantined": counts["quarantine"],
            "consistent": compared["consistent"],
            **self.index_model(),
        }

    def index_model(self) -> dict:
        """The model of the index that search uses, its dimension, and whether a migration to
        the configured model is under way."""
        info = self.lance.search_table_info(cached=False)
        if info is None:
            return {"model": self.embedder.model_key, "dim": None, "migrating": False}
        model = info["model"] or f"{self.embedder.model_name} (not recorded)"
        return {"model": model, "dim": info["dim"], "migrating": info["model"] not in (None, self.embedder.model_key)}

    def close(self) -> None:
        if "libsql" in self.__dict__:
            self.libsql.close()


def id_digest(batches: Iterable[list[str]]) -> tuple[int, int]:
    """The number of ids and the sum of their 64-bit hashes: equal for the same ids in any
    order, each as many times, and computed one batch at a time."""
    count = total = 0
    for ids in batches:
        count += len(ids)
        total += sum(int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids)
    return count, total % 2**64


def compare_chunk_ids(lance: LanceStore, libsql: SystemOfRecord, days: Sequence[str] | None = None) -> dict:
    """Whether both stores hold the same chunk ids for `days` (all days when None), without
    holding a day's ids: both sides are streamed into digests, and only when those differ
    are the ids loaded to name the ones that differ."""
    lance_count, lance_digest = id_digest(lance.chunk_id_batches(days))
    libsql_count, libsql_digest = id_digest(libsql.chunk_id_batches(days))
    out = {
        "lancedb_chunks": lance_count,
        "libsql_chunks": libsql_count,
        "consistent": (lance_count, lance_digest) == (libsql_count, libsql_digest),
        "only_in_lancedb": [],
        "only_in_libsql": [],
    }
    if not out["consistent"]:
        in_lance, in_libsql = set(lance.chunk_ids(days)), set(libsql.chunk_ids(days))
        out["only_in_lancedb"], out["only_in_libsql"] = sorted(in_lance - in_libsql), sorted(in_libsql - in_lance)
    return out
