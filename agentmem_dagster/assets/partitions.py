"""The one partitioning of the pipeline: a UTC day of landing files."""

import warnings

import dagster as dg

from ..engine.settings import Settings

# end_offset=1: today's folder can be ingested as its files arrive (the sensor does that);
# the schedule takes yesterday's, once it is complete.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().partitions_start, end_offset=1
)
# A backfill over many days runs as one run over the range: per-run overhead is paid once.
# (`backfill_policy` is a Dagster beta parameter; its warning would repeat in every step.)
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
single_run_backfill = dg.BackfillPolicy.single_run()
