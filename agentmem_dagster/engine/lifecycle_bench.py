"""The cost of `forget`: one user's memories erased from a large store (BENCHMARKS.md).

    python -m agentmem_dagster.engine.lifecycle_bench build --dir D --chunks 1000000
    agentmem forget --user forget-me --json        # with AGENTMEM_HOME=D, timed from outside

`build` fills D (LanceDB and LibSQL, as the embedded default lays them out) with `chunks`
one-chunk chat turns over ten days and 1,000 users, plus 1,000 memories of the user
`forget-me`, embedded with the configured model (the cache filled as ingestion fills it),
and builds the search indexes. `sizes` prints the bytes of each store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .bench import bench_memories
from .embedding import Embedder
from .ingest import ingest
from .lance_store import LanceStore
from .record_store import open_store
from .settings import Settings

TARGET = "forget-me"


def build(root: Path, chunks: int, days: int = 10, users: int = 1000, target_memories: int = 1000) -> dict:
    settings = Settings.from_env({"AGENTMEM_HOME": str(root), **{k: v for k, v in os.environ.items() if k.startswith("AGENTMEM_EMBED")}})
    embedder = Embedder(settings.embed_model, settings.embed_model_path)
    lance = LanceStore(settings.lancedb_uri, model=embedder.identity)
    libsql = open_store(settings.database_url, auth_token=settings.database_auth_token)
    start = dt.date(2024, 1, 1)
    per_day = chunks // days
    started = time.perf_counter()
    for d in range(days):
        day = (start + dt.timedelta(days=d)).isoformat()
        memories = bench_memories(per_day, seed=d, users=users, day=day, prefix=f"d{d}")
        if d == 0:  # the user to forget: 1,000 of the first day's memories become theirs
            user = pc.if_else(pc.less(pa.array(range(per_day)), target_memories), TARGET, memories["user_id"])
            memories = memories.set_column(memories.schema.get_field_index("user_id"), "user_id", user)
        ingest(memories, embedder=embedder, lance=lance, libsql=libsql, days=[day])
        print(f"day {d + 1}/{days}: {per_day} memories, {time.perf_counter() - started:.0f}s", file=sys.stderr)
    indexed = time.perf_counter()
    report = lance.maintain()
    print(f"indexes in {time.perf_counter() - indexed:.0f}s", file=sys.stderr)
    out = {"chunks": lance.count(), "build_seconds": round(time.perf_counter() - started, 1),
           "index_seconds": round(time.perf_counter() - indexed, 1), "indexes": sorted(report["indexes"])}
    libsql.close()
    return out


def sizes(root: Path) -> dict:
    def total(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else (path.stat().st_size if path.exists() else 0)

    return {"lancedb_bytes": total(root / "lancedb"), "libsql_bytes": total(root / "memories.db") + total(root / "memories.db-wal")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lifecycle_bench")
    parser.add_argument("what", choices=["build", "sizes"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--chunks", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    root = Path(args.dir)
    doc = build(root, args.chunks) if args.what == "build" else {}
    doc.update(sizes(root))
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
