"""S3-compatible object storage: the client settings from the usual AWS_* variables (for
LanceDB, pyarrow and boto3 alike), staged files addressed by `s3://` URIs, and the probe that
proves a server honours conditional PUT before LanceDB commits there.

Lance commits a version by writing its manifest with `If-None-Match: *`: of two writers that
race for one version, the server must refuse the second (412), which then retries on top of
the first. A server that ignores the header lets the second overwrite the first, and its rows
are lost without an error. `require_conditional_put` checks it once per process and bucket."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import StoreUnavailable, detail

SCHEME = "s3://"
# Writers of the probe: how many PUTs of one new key race.
PROBE_WRITERS = 16


def is_object_uri(location) -> bool:
    return isinstance(location, ObjectPath) or str(location).startswith(SCHEME)


def split(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` as ("bucket", "some/key")."""
    if not uri.startswith(SCHEME):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key.strip("/")


@dataclass(frozen=True)
class S3Settings:
    """Endpoint and keys, as AWS tools read them from the environment. Without an endpoint,
    AWS S3 itself; with an `http://` endpoint (a local server), plain HTTP is allowed."""

    endpoint: str | None
    access_key: str | None
    secret_key: str | None
    session_token: str | None
    region: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        return cls(
            # AWS's own names, then object_store's (what Lance alone would read)
            endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT") or None,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint) and self.endpoint.startswith("http://")

    def lance_options(self) -> dict[str, str]:
        """LanceDB / Lance `storage_options` (object_store's keys)."""
        options = {"aws_region": self.region}
        for key, value in (
            ("aws_endpoint", self.endpoint), ("aws_access_key_id", self.access_key),
            ("aws_secret_access_key", self.secret_key), ("aws_session_token", self.session_token),
        ):
            if value:
                options[key] = value
        if self.allow_http:
            options["allow_http"] = "true"
        return options

    def pyarrow(self):
        """A pyarrow S3FileSystem with these settings."""
        from pyarrow import fs

        kwargs = {"region": self.region, "access_key": self.access_key, "secret_key": self.secret_key,
                  "session_token": self.session_token}
        if self.endpoint:
            scheme, _, address = self.endpoint.partition("://")
            kwargs.update(endpoint_override=address.rstrip("/"), scheme=scheme)
        return fs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None})

    def boto3(self):
        """This process's boto3 S3 client for these settings (no retries: the probe counts every answer)."""
        with _filesystems_lock:
            if self not in _clients:
                _clients[self] = self._boto3()
            return _clients[self]

    def _boto3(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, aws_session_token=self.session_token,
            region_name=self.region,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=PROBE_WRITERS * 2),
        )


_filesystems: dict[S3Settings, object] = {}
_clients: dict[S3Settings, object] = {}
_filesystems_lock = threading.Lock()


def filesystem(settings: S3Settings | None = None):
    """This process's pyarrow S3FileSystem for the environment's settings (one per settings)."""
    settings = settings or S3Settings.from_env()
    with _filesystems_lock:
        if settings not in _filesystems:
            _filesystems[settings] = settings.pyarrow()
        return _filesystems[settings]


# --------------------------------------------------------------------------- staged files


