"""Append throughput of LanceStore.write: a local directory against SeaweedFS on 127.0.0.1.

    .venv/bin/python benchmarks/s3_append.py [--rows 50000] [--batch 8192] [--dim 256]

Starts SeaweedFS with tests/s3server.py in a temporary directory (and stops it), appends
`--rows` chunk rows with random vectors in batches of `--batch` (the pipeline's batch) to a
fresh table in each place, and prints one JSON document: rows/s and seconds for each."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentmem_dagster.engine.chunking import CHUNK_SCHEMA  # noqa: E402
from agentmem_dagster.engine.lance_store import LanceStore  # noqa: E402
from tests import s3server  # noqa: E402


def batch(start: int, n: int, dim: int, rng) -> pa.Table:
    ids = [f"m{i}#0" for i in range(start, start + n)]
    columns = {
        "chunk_id": ids, "memory_id": [i[:-2] for i in ids], "chunk_index": [0] * n,
        "text": [f"memory {i}: the invoices service moves to the new cluster next week" for i in range(start, start + n)],
        "user_id": [f"u{i % 50}" for i in range(start, start + n)], "agent_id": ["a"] * n, "session_id": ["s"] * n,
        "role": ["user"] * n, "created_at": ["2024-06-01T12:00:00Z"] * n, "created_at_us": [0] * n,
        "day": ["2024-06-01"] * n,
    }
    table = pa.table({k: pa.array(v, CHUNK_SCHEMA.field(k).type) for k, v in columns.items()})
    vectors = rng.random((n, dim), dtype=np.float32)
    return table.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim))


def append(uri: str, batches: list[pa.Table]) -> dict:
    store = LanceStore(uri)
    store.probe()  # connection (and, on s3, the conditional-PUT probe) outside the timing
    started = time.perf_counter()
    for b in batches:
        store.write(b, "bench")
    seconds = time.perf_counter() - started
    rows = sum(b.num_rows for b in batches)
    assert store.count() == rows
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batches = [batch(s, min(args.batch, args.rows - s), args.dim, rng) for s in range(0, args.rows, args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        server = s3server.start(Path(tmp, "seaweedfs"))
        try:
            os.environ.update(server.env())
            local = append(str(Path(tmp, "lance")), batches)
            s3 = append(f"s3://{server.bucket}/bench", batches)
        finally:
            server.stop()
    print(json.dumps({"local": local, "seaweedfs": s3, "batch_rows": args.batch, "dim": args.dim}))


if __name__ == "__main__":
    main()
