"""What deciding run retention costs as daily runs accumulate (BENCHMARKS.md, "Dagster's own cost").

Every `agentmem ingest` asks which finished runs may be pruned (`retention.prunable_runs`). A
daily schedule leaves one run per day that still holds its day's latest materializations, so
those runs are never pruned and every later ingest looks at them again. This builds a Dagster
home in which each of `--days` daily partitions of two assets was materialized by its own run
(plus one run per day that an older run superseded), then times the decision.

    python benchmarks/retention_cost.py --home /tmp/retention-home --days 365
"""


import argparse
import datetime as dt
import json
import os
import statistics
import time

import dagster as dg

from agentmem_dagster.retention import prunable_runs

days = dg.DailyPartitionsDefinition(start_date="2024-01-01")


@dg.asset(partitions_def=days)
def raw(context: dg.AssetExecutionContext) -> None:
    context.add_output_metadata({"dagster/row_count": 1})


@dg.asset(partitions_def=days, deps=[raw])
def stored(context: dg.AssetExecutionContext) -> None:
    context.add_output_metadata({"dagster/row_count": 1})


def build(instance: dg.DagsterInstance, n: int) -> None:
    keys = days.get_partition_keys(dt.datetime(2024, 1, 1) + dt.timedelta(days=n))[:n]
    for key in keys:
        for _ in range(2):  # the first run of the day is superseded by the second
            assert dg.materialize([raw, stored], partition_key=key, instance=instance).success


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.makedirs(args.home, exist_ok=True)
    with dg.DagsterInstance.from_config(args.home) as instance:
        if not instance.get_runs_count():
            started = time.perf_counter()
            build(instance, args.days)
            print(f"built {instance.get_runs_count()} runs in {time.perf_counter() - started:.0f} s")
        times, found = [], None
        for _ in range(args.repeat):
            started = time.perf_counter()
            found = prunable_runs(instance, keep_days=0)
            times.append(time.perf_counter() - started)
        print(json.dumps({
            "runs": instance.get_runs_count(), "prunable": len(found),
            "median_s": round(statistics.median(times), 3), "seconds": [round(t, 3) for t in times],
        }))


if __name__ == "__main__":
    main()
