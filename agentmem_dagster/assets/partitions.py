"""The one partitioning of the pipeline: the UTC days that hold landing data.

A daily calendar would make a backfill over two years pay Dagster's bookkeeping for every
empty day (722 days x every asset, measured at 8-50 ms an event): the partitions are the
days that have landing files, registered as they are found (by `agentmem ingest`, the sensor
and the schedule), so a range covers only days with data and an empty day costs nothing.
Dynamic partitions keep the order they were registered in; `contiguous_runs` cuts a set of
days into the fewest ranges Dagster can run as one run each (one, unless an older day was
registered after newer ones)."""

import warnings
from collections.abc import Iterable, Sequence

import dagster as dg

PARTITIONS_NAME = "memory_days"

memory_days = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)

# A backfill over many days runs as one run over the range: per-run overhead is paid once.
# (`backfill_policy` is a Dagster beta parameter; its warning would repeat in every step.)
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
single_run_backfill = dg.BackfillPolicy.single_run()


def register_days(instance: dg.DagsterInstance, days: Iterable[str]) -> list[str]:
    """Add the days that are not partitions yet, oldest first; returns the days added."""
    known = set(instance.get_dynamic_partitions(PARTITIONS_NAME))
    new = sorted(set(days) - known)
    if new:
        instance.add_dynamic_partitions(PARTITIONS_NAME, new)
    return new


def contiguous_runs(keys: Sequence[str], days: Iterable[str]) -> list[list[str]]:
    """`days` cut into runs of consecutive partition keys (`keys`, in partition order)."""
    wanted = set(days)
    runs: list[list[str]] = []
    previous_wanted = False
    for key in keys:
        if key in wanted:
            if previous_wanted:
                runs[-1].append(key)
            else:
                runs.append([key])
        previous_wanted = key in wanted
    return runs


def run_tags(first: str, last: str) -> dict[str, str]:
    """The tags of a run over the partitions first..last."""
    if first == last:
        return {"dagster/partition": first}
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
