import resource

import dagster as dg
import pyarrow as pa


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB (each step runs in its own
    process under the multiprocess executor; Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def preview(table: pa.Table, columns: list[str], rows: int = 5, width: int = 80) -> str:
    """A small markdown table of the first rows, cells cut to `width` characters."""
    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in head:
        cells = []
        for name in columns:
            text = str(row[name]).replace("\n", " ").replace("|", "\\|")
            cells.append(text if len(text) <= width else text[: width - 1] + "…")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_day_metadata(context, by_day: dict[str, dict], asset_key: str | None = None) -> None:
    """Metadata of each day's materialization (its row count, a preview), on top of the run's.

    What `context.add_asset_metadata(metadata, partition_key=day)` does, without reading every
    partition key of the instance again for each day to check that the day is in the run (30-40
    ms a day on this machine's SQLite storage, 9 s for 218 days): `by_day` holds only the run's
    days. Dagster's metadata accumulator is internal (dagster 1.13); test_pipeline checks that
    each day's materialization carries its own row count."""
    if isinstance(context, dg.AssetExecutionContext):
        context = context.op_execution_context
    step = context.get_step_execution_context()
    key = dg.AssetKey.from_coercible(asset_key) if asset_key else step.assets_def.key
    for day, metadata in by_day.items():
        step._metadata_accumulator = step._metadata_accumulator.with_additional_asset_metadata(
            asset_key=key, metadata=metadata, partition_key=day
        )


def with_chars(table: pa.Table, column: str) -> pa.Table:
    """`table` with the length of `column` as `chars`: previews show no memory text, so that
    Dagster's records hold none that `forget` would have to chase."""
    import pyarrow.compute as pc

    return table.append_column("chars", pc.utf8_length(table[column]))
