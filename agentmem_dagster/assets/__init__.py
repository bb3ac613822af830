"""Dagster assets, ops and checks: thin wiring around the engine."""

from .checks import store_checks
from .embeddings import memory_embeddings
from .memories import raw_memories
from .partitions import memory_days
from .search_index import search_index
from .stores import memory_stores

ASSETS = [raw_memories, memory_embeddings, memory_stores, search_index]
CHECKS = [store_checks]

__all__ = ["ASSETS", "CHECKS", "memory_days"]