@dataclass(frozen=True)
class ObjectPath:
    """An object under `s3://`, with the part of pathlib.Path's interface the staging uses (a
    staged file is a Path on local disk, an ObjectPath in object storage). Directories are
    prefixes: mkdir does nothing, rglob lists the objects under one."""

    uri: str

    def __post_init__(self):
        split(self.uri)

    def __str__(self) -> str:
        return self.uri

    def __truediv__(self, part) -> ObjectPath:
        return ObjectPath(f"{self.uri.rstrip('/')}/{str(part).strip('/')}")

    @property
    def key(self) -> str:
        """`bucket/key`, as pyarrow's S3FileSystem names it."""
        bucket, key = split(self.uri)
        return f"{bucket}/{key}" if key else bucket

    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath(self.key)

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(SCHEME + str(self._pure.parent))

    def with_name(self, name: str) -> ObjectPath:
        return ObjectPath(SCHEME + str(self._pure.with_name(name)))

    def with_suffix(self, suffix: str) -> ObjectPath:
        return ObjectPath(SCHEME + str(self._pure.with_suffix(suffix)))

    @property
    def fs(self):
        return filesystem()

    def _type(self):
        return self.fs.get_file_info(self.key).type

    def exists(self) -> bool:
        from pyarrow import fs

        return self._type() != fs.FileType.NotFound

    def is_file(self) -> bool:
        from pyarrow import fs

        return self._type() == fs.FileType.File

    def is_dir(self) -> bool:
        """Some object lies under this prefix."""
        from pyarrow import fs

        return self._type() == fs.FileType.Directory

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: an object's prefix needs no making."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def replace(self, target: ObjectPath) -> ObjectPath:
        """Move to `target` (a copy on the server, then a delete): `target` appears whole."""
        if not isinstance(target, ObjectPath):
            raise TypeError(f"cannot move {self} to a local path {target}")
        self.fs.move(self.key, target.key)
        return target

    def rglob(self, pattern: str) -> Iterator[ObjectPath]:
        """The objects under this prefix whose name matches `pattern` (e.g. `*.parquet`)."""
        from pyarrow import fs

        selector = fs.FileSelector(self.key, recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type == fs.FileType.File and PurePosixPath(info.base_name).match(pattern):
                yield ObjectPath(SCHEME + info.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.key) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        with self.fs.open_output_stream(self.key) as f:
            f.write(text.encode(encoding))

    def remove_tree(self) -> None:
        """Delete every object under this prefix."""
        try:
            self.fs.delete_dir(self.key)
        except FileNotFoundError:
            pass


def location(value) -> Path | ObjectPath:
    """A staged file's or directory's location: an ObjectPath for `s3://`, else a local Path."""
    if isinstance(value, (Path, ObjectPath)):
        return value
    if is_object_uri(value):
        return ObjectPath(str(value))
    if "://" in str(value):
        raise ValueError(f"{value!r} is neither a local directory nor an s3:// URI")
    return Path(value)


def open_parquet_args(path) -> tuple[str, object | None]:
    """(path, filesystem) for pyarrow.parquet: the local path and None, or the key and S3."""
    if isinstance(path, ObjectPath):
        return path.key, path.fs
    return str(path), None


# --------------------------------------------------------------------------- the probe


def claim(uri: str, settings: S3Settings | None = None) -> bool:
    """Create the object `uri` unless it exists (If-None-Match: *): True for the one caller of
    many that created it."""
    import botocore.exceptions

    settings = settings or S3Settings.from_env()
    bucket, key = split(uri)
    try:
        settings.boto3().put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
            return False
        raise
    return True


class ConditionalPutIgnored(StoreUnavailable):
    """The server let more than one conditional PUT of a new key win (or none)."""


def conditional_puts(uri: str, writers: int = PROBE_WRITERS, *, conditional: bool = True,
                     settings: S3Settings | None = None) -> dict:
    """Race `writers` PUTs of one new key under `uri` (with `If-None-Match: *` unless
    `conditional` is False), then PUT it once more, alone: the answers, counted. The key is
    removed afterwards. Raises what the server answers other than success, 412 or 409."""
    import botocore.exceptions

    settings = settings or S3Settings.from_env()
    bucket, prefix = split(uri)
    key = "/".join(p for p in (prefix, f".agentmem-probe/{uuid.uuid4().hex}") if p)
    client = settings.boto3()
    start = threading.Barrier(writers)
    answers: list[str] = []
    errors: list[BaseException] = []

    def put(i: int) -> str:
        extra = {"IfNoneMatch": "*"} if conditional else {}
        try:
            client.put_object(Bucket=bucket, Key=key, Body=f"writer {i}".encode(), **extra)
            return "won"
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):
                return "refused"
            raise

    def racer(i: int) -> None:
        try:
            start.wait(timeout=30)
            answers.append(put(i))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(writers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        if errors:
            raise errors[0]
        late = put(writers)  # the key exists now: a lone conditional PUT must be refused too
    finally:
        try:
            client.delete_object(Bucket=bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            pass  # what the race failed with, if anything, is the news
    return {"writers": writers, "won": answers.count("won"), "refused": answers.count("refused"), "late": late}


def judge(outcome: dict, where: str) -> None:
    """Raise ConditionalPutIgnored unless exactly one racer won and the late PUT was refused."""
    if outcome["won"] != 1 or outcome["late"] != "refused":
        raise ConditionalPutIgnored(
            f"the object store at {where} does not honour conditional PUT (If-None-Match: *): "
            f"{outcome['won']} of {outcome['writers']} concurrent writers of one new key succeeded "
            f"and a later one was {'refused' if outcome['late'] == 'refused' else 'accepted'}, so concurrent "
            "LanceDB commits there would lose rows: use a server that honours it (AWS S3, SeaweedFS, MinIO) "
            "or set AGENTMEM_LANCEDB_URI to a local directory."
        )


_trusted: set[tuple[str | None, str]] = set()
_trusted_lock = threading.Lock()
# A probe's success is recorded beside the table (`<prefix>/.agentmem-probe/verified`) and
# trusted by every process for this long: on SeaweedFS the refused writers of a race wait for
# one another (about a second each beyond the first few), so the probe costs seconds, which
# each step process of a run would otherwise pay again. Ages are read on the server's clock.
VERIFIED_TTL_S = 3600


def _verified_key(uri: str) -> tuple[str, str]:
    bucket, prefix = split(uri)
    return bucket, "/".join(p for p in (prefix, ".agentmem-probe/verified") if p)


def recently_verified(uri: str, settings: S3Settings, ttl_s: float = VERIFIED_TTL_S) -> bool:
    """A probe of this location succeeded less than `ttl_s` ago (by the server's clock)."""
    import email.utils

    import botocore.exceptions

    bucket, key = _verified_key(uri)
    try:
        answer = settings.boto3().head_object(Bucket=bucket, Key=key)
        now = email.utils.parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, KeyError, TypeError, ValueError):
        return False
    return 0 <= (now - answer["LastModified"]).total_seconds() < ttl_s


def _record_verified(uri: str, settings: S3Settings, outcome: dict) -> None:
    import json

    import botocore.exceptions

    bucket, key = _verified_key(uri)
    try:
        settings.boto3().put_object(Bucket=bucket, Key=key, Body=json.dumps(outcome).encode())
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        pass  # not allowed to write there: each process probes for itself


def require_conditional_put(uri: str, settings: S3Settings | None = None) -> None:
    """Probe the location `uri` unless this process has trusted its bucket already or a probe
    there succeeded within VERIFIED_TTL_S; raise StoreUnavailable (one line) when the server
    is unreachable or ignores conditional PUT."""
    settings = settings or S3Settings.from_env()
    bucket, _ = split(uri)
    where = f"{settings.endpoint or 'AWS S3'} (bucket {bucket})"
    with _trusted_lock:
        if (settings.endpoint, bucket) in _trusted:
            return
        if not recently_verified(uri, settings):
            try:
                outcome = conditional_puts(uri, settings=settings)
            except Exception as exc:  # noqa: BLE001 - any failure to probe is a store that cannot be trusted
                raise StoreUnavailable(
                    f"LanceDB {uri!r} cannot be opened or reached (probing {where}: {detail(exc)}): check "
                    "AGENTMEM_LANCEDB_URI and the AWS_* variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY, AWS_REGION)."
                ) from None
            judge(outcome, where)
            _record_verified(uri, settings, outcome)
        _trusted.add((settings.endpoint, bucket))
