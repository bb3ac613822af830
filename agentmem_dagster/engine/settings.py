"""The environment contract (AGENTMEM_*), resolved in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreUnavailable
from .objstore import ObjectPath, location

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Settings:
    home: Path
    landing: Path
    lancedb_uri: str
    libsql_url: str
    embed_model: str
    embed_model_path: str | None
    partitions_start: str
    staging_uri: str = ""  # empty: $AGENTMEM_HOME/staging

    @property
    def staging(self) -> Path | ObjectPath:
        """Where the pipeline keeps its intermediate tables (one Parquet file per asset and day)
        and the steps' outputs: a local directory, or `s3://bucket/prefix` (AGENTMEM_STAGING_URI)."""
        return location(self.staging_uri) if self.staging_uri else self.home / "staging"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("AGENTMEM_HOME") or "./.agentmem").absolute()
        return cls(
            home=home,
            landing=Path(env.get("AGENTMEM_LANDING") or home / "landing").absolute(),
            lancedb_uri=env.get("AGENTMEM_LANCEDB_URI") or str(home / "lancedb"),
            libsql_url=env.get("AGENTMEM_LIBSQL_URL") or str(home / "memories.db"),
            embed_model=env.get("AGENTMEM_EMBED_MODEL") or DEFAULT_MODEL,
            embed_model_path=env.get("AGENTMEM_EMBED_MODEL_PATH") or None,
            partitions_start=env.get("AGENTMEM_PARTITIONS_START") or "2020-01-01",
            staging_uri=_staging_uri(env.get("AGENTMEM_STAGING_URI") or ""),
        )


def _staging_uri(value: str) -> str:
    """AGENTMEM_STAGING_URI as given, once known to name a directory or an s3:// location."""
    try:
        location(value) if value else None
    except ValueError as exc:
        raise StoreUnavailable(f"AGENTMEM_STAGING_URI: {exc} (e.g. s3://bucket/prefix, with the AWS_* variables).") from None
    return value
