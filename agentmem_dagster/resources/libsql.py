"""The resource's earlier name: the system of record is `database.DatabaseResource` now
(LibSQL or PostgreSQL by the URL); the resource key stays `libsql`."""

from .database import DatabaseResource

LibSQLResource = DatabaseResource

__all__ = ["LibSQLResource"]
