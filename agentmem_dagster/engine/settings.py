"""The environment contract (AGENTMEM_*), resolved in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreUnavailable
from .objstore import ObjectPath, location
from .record_store import AUTH_TOKEN_SETTING, LEGACY_SETTING, SETTING, store_kind

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Settings:
    home: Path
    landing: Path
    lancedb_uri: str
    database_url: str  # the system of record: a LibSQL file or URL, or a postgresql:// URL
    embed_model: str
    embed_model_path: str | None
    partitions_start: str
    staging_uri: str = ""  # empty: $AGENTMEM_HOME/staging
    database_auth_token: str | None = None  # for libsql:// servers
    database_url_setting: str = SETTING  # the variable the URL came from (AGENTMEM_LIBSQL_URL still accepted)

    @property
    def libsql_url(self) -> str:
        """The system of record's URL (its name from when it could only be LibSQL)."""
        return self.database_url

    @property
    def database_kind(self) -> str:
        """`libsql` or `postgres`."""
        return store_kind(self.database_url)

    @property
    def staging(self) -> Path | ObjectPath:
        """Where the pipeline keeps its intermediate tables (one Parquet file per asset and day)
        and the steps' outputs: a local directory, or `s3://bucket/prefix` (AGENTMEM_STAGING_URI)."""
        return location(self.staging_uri) if self.staging_uri else self.home / "staging"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("AGENTMEM_HOME") or "./.agentmem").absolute()
        database_url = env.get(SETTING) or env.get(LEGACY_SETTING) or str(home / "memories.db")
        store_kind(database_url)  # BadDatabaseUrl, one line, for a URL naming no system of record
        return cls(
            home=home,
            landing=Path(env.get("AGENTMEM_LANDING") or home / "landing").absolute(),
            lancedb_uri=env.get("AGENTMEM_LANCEDB_URI") or str(home / "lancedb"),
            database_url=database_url,
            embed_model=env.get("AGENTMEM_EMBED_MODEL") or DEFAULT_MODEL,
            embed_model_path=env.get("AGENTMEM_EMBED_MODEL_PATH") or None,
            partitions_start=env.get("AGENTMEM_PARTITIONS_START") or "2020-01-01",
            database_auth_token=env.get(AUTH_TOKEN_SETTING) or None,
            database_url_setting=LEGACY_SETTING if env.get(LEGACY_SETTING) and not env.get(SETTING) else SETTING,
            staging_uri=_staging_uri(env.get("AGENTMEM_STAGING_URI") or ""),
        )


def _staging_uri(value: str) -> str:
    """AGENTMEM_STAGING_URI as given, once known to name a directory or an s3:// location."""
    try:
        location(value) if value else None
    except ValueError as exc:
        raise StoreUnavailable(f"AGENTMEM_STAGING_URI: {exc} (e.g. s3://bucket/prefix, with the AWS_* variables).") from None
    return value
