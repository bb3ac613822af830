"""Dagster resources: each owns a model or a connection pool, opened in the process that uses it."""

from .database import DatabaseResource
from .embedder import EmbedderResource
from .lancedb import LanceDBResource
from .landing import LandingZone
from .libsql import LibSQLResource
from .staging import Staging, StagingIOManager

__all__ = ["DatabaseResource", "EmbedderResource", "LandingZone", "LanceDBResource", "LibSQLResource", "Staging", "StagingIOManager"]
