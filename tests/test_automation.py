"""The schedule and the sensor produce the run requests a user expects."""

import datetime as dt
import os
import time

import dagster as dg

from agentmem_dagster.automation import daily_ingest_schedule, landing_sensor
from agentmem_dagster.definitions import defs
from agentmem_dagster.resources import LandingZone

from .conftest import memory, write_landing


def test_schedule_requests_yesterday():
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2024, 6, 2, 0, 15, tzinfo=dt.UTC)
    )
    request = daily_ingest_schedule(context)
    assert request.partition_key == "2024-06-01"
    assert request.run_key == "scheduled:2024-06-01"
    assert daily_ingest_schedule.cron_schedule == "15 0 * * *"


def _evaluate(landing, cursor):
    context = dg.build_sensor_context(cursor=cursor, resources={"landing": LandingZone(path=str(landing))})
    result = landing_sensor(context)
    return [(r.partition_key, r.run_key) for r in result.run_requests], result.cursor


def test_sensor_requests_new_and_changed_days_once(tmp_path):
    landing = tmp_path / "landing"
    write_landing(landing, "2024-06-01", [memory("a", "u", "x", "2024-06-01")])
    write_landing(landing, "2024-06-02", [memory("b", "u", "y", "2024-06-02")])
    (landing / "not-a-day").mkdir()

    requests, cursor = _evaluate(landing, None)
    assert [day for day, _ in requests] == ["2024-06-01", "2024-06-02"]

    assert _evaluate(landing, cursor)[0] == []  # nothing new: no request

    # a late file for the first day: that day again, with a new run key
    late = write_landing(landing, "2024-06-01", [memory("c", "u", "z", "2024-06-01")], name="late.jsonl")
    again, cursor2 = _evaluate(landing, cursor)
    assert [day for day, _ in again] == ["2024-06-01"]
    assert again[0][1] != requests[0][1]

    # a file rewritten in place also counts as a change
    os.utime(late, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert [day for day, _ in _evaluate(landing, cursor2)[0]] == ["2024-06-01"]


def test_sensor_skips_days_outside_the_partitions(tmp_path):
    landing = tmp_path / "landing"
    write_landing(landing, "1999-01-01", [memory("a", "u", "x", "1999-01-01")])
    assert _evaluate(landing, None)[0] == []


def test_definitions_load_with_job_schedule_sensor_and_checks():
    job = defs.resolve_job_def("ingest_memories")
    assert {"write_lancedb", "write_libsql"} <= {node.name for node in job.graph.nodes_in_topological_order} | {
        n.name for node in job.graph.nodes for n in getattr(node.definition, "nodes", [])
    }
    assert defs.resolve_schedule_def("daily_ingest_schedule").job_name == "ingest_memories"
    assert defs.resolve_sensor_def("landing_sensor").job_name == "ingest_memories"
    assert defs.resolve_sensor_def("clean_staging") is not None
    check_keys = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert check_keys == {"stores_consistent", "vectors_sane"}
