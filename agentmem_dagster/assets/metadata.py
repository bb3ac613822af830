import resource

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


def with_chars(table: pa.Table, column: str) -> pa.Table:
    """`table` with the length of `column` as `chars`: previews show no memory text, so that
    Dagster's records hold none that `forget` would have to chase."""
    import pyarrow.compute as pc

    return table.append_column("chars", pc.utf8_length(table[column]))
