import pickle
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class StagingIOManager(dg.ConfigurableIOManager):
    """Keeps each partitioned asset as one Parquet file per day, so a run over a range of
    days writes and reads exactly those days; outputs of ops inside a graph are pickled
    per run. Assets handed to it must be Arrow tables with a `day` column."""

    base_dir: str

    def _asset_path(self, asset_key: dg.AssetKey, day: str) -> Path:
        return Path(self.base_dir, *asset_key.path, f"{day}.parquet")

    def _op_path(self, identifier) -> Path:
        return Path(self.base_dir, "runs", *identifier).with_suffix(".pickle")

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if obj is None:
            return
        if not context.has_asset_partitions:
            path = self._op_path(context.get_identifier())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
            return
        days = obj.column("day") if obj.num_rows else None
        for day in context.asset_partition_keys:
            path = self._asset_path(context.asset_key, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            part = obj.filter(pc.equal(days, day)) if days is not None else obj.slice(0, 0)
            tmp = path.with_suffix(".tmp")
            pq.write_table(part, tmp)
            tmp.replace(path)

    def load_input(self, context: dg.InputContext):
        if not context.has_asset_partitions:
            return pickle.loads(self._op_path(context.upstream_output.get_identifier()).read_bytes())
        parts = []
        for day in context.asset_partition_keys:
            path = self._asset_path(context.asset_key, day)
            if not path.exists():
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} has not been materialized for {day}"
                )
            parts.append(pq.read_table(path))
        return pa.concat_tables(parts) if parts else None


def drop_run_outputs(base_dir: str, run_id: str) -> None:
    """Delete the op outputs a finished run pickled (the assets' Parquet files stay)."""
    shutil.rmtree(Path(base_dir, "runs", run_id), ignore_errors=True)
