"""The local cluster end to end: deploy/local/up --workers 2 (PostgreSQL, Redis, SeaweedFS,
two Celery workers), a month of demo memories through `agentmem ingest` on the workers, a
re-run, a worker killed with SIGKILL in the middle of a run, and deploy/local/down.

The stores come from the environment that `up` prints. AGENTMEM_TEST_CLUSTER_STORES picks
which: `cluster` (the default: the system of record on PostgreSQL, LanceDB and staging on S3) or `local`
(the embedded default under AGENTMEM_HOME, which the workers of one machine share); the test
itself is the same."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UP, DOWN = ROOT / "deploy" / "local" / "up", ROOT / "deploy" / "local" / "down"
AGENTMEM = str(Path(sys.executable).parent / "agentmem")
STORES = os.environ.get("AGENTMEM_TEST_CLUSTER_STORES", "cluster")
DAYS, MEMORIES, START = 30, 1500, "2024-06-01"
EXPORT = re.compile(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$")
# Every command runs where the cluster's home is, with AGENTMEM_HOME and the model directory
# given relative to it, as a user would (`../shared/models/...`): the workers, each in its own
# directory, must still find them.
RUN_DIR: Path | None = None


def _run(argv, env, timeout=600, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=RUN_DIR)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def _exports(stdout: str) -> dict[str, str]:
    """`up`'s stdout: nothing but export lines."""
    import shlex

    env = {}
    for line in stdout.splitlines():
        match = EXPORT.match(line)
        assert match, f"up printed a line that is not `export NAME=value`: {line!r}"
        env[match[1]] = shlex.split(match[2])[0]
    return env


def _cluster_pids(cluster: Path) -> dict[str, int]:
    """The pid (a process group leader) of each component, from its pid file."""
    pids = {}
    for pidfile in [*cluster.glob("*/*.pid"), *cluster.glob("workers/*/worker.pid")]:
        text = pidfile.read_text().split()
        if text:
            pids[pidfile.parent.name] = int(text[0])
    return pids


