"""The Dagster UI in a real browser: Playwright driving Debian's chromium (no browser is
downloaded) against a dagster-webserver and dagster-daemon started here on a DAGSTER_HOME
where a small demo was ingested.

It looks at the asset lineage and the job's op graph with the writer ops, a materialized
day's metadata, the checks passed, the schedule and the sensor, then launches a backfill of
two days from the UI and polls the instance until it completes. On failure, a screenshot of
the page and its text are saved to $AGENTMEM_UI_ARTIFACTS (default: a temporary directory),
printed in the test's output.
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
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from playwright.sync_api import Page, expect, sync_playwright

from agentmem_dagster.assets.partitions import register_days

# Every name the test looks for, in one place: they change with the Dagster layer.
NAMES = {
    "location": "agentmem",
    "group": "memories",
    "job": "ingest_memories",
    "assets": ["raw_memories", "memory_embeddings", "lancedb_memories", "libsql_memories", "search_index"],
    "table_asset": "search_index",  # one asset for the whole table, not per day
    "graph_op": "memory_stores",  # the graph whose ops write the stores
    "writer_ops": ["write_lancedb", "write_libsql", "commit_days"],
    "day_asset": "raw_memories",
    "day_metadata": ["quarantined", "files", "lines", "preview"],
    "checked_asset": "lancedb_memories",
    "checks": ["stores_consistent", "vectors_sane"],
    "schedule": "daily_ingest_schedule",
    "sensor": "landing_sensor",
}
DAYS = ["2024-06-01", "2024-06-02", "2024-06-03"]  # the first ingested by the CLI, the others backfilled in the UI

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BACKFILL_TIMEOUT_S = 900
UI_TIMEOUT_MS = 90_000  # a page's data can take a while on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agentmem(*args: str, env: dict) -> dict:
    proc = subprocess.run([str(BIN / "agentmem"), *args, "--json"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"agentmem {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster-webserver exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"dagster-webserver did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


# Read at import: the fixtures clear the AGENTMEM_* variables.
ARTIFACTS = os.environ.get("AGENTMEM_UI_ARTIFACTS")


def _artifacts_dir(tmp_path: Path) -> Path:
    path = Path(ARTIFACTS or tmp_path / "ui-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def ui(tmp_path, agentmem_home, monkeypatch):
    """A demo ingested for its first day, then dagster-webserver and dagster-daemon on it."""
    if shutil.which("chromium") is None:
        pytest.fail("chromium not found: `apt-get install -y chromium` (as .ci/run does)")
    monkeypatch.delenv("DAGSTER_HOME")  # agentmem creates $AGENTMEM_HOME/dagster with its dagster.yaml
    env = os.environ.copy()
    _agentmem("demo", "--start", DAYS[0], "--days", str(len(DAYS)), "--memories", "60", env=env)
    ingested = _agentmem("ingest", "--partition", DAYS[0], env=env)
    assert ingested["status"] == "SUCCESS", ingested
    env["DAGSTER_HOME"] = str(agentmem_home / "dagster")
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        register_days(instance, DAYS[1:])  # as the landing sensor does once it is turned on
    assert (agentmem_home / "dagster" / "dagster.yaml").is_file()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    workspace = str(ROOT / "workspace.yaml")
    logs = tmp_path / "logs"
    logs.mkdir()
    webserver = _start(
        [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)], env, logs / "webserver.log"
    )
    daemon = _start([str(BIN / "dagster-daemon"), "run", "-w", workspace], env, logs / "daemon.log")
    try:
        _wait_for_server(url, webserver, logs / "webserver.log")
        yield {"url": url, "dagster_home": env["DAGSTER_HOME"], "logs": logs}
    finally:
        _stop(daemon)
        _stop(webserver)
    assert "No dagster instance configuration file" not in (logs / "webserver.log").read_text()


def test_dagster_ui_in_a_browser(ui, tmp_path):
    artifacts = _artifacts_dir(tmp_path)
    print(f"browser test screenshots, on failure: {artifacts}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)  # assertions wait as long as actions (5 s by default)
        step = "start"
        try:
            for step, check in [  # noqa: B007 (the step that failed names the screenshot)
                ("lineage", _lineage_and_writer_ops),
                ("day_metadata", _day_metadata),
                ("checks", _checks_passed),
                ("automation", _schedule_and_sensor),
                ("backfill", _backfill_two_days),
            ]:
                check(page, ui)
        except BaseException:
            shot = artifacts / f"test_ui-{step}.png"
            page.screenshot(path=str(shot), full_page=True)
            (artifacts / f"test_ui-{step}.txt").write_text(page.url + "\n\n" + page.inner_text("body"))
            for log in ui["logs"].iterdir():
                shutil.copy(log, artifacts / log.name)
            print(f"UI test failed at {step!r}: screenshot {shot}, page text and server logs in {artifacts}")
            raise
        finally:
            browser.close()


def _lineage_and_writer_ops(page: Page, ui: dict) -> None:
    page.goto(f"{ui['url']}/locations/{NAMES['location']}/asset-groups/{NAMES['group']}/lineage")
    for asset in NAMES["assets"]:  # the group's asset lineage
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{len(NAMES['checks'])} / {len(NAMES['checks'])} Passed").first).to_be_visible()

    page.goto(f"{ui['url']}/locations/{NAMES['location']}/jobs/{NAMES['job']}")
    page.get_by_text("View as Asset Graph").click()  # the job's op graph, its graphs exploded
    page.get_by_text("Explode graphs").click()
    for op in NAMES["writer_ops"]:  # shown as graph.op, cut to the box's width
        expect(page.get_by_text(f"{NAMES['graph_op']}.{op}").first).to_be_visible()


def _day_metadata(page: Page, ui: dict) -> None:
    page.goto(f"{ui['url']}/assets/{NAMES['day_asset']}?partition={DAYS[0]}")
    expect(page.get_by_text("Latest materialization").first).to_be_visible()
    expect(page.get_by_text(DAYS[0]).first).to_be_visible()
    for key in NAMES["day_metadata"]:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()


def _checks_passed(page: Page, ui: dict) -> None:
    page.goto(f"{ui['url']}/assets/{NAMES['checked_asset']}?view=checks")
    for check in NAMES["checks"]:
        expect(page.get_by_text(check, exact=True).first).to_be_visible()
    # each check's latest execution succeeded, and the one shown passed for the day
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(NAMES["checks"]))
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
    expect(page.get_by_text(DAYS[0], exact=True).first).to_be_visible()


def _schedule_and_sensor(page: Page, ui: dict) -> None:
    page.goto(f"{ui['url']}/automation")
    expect(page.get_by_text(NAMES["schedule"], exact=True).first).to_be_visible()
    expect(page.get_by_text(NAMES["sensor"], exact=True).first).to_be_visible()


def _backfill_two_days(page: Page, ui: dict) -> None:
    page.goto(f"{ui['url']}/locations/{NAMES['location']}/asset-groups/{NAMES['group']}")
    materialize = page.get_by_text("Materialize all").first
    materialize.wait_for()
    materialize.click()
    dialog = page.get_by_role("dialog")
    # the partitions are the days registered as holding landing data: the two not yet materialized
    dialog.get_by_role("button", name="Missing", exact=True).click()
    expect(dialog.get_by_text("2 partitions")).to_be_visible()
    dialog.get_by_role("button", name="Launch backfill").click()

    with dg.DagsterInstance.from_config(ui["dagster_home"]) as instance:
        deadline = time.monotonic() + BACKFILL_TIMEOUT_S
        while True:
            backfills = instance.get_backfills()
            done = [b for b in backfills if b.status != BulkActionStatus.REQUESTED]
            if done or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert len(backfills) == 1, f"expected one backfill launched from the UI, found {len(backfills)}"
        backfill = backfills[0]
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert runs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        for asset in NAMES["assets"]:
            if asset == NAMES["table_asset"]:
                assert len(instance.fetch_materializations(dg.AssetKey(asset), limit=10).records) >= 2
                continue
            materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
            assert set(DAYS) <= materialized, (asset, sorted(materialized))
