"""The project as Dagster users drive it: `dg` finds and loads the definitions, and the
instance that `agentmem` creates carries its configuration (no "No dagster instance
configuration file" warning, tick retention)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NO_INSTANCE_WARNING = "No dagster instance configuration file"


def _env(**extra: str) -> dict:
    env = os.environ.copy()
    env["VIRTUAL_ENV"] = str(BIN.parent)  # as after `source .venv/bin/activate`
    env.update(extra)
    return env


def _dg(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "dg"), *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"dg {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def test_dg_check_and_list_defs(agentmem_home):
    assert "All definitions loaded successfully." in _dg("check", "defs").stdout
    listed = json.loads(_dg("list", "defs", "--json").stdout)
    assets = {tuple(a["asset_key_parts"]): a for a in listed["assets"]}
    assert assets and {a["group_name"] for a in assets.values()} == {"memories", "lifecycle"}
    assert listed["asset_checks"] and listed["jobs"] and listed["schedules"]
    assert len(listed["sensors"]) >= 2
    # what `dg` loads is what workspace.yaml deployments load
    from agentmem_dagster.definitions import defs

    assert {key.path[-1] for key in defs().resolve_asset_graph().get_all_asset_keys()} == {
        key[-1] for key in assets
    }


def test_agentmem_writes_the_instance_configuration(tmp_path, agentmem_home, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME")  # the default: $AGENTMEM_HOME/dagster, created by agentmem
    proc = subprocess.run(
        [str(BIN / "agentmem"), "demo", "--days", "1", "--memories", "20", "--json"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    home = agentmem_home / "dagster"
    assert (home / "dagster.yaml").is_file()

    info = subprocess.run(
        [str(BIN / "dagster"), "instance", "info"],
        env=_env(DAGSTER_HOME=str(home)), capture_output=True, text=True, timeout=300,
    )
    assert info.returncode == 0, info.stderr
    assert NO_INSTANCE_WARNING not in info.stdout + info.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        sensor = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert sensor[TickStatus.SKIPPED] == 1 and sensor[TickStatus.SUCCESS] == 30
        assert instance.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.FAILURE] == 30
        assert instance.run_monitoring_enabled
        assert not instance.nux_enabled

    # without a file agentmem would write, Dagster warns: the check above can fail
    bare = tmp_path / "bare"
    bare.mkdir()
    info = subprocess.run(
        [str(BIN / "dagster"), "instance", "info"],
        env=_env(DAGSTER_HOME=str(bare)), capture_output=True, text=True, timeout=300,
    )
    assert NO_INSTANCE_WARNING in info.stdout + info.stderr


def test_an_existing_instance_configuration_is_kept(agentmem_home, monkeypatch):
    home = agentmem_home.parent / "dagster_home"  # DAGSTER_HOME set by the fixture, existing
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [str(BIN / "agentmem"), "demo", "--days", "1", "--memories", "20", "--json"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
