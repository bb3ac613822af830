import shutil
from pathlib import Path

import dagster as dg

from ..engine import serial
from ..engine.objstore import ObjectPath, location
from ..engine.parquet import BATCH_ROWS, DayFiles, Location


def _under(base_dir: str, *parts: str) -> Location:
    root = location(base_dir)
    for part in parts:
        root = root / part
    return root


class Staging(dg.ConfigurableResource):
    """Where the steps write their Parquet files, batch by batch: one file per partitioned
    asset and day, and a directory per run for the files of ops inside a graph. The batch
    (row group) size is set once, by raw_memories: later steps keep its batches. `base_dir`
    is a local directory or an `s3://bucket/prefix` (AGENTMEM_STAGING_URI), which steps on
    other machines reach too."""

    base_dir: str
    batch_rows: int = BATCH_ROWS  # memories per batch; a step's memory is bounded by it

    def day_files(self, asset_key: dg.AssetKey, days) -> DayFiles:
        return DayFiles({day: _under(self.base_dir, *asset_key.path, f"{day}.parquet") for day in days})

    def run_dir(self, run_id: str) -> Location:
        return _under(self.base_dir, "runs", run_id)

    @property
    def root(self) -> Location:
        return location(self.base_dir)


class StagingIOManager(dg.ConfigurableIOManager):
    """Hands a partitioned asset's days to the next step as a lazy `DayFiles` (never a table
    in memory): the asset has already written them with `Staging.day_files`. Outputs of ops
    inside a graph (small descriptions of shards) are kept as JSON per run (engine.serial:
    reading them back runs no code, unlike pickle)."""

    base_dir: str

    @property
    def staging(self) -> Staging:
        return Staging(base_dir=self.base_dir)

    def _op_path(self, identifier) -> Location:
        return _under(self.base_dir, "runs", *identifier).with_suffix(".json")

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        if not context.has_asset_partitions:
            path = self._op_path(context.get_identifier())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(serial.dumps(obj), encoding="utf-8")
            return
        expected = self.staging.day_files(context.asset_key, context.asset_partition_keys)
        if obj != expected or not all(path.exists() for path in expected.paths.values()):
            raise TypeError(
                f"{context.asset_key.to_user_string()} must return the DayFiles it wrote with "
                f"Staging.day_files, got {obj!r}"
            )

    def load_input(self, context: dg.InputContext):
        if not context.has_asset_partitions:
            return serial.loads(self._op_path(context.upstream_output.get_identifier()).read_text(encoding="utf-8"))
        files = self.staging.day_files(context.asset_key, context.asset_partition_keys)
        for day, path in files.paths.items():
            if not path.exists():
                raise FileNotFoundError(f"{context.asset_key.to_user_string()} has not been materialized for {day}")
        return files


def drop_run_outputs(base_dir: str, run_id: str) -> None:
    """Delete the op outputs a finished run wrote (the assets' Parquet files stay)."""
    outputs = _under(base_dir, "runs", run_id)
    if isinstance(outputs, ObjectPath):
        outputs.remove_tree()
    else:
        shutil.rmtree(Path(outputs), ignore_errors=True)
