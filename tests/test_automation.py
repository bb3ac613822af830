"""The schedule and the sensor produce the run requests a user expects."""

import datetime as dt
import os
import time

import dagster as dg

from agentmem_dagster.assets.partitions import PARTITIONS_NAME
from agentmem_dagster.automation import daily_ingest_schedule, landing_sensor
from agentmem_dagster.definitions import defs as load_defs
from agentmem_dagster.resources import LandingZone

from .conftest import memory, write_landing


def _schedule(landing, instance, day: dt.datetime):
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=day, resources={"landing": LandingZone(path=str(landing))}
    )
    return daily_ingest_schedule(context)


def test_schedule_requests_yesterday_when_it_has_landing_files(tmp_path):
    with dg.instance_for_test() as instance:
        _schedule_with(tmp_path / "landing", instance)


def _schedule_with(landing, instance):
    skipped = _schedule(landing, instance, dt.datetime(2024, 6, 2, 0, 15, tzinfo=dt.timezone.utc))
    assert isinstance(skipped, dg.SkipReason) and "2024-06-01" in skipped.skip_message
    assert instance.get_dynamic_partitions(PARTITIONS_NAME) == []  # an empty day costs nothing

    write_landing(landing, "2024-06-01", [memory("a", "u", "x", "2024-06-01")])
    request = _schedule(landing, instance, dt.datetime(2024, 6, 2, 0, 15, tzinfo=dt.timezone.utc))
    assert request.partition_key == "2024-06-01"
    assert request.run_key == "scheduled:2024-06-01"
    assert request.run_config["execution"]["config"]["in_process"] is True  # a small day: one process
    assert instance.get_dynamic_partitions(PARTITIONS_NAME) == ["2024-06-01"]
    assert daily_ingest_schedule.cron_schedule == "15 0 * * *"


def _evaluate(landing, cursor, instance=None):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"landing": LandingZone(path=str(landing))},
        instance=instance or dg.DagsterInstance.ephemeral(),
    )
    result = landing_sensor(context)
    return [(r.partition_key, r.run_key) for r in result.run_requests], result.cursor


def test_sensor_requests_new_and_changed_days_once(tmp_path):
    landing = tmp_path / "landing"
    write_landing(landing, "2024-06-01", [memory("a", "u", "x", "2024-06-01")])
    write_landing(landing, "2024-06-02", [memory("b", "u", "y", "2024-06-02")])
    (landing / "not-a-day").mkdir()

    requests, cursor = _evaluate(landing, None)
    assert [day for day, _ in requests] == ["2024-06-01", "2024-06-02"]
    context = dg.build_sensor_context(
        resources={"landing": LandingZone(path=str(landing))}, instance=dg.DagsterInstance.ephemeral()
    )
    added = landing_sensor(context).dynamic_partitions_requests
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in added] == [
        (PARTITIONS_NAME, ["2024-06-01", "2024-06-02"])  # the new days become partitions
    ]

    assert _evaluate(landing, cursor)[0] == []  # nothing new: no request

    # a late file for the first day: that day again, with a new run key
    late = write_landing(landing, "2024-06-01", [memory("c", "u", "z", "2024-06-01")], name="late.jsonl")
    again, cursor2 = _evaluate(landing, cursor)
    assert [day for day, _ in again] == ["2024-06-01"]
    assert again[0][1] != requests[0][1]

    # a file rewritten in place also counts as a change
    os.utime(late, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert [day for day, _ in _evaluate(landing, cursor2)[0]] == ["2024-06-01"]


def test_sensor_skips_days_before_the_first_partition(tmp_path):
    landing = tmp_path / "landing"
    write_landing(landing, "1999-01-01", [memory("a", "u", "x", "1999-01-01")])
    assert _evaluate(landing, None)[0] == []


def test_definitions_load_with_job_schedule_sensor_and_checks():
    defs = load_defs()
    job = defs.resolve_job_def("ingest_memories")
    assert {"write_lancedb", "write_libsql"} <= {node.name for node in job.graph.nodes_in_topological_order} | {
        n.name for node in job.graph.nodes for n in getattr(node.definition, "nodes", [])
    }
    assert defs.resolve_schedule_def("daily_ingest_schedule").job_name == "ingest_memories"
    assert defs.resolve_sensor_def("landing_sensor").job_name == "ingest_memories"
    assert defs.resolve_sensor_def("clean_staging") is not None
    check_keys = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert check_keys == {"stores_consistent", "vectors_sane"}
