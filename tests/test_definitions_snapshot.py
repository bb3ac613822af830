"""The code location as a user sees it in the UI: every asset spec, check, job, schedule and
sensor, compared with a snapshot kept in the repository. A change to any of them shows here
as a diff; after a change made on purpose, regenerate with AGENTMEM_UPDATE_SNAPSHOT=1."""

import json
import os
from pathlib import Path

from agentmem_dagster.definitions import build_definitions

SNAPSHOT = Path(__file__).with_name("snapshots") / "definitions.json"


def _partitions(definition) -> str | None:
    if definition is None:
        return None
    return f"{type(definition).__name__}:{getattr(definition, 'name', '')}"


def _names(definitions) -> list[str]:
    return sorted(d.name for d in definitions)


def describe() -> dict:
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "deps": sorted(dep.to_user_string() for dep in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "description": bool(node.description),
        }
    checks = sorted(f"{key.asset_key.to_user_string()}:{key.name}" for key in graph.asset_check_keys)
    jobs = {job.name: sorted(node.name for node in job.graph.nodes) for job in defs.resolve_all_job_defs()
            if not job.name.startswith("__")}
    schedules = {s.name: {"cron": s.cron_schedule, "job": s.job_name} for s in map(defs.resolve_schedule_def, _names(defs.schedules))}
    sensors = {s.name: {"jobs": sorted(j.name for j in s.jobs) if s.has_jobs else []} for s in map(defs.resolve_sensor_def, _names(defs.sensors))}
    return {"assets": assets, "checks": checks, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def test_definitions_match_their_snapshot():
    got = describe()
    if os.environ.get("AGENTMEM_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert got == json.loads(SNAPSHOT.read_text(encoding="utf-8"))
