"""Dagster assets, ops and checks: thin wiring around the engine."""

from .checks import stores_consistent, vectors_sane
from .embeddings import memory_embeddings
from .memories import memory_chunks, raw_memories
from .partitions import daily_partitions
from .search_index import search_index
from .stores import memory_stores

ASSETS = [raw_memories, memory_chunks, memory_embeddings, memory_stores, search_index]
CHECKS = [stores_consistent, vectors_sane]

__all__ = ["ASSETS", "CHECKS", "daily_partitions"]
