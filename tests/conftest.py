"""Fixtures: real fastembed models from a local directory, real stores on temporary dirs.

Tests read the models from AGENTMEM_TEST_MODELS, a directory holding `minilm-static-256/`
(used by most tests) and `all-MiniLM-L6-v2/` (where the transformer path is under test);
.ci/run points it at ../shared/models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

STATIC_MODEL = "minishlab/potion-base-8M"
ONNX_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _models_dir() -> Path:
    value = os.environ.get("AGENTMEM_TEST_MODELS")
    if not value:
        raise pytest.UsageError(
            "set AGENTMEM_TEST_MODELS to a directory with the offline models "
            "(minilm-static-256/ and all-MiniLM-L6-v2/), e.g. ../shared/models"
        )
    return Path(value).absolute()


@pytest.fixture(scope="session")
def static_model() -> tuple[str, str]:
    return STATIC_MODEL, str(_models_dir() / "minilm-static-256")


@pytest.fixture(scope="session")
def onnx_model() -> tuple[str, str]:
    return ONNX_MODEL, str(_models_dir() / "all-MiniLM-L6-v2")


@pytest.fixture
def agentmem_home(tmp_path, monkeypatch, static_model):
    """An empty embedded default under tmp_path, configured through the environment contract."""
    home = tmp_path / "agentmem"
    for name in list(os.environ):
        if name.startswith("AGENTMEM_") and name != "AGENTMEM_TEST_MODELS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTMEM_HOME", str(home))
    monkeypatch.setenv("AGENTMEM_EMBED_MODEL", static_model[0])
    monkeypatch.setenv("AGENTMEM_EMBED_MODEL_PATH", static_model[1])
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return home


def write_landing(landing: Path, day: str, records: list, name: str = "memories.jsonl") -> Path:
    """Write records (dicts, or raw strings for bad lines) as one landing file of `day`."""
    folder = landing / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
    return path


def memory(memory_id: str, user_id: str, content: str, day: str, **extra) -> dict:
    return {
        "memory_id": memory_id,
        "user_id": user_id,
        "content": content,
        "created_at": f"{day}T12:00:00Z",
        **extra,
    }


def instance_with_days(*days: str, instance=None):
    """A Dagster instance (ephemeral unless given) where `days` are partitions of the pipeline:
    the partitions are the days registered as holding landing data."""
    import dagster as dg

    from agentmem_dagster.assets.partitions import register_days

    instance = instance or dg.DagsterInstance.ephemeral()
    register_days(instance, days)
    return instance


# Skips: a skipped test fails the run unless tests/allowed_skips.toml lists it with a reason;
# with AGENTMEM_STRICT_SKIPS=1 (CI) even a listed one fails, so a green CI run ran everything.
ALLOWED_SKIPS = Path(__file__).with_name("allowed_skips.toml")


def allowed_skips() -> dict[str, str]:
    import tomllib

    path = Path(os.environ.get("AGENTMEM_ALLOWED_SKIPS") or ALLOWED_SKIPS)  # another list: the policy's own tests
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("skip", [])
    for entry in entries:
        if not entry.get("test") or not entry.get("reason", "").strip():
            raise pytest.UsageError(f"{path}: every [[skip]] needs a test and a reason: {entry}")
    return {entry["test"]: entry["reason"] for entry in entries}


def skip_refused(nodeid: str, allowed: dict[str, str], strict: bool) -> str | None:
    """Why this skip fails the run, or None when it may skip."""
    if nodeid.split("[", 1)[0] not in allowed:
        return f"skipped, and not on {ALLOWED_SKIPS.name}: fix the cause or list it there with a reason"
    if strict:
        return f"skipped under AGENTMEM_STRICT_SKIPS=1 (listed as: {allowed[nodeid.split('[', 1)[0]]})"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    why = skip_refused(report.nodeid, allowed_skips(), os.environ.get("AGENTMEM_STRICT_SKIPS") == "1")
    if why is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{why}\n{reason}"


# PostgreSQL for the system-of-record contract tests: a private throwaway server (initdb and
# pg_ctl from Debian's packages, in a temp dir, on a free port, as the `postgres` user when
# running as root) for the session, one fresh database per test. AGENTMEM_TEST_DATABASE_URL
# (a postgresql:// URL of a server where that user may create databases) replaces the server.
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)


def _pg_bin(name: str) -> str:
    import shutil

    for directory in [os.environ.get("AGENTMEM_TEST_PG_BIN"), *PG_BIN_DIRS]:
        if directory and (Path(directory) / name).exists():
            return str(Path(directory) / name)
    if found := shutil.which(name):
        return found
    raise pytest.UsageError(
        f"PostgreSQL's {name} is not installed (apt-get install postgresql), and AGENTMEM_TEST_DATABASE_URL is not set"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server(postgres_instance) -> str:
    """A postgresql:// URL of a server this session may create databases on."""
    return postgres_instance[0]


@pytest.fixture(scope="session")
def postgres_instance():
    """(URL, data directory) of the session's PostgreSQL server; the directory is None for
    the server of AGENTMEM_TEST_DATABASE_URL."""
    if url := os.environ.get("AGENTMEM_TEST_DATABASE_URL"):
        yield url, None
        return
    with private_postgres() as instance:
        yield instance


@contextmanager
def private_postgres() -> Iterator[tuple[str, Path]]:
    """A throwaway PostgreSQL server in a temp dir on a free port: (URL, data directory)."""
    import shutil
    import subprocess
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="agentmem-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as `postgres`
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    run = {"check": True, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    try:
        subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--locale=C", "--no-sync"], **run)
        options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-o", options,
                        "-l", str(root / "server.log"), "-w", "-t", "60", "start"], **run)
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL for the tests: {exc.stdout}\n{log}") from exc
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", data
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def new_postgres_database(server: str) -> Iterator[str]:
    """A postgresql:// URL of a new, empty database on `server`, dropped afterwards."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"agentmem_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_server):
    """A postgresql:// URL of a new, empty database, dropped after the test."""
    with new_postgres_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["libsql", "postgres"])
def database_url(request, tmp_path):
    """The system of record's URL, once for each adapter: a LibSQL file, a PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "memories.db")


# A real S3-compatible server (SeaweedFS, tests/s3server.py), one per test session, started
# on first use; a test that asks for `s3` gets the AWS_* variables set and a fresh prefix.
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    from tests import s3server

    server = s3server.start(tmp_path_factory.mktemp("seaweedfs"), die_with_parent=True)
    yield server
    server.stop()


class S3Place:
    """The server, and a prefix of the bucket no other test uses."""

    def __init__(self, server, prefix: str):
        self.server = server
        self.prefix = prefix

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.server.bucket}/{self.prefix}", *parts])

    def keys(self, under: str = "") -> list[str]:
        """The object keys under this test's prefix (and `under`), relative to it."""
        from tests import s3server

        client, root = s3server.client(self.server), f"{self.prefix}/{under}".rstrip("/") + "/"
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.server.bucket, Prefix=root)
        return sorted(o["Key"][len(self.prefix) + 1:] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    import uuid

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return S3Place(s3_server, f"{request.node.name.split('[')[0][:40]}-{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=["local", "s3"])
def lance_uri(request, tmp_path):
    """A LanceDB location: a local directory, then a prefix of the bucket on SeaweedFS (the
    store's contract holds on both)."""
    if request.param == "local":
        return str(tmp_path / "lance")
    return request.getfixturevalue("s3").uri("lance")
