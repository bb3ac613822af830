"""Bulk write into a system of record: N chunks (one per memory) in batches, each batch one
transaction (`write`), then the day committed (`commit_days`); seconds and rows/s.

    python -m agentmem_dagster.engine.store_bench --url URL [--chunks 50000] [--batch 8192] [--rounds 3]

URL is any AGENTMEM_DATABASE_URL (a LibSQL file path, a postgresql:// URL); the store it names
should be empty (each round writes a new day and drops it again). Used for BENCHMARKS.md,
"Storage path": PostgreSQL (COPY) against LibSQL (bulk statement) on the same batches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pyarrow as pa

from .record_store import open_store
from .records import MEMORY_SCHEMA

WORDS = "the cat Miso likes tuna and naps by the window while the rain falls on the garden".split()


def batches(n: int, size: int, day: str) -> list[tuple[pa.Table, pa.Table]]:
    """`n` memories of ~150 bytes (one chunk each) on `day`, in batches of `size`."""
    out = []
    for start in range(0, n, size):
        ids = range(start, min(n, start + size))
        contents = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(25)) + f" #{i}" for i in ids]
        memories = pa.table({
            "memory_id": [f"m{i}" for i in ids], "user_id": [f"u{i % 50}" for i in ids],
            "agent_id": ["agent"] * len(ids), "session_id": [f"s{i % 200}" for i in ids], "role": ["user"] * len(ids),
            "content": contents, "created_at": [f"{day}T12:00:00.000000Z"] * len(ids),
            "created_at_us": [1717243200000000 + i for i in ids], "metadata": ['{"source": "bench"}'] * len(ids),
            "content_hash": [f"{i:064x}" for i in ids], "expires_at_us": pa.nulls(len(ids), pa.int64()),
            "day": [day] * len(ids), "source_file": ["bench.jsonl"] * len(ids), "source_line": [i + 1 for i in ids],
        }, schema=MEMORY_SCHEMA)
        chunks = pa.table({
            "chunk_id": [f"m{i}#0" for i in ids], "memory_id": [f"m{i}" for i in ids],
            "chunk_index": pa.array([0] * len(ids), pa.int32()), "chunk_count": pa.array([1] * len(ids), pa.int32()),
            "text": contents, "text_hash": [f"{i:064x}" for i in ids], "user_id": [f"u{i % 50}" for i in ids],
            "day": [day] * len(ids),
        })
        out.append((memories, chunks))
    return out


def run(url: str, chunks: int, batch: int, rounds: int) -> dict:
    store = open_store(url, pool_size=2)
    seconds = []
    try:
        for r in range(rounds):
            day = f"2024-06-{r + 1:02d}"
            work = batches(chunks, batch, day)
            started = time.perf_counter()
            for memories, part in work:
                store.write(memories, part, f"bench-{r}")
            store.commit_days([day], f"bench-{r}", [])
            seconds.append(time.perf_counter() - started)
            assert store.counts([day])["chunks"] == chunks
            store.drop_versions([day], [f"bench-{r}"])
    finally:
        store.close()
    median = statistics.median(seconds)
    return {
        "store": type(store).__name__, "chunks": chunks, "batch": batch, "rounds": [round(s, 3) for s in seconds],
        "seconds": round(median, 3), "chunks_per_s": round(chunks / median),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.url, args.chunks, args.batch, args.rounds)))


if __name__ == "__main__":
    main()