def _processes_under(cluster: Path) -> list[str]:
    """Live processes that belong to the cluster: their command line names the cluster
    directory or they run in it."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(cluster) in cmdline or cwd.startswith(str(cluster)):
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


@pytest.fixture(scope="module")
def cluster(static_model):
    global RUN_DIR
    # Not pytest's tmp_path: PostgreSQL runs as the `postgres` user, which must reach its
    # directory (pytest's base directory is private to its user).
    home = Path(tempfile.mkdtemp(prefix="agentmem-cluster-"))
    home.chmod(0o755)
    RUN_DIR = home
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMEM_", "DAGSTER_", "AWS_"))}
    env.update({
        "AGENTMEM_HOME": "agentmem",
        "AGENTMEM_EMBED_MODEL": static_model[0],
        "AGENTMEM_EMBED_MODEL_PATH": os.path.relpath(static_model[1], home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    up = _run([str(UP), "--workers", "2", "--stores", STORES], env, timeout=300)
    exports = _exports(up.stdout)
    cluster_dir = Path(exports["AGENTMEM_CLUSTER_DIR"])
    try:
        yield {"env": {**env, **exports}, "base_env": env, "exports": exports, "dir": cluster_dir, "home": home}
    finally:
        _run([str(DOWN)], env, timeout=120, check=False)
        left = _processes_under(cluster_dir)
        shutil.rmtree(home, ignore_errors=True)
        assert not left, f"processes left after down: {left}"


def _ingest(env) -> dict:
    result = _run([AGENTMEM, "ingest", "--all", "--json"], env, check=False)
    assert result.stdout, result.stderr[-3000:]
    return json.loads(result.stdout)


def _stats(env) -> dict:
    return json.loads(_run([AGENTMEM, "stats", "--json"], env).stdout)


def test_up_prints_the_cluster_and_is_idempotent(cluster):
    exports = cluster["exports"]
    assert exports["AGENTMEM_HOME"] == str(cluster["home"] / "agentmem")  # made absolute
    assert exports["AGENTMEM_EXECUTOR"] == "celery"
    assert exports["AGENTMEM_CELERY_BROKER"].startswith("redis://127.0.0.1:")
    assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert Path(exports["DAGSTER_HOME"]).is_relative_to(cluster["dir"])
    if STORES == "cluster":
        assert exports["AGENTMEM_DATABASE_URL"].startswith("postgresql://")
        assert exports["AGENTMEM_LANCEDB_URI"].startswith("s3://")
        assert exports["AGENTMEM_STAGING_URI"].startswith("s3://")
    pids = _cluster_pids(cluster["dir"])
    assert {"postgres", "redis", "seaweedfs", "worker-1", "worker-2"} <= set(pids)

    again = _run([str(UP), "--workers", "2", "--stores", STORES], cluster["base_env"], timeout=120)
    assert _exports(again.stdout) == exports  # same ports, same keys
    assert _cluster_pids(cluster["dir"]) == pids  # nothing restarted


@pytest.fixture(scope="module")
def month(cluster):
    """A month of demo memories ingested on the cluster: the ingest report and the stats."""
    env = cluster["env"]
    demo = json.loads(_run([AGENTMEM, "demo", "--days", str(DAYS), "--memories", str(MEMORIES), "--start", START,
                            "--json"], env).stdout)
    report = _ingest(env)
    assert report["status"] == "SUCCESS", report["error"]
    return demo, report, _stats(env)


def test_a_month_runs_on_two_workers_into_both_stores(cluster, month):
    demo, report, stats = month
    assert report["executor"] == "celery"
    assert len(report["partitions"]) == DAYS
    # every memory once in both stores, the bad lines quarantined
    assert report["memories"] == stats["memories"] == stats["versions"] == demo["memories"]
    assert report["quarantined"] == demo["bad_lines"]
    assert stats["consistent"] is True
    assert stats["chunks"] == stats["libsql_rows"] == stats["lancedb_rows"] >= demo["memories"]
    # steps on both workers, each a process of a worker that up started
    names = {worker.get("worker") for worker in report["workers"]}
    assert names == {"worker-1", "worker-2"}, report["workers"]
    assert all(worker["pid"] != os.getpid() for worker in report["workers"])
    steps = [step for worker in report["workers"] for step in worker["steps"]]
    assert len(steps) == len(set(steps)) and "raw_memories" in steps and "memory_stores.commit_days" in steps


def test_the_instance_is_on_postgresql(cluster, month):
    dagster_home = Path(cluster["exports"]["DAGSTER_HOME"])
    assert "postgres" in (dagster_home / "dagster.yaml").read_text()
    sqlite = [p for p in dagster_home.rglob("*") if p.is_file() and p.open("rb").read(16) == b"SQLite format 3\x00"]
    assert not sqlite and not list(dagster_home.rglob("*.db")), sqlite
    # the run is in PostgreSQL: a process with only DAGSTER_HOME finds it
    code = (
        "import dagster as dg, sys; i = dg.DagsterInstance.get(); r = i.get_run_by_id(sys.argv[1]); "
        "print(type(i.run_storage).__name__, r.status.value)"
    )
    out = _run([sys.executable, "-c", code, month[1]["run_id"]], cluster["env"]).stdout.split()
    assert out == ["PostgresRunStorage", "SUCCESS"]


def test_a_rerun_changes_nothing(cluster, month):
    _, _, before = month
    again = _ingest(cluster["env"])
    assert again["status"] == "SUCCESS", again["error"]
    assert _stats(cluster["env"]) == before


def _step_pid(instance, run_id: str, steps: set[str]) -> tuple[str, int] | None:
    import dagster as dg

    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    for record in records:
        if record.event_log_entry.step_key in steps:
            return record.event_log_entry.step_key, record.event_log_entry.dagster_event.pid
    return None


WRITERS = {"memory_stores.write_lancedb", "memory_stores.write_libsql"}


def _ingest_killing_a_writer(instance, cluster) -> tuple[dict, str, int]:
    """`agentmem ingest --all` with SIGKILL to the worker process that runs one of the writers,
    as soon as its step has started: the report, the step and the pid killed."""
    known = {run.run_id for run in instance.get_runs()}
    proc = subprocess.Popen([AGENTMEM, "ingest", "--all", "--json"], env=cluster["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=RUN_DIR)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        runs = [run for run in instance.get_runs(limit=5) if run.run_id not in known]
        found = runs and _step_pid(instance, runs[0].run_id, WRITERS)
        if found:
            step, pid = found
            worker_groups = {pid for name, pid in _cluster_pids(cluster["dir"]).items() if name.startswith("worker-")}
            assert os.getpgid(pid) in worker_groups, f"step {step} ran in pid {pid}, not in a worker"
            os.kill(pid, signal.SIGKILL)
            killed = (step, pid)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=300)
    assert killed, f"no writer step seen running: {err[-2000:]}"
    return json.loads(out), *killed


def test_a_worker_killed_mid_run_then_a_rerun_converges(cluster, month, monkeypatch):
    """SIGKILL to the worker process in the middle of a writer step: the run fails (Celery
    reports the lost worker), the writers' uncommitted rows do not count, and the next run of
    the same days leaves the stores as before."""
    import dagster as dg

    _, _, before = month
    env = cluster["env"]
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # this process reads the runs as they go
    instance = dg.DagsterInstance.get()
    for _attempt in range(3):
        report, step, pid = _ingest_killing_a_writer(instance, cluster)
        finished = {
            r.event_log_entry.step_key
            for r in instance.get_records_for_run(report["run_id"], of_type=dg.DagsterEventType.STEP_SUCCESS).records
        }
        if step not in finished:  # killed in the step (else it had ended first: try again)
            break
    else:
        pytest.fail(f"three times the writer step ended before the kill reached it ({step}, pid {pid})")
    assert report["status"] == "FAILURE", f"the run finished although {step} was killed in pid {pid}"
    assert instance.get_run_by_id(report["run_id"]).status == dg.DagsterRunStatus.FAILURE

    # The worker whose process was killed is still there (Celery starts a new pool process):
    # the re-run runs on both and converges.
    rerun = _ingest(env)
    assert rerun["status"] == "SUCCESS", rerun["error"]
    assert _stats(env) == before
    assert {worker.get("worker") for worker in rerun["workers"]} == {"worker-1", "worker-2"}
    assert pid not in {worker["pid"] for worker in rerun["workers"]}


def test_down_leaves_nothing_running(cluster, month):
    pids = _cluster_pids(cluster["dir"])
    _run([str(DOWN)], cluster["base_env"], timeout=120)
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", name
    assert not _processes_under(cluster["dir"])
    # down again: nothing to stop, no error
    _run([str(DOWN)], cluster["base_env"], timeout=60)
