"""Checks before a run writes anything: the model loads, both stores open and take writes, and
their disks have room for what the run will write. A run that cannot finish for one of these
reasons fails here, naming the setting to change, and leaves the stores as they were."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .embedding import Embedder
from .errors import StoreUnavailable, existing_dir, local_path
from .lance_store import LanceStore
from .record_store import SystemOfRecord
from .writer import RetryPolicy


def bytes_needed(memories, dim: int) -> dict[str, int]:
    """About what ingesting `memories` (a table, or staged DayFiles read batch by batch) writes
    to each place, half as much again as measured (1,000 demo memories, 1,223 chunks of 256-d
    vectors: LanceDB 1.6 MB, LibSQL 6.7 MB of which 5.1 MB is the embedding cache, staging
    2.5 MB plus the run's shards)."""
    rows = text = 0
    for batch in memories.batches(["content"]) if hasattr(memories, "batches") else [memories]:
        rows += batch.num_rows
        text += pc.sum(pc.binary_length(batch["content"].cast(pa.binary()))).as_py() or 0
    chunks = rows + text // 1000  # a chunk holds up to ~1,000 characters
    vectors = chunks * dim * 4
    needed = {
        "lancedb": vectors + text + 200 * chunks,
        "libsql": 5 * vectors + 3 * text + 600 * rows,  # cached vectors overflow their pages
        "staging": 3 * vectors + 3 * text,
    }
    return {place: int(1.5 * n) for place, n in needed.items()}


def check_space(needed: dict[str, int], places: dict[str, tuple[str, str]]) -> None:
    """Fail when a disk has less free space than the run needs on it. `places` maps each key of
    `needed` to (location, setting); server and object-store URIs are not checked."""
    disks: dict[int, tuple[Path, list[int], list[str]]] = {}
    for name, (location, setting) in places.items():
        path = local_path(location)
        if path is None:
            continue
        directory = existing_dir(path)
        disk = disks.setdefault(os.stat(directory).st_dev, (directory, [0], []))
        disk[1][0] += needed[name]
        disk[2].append(setting)
    for directory, (need,), settings in disks.values():
        free = shutil.disk_usage(directory).free
        if free < need:
            raise StoreUnavailable(
                f"the disk of {directory} has no space left for this run ({free / 1e6:.1f} MB free, about "
                f"{need / 1e6:.1f} MB needed): free space there, or set {' / '.join(dict.fromkeys(settings))} "
                "to a disk with room."
            )


def preflight(
    embedder: Embedder,
    lance: LanceStore,
    libsql: SystemOfRecord,
    *,
    memories=None,
    staging: Path | None = None,
    retry: RetryPolicy | None = None,
) -> None:
    """Raise StoreUnavailable unless the model and both stores can take the run's writes."""
    dim = embedder.dim  # loads the model
    lance.probe()
    (retry or RetryPolicy()).call(libsql.probe, "opening a write transaction on the system of record")
    if memories is not None:
        places = {"lancedb": (lance.uri, "AGENTMEM_LANCEDB_URI"), "libsql": (libsql.url, "AGENTMEM_DATABASE_URL")}
        if staging is not None:
            places["staging"] = (str(staging), "AGENTMEM_HOME")
        check_space(bytes_needed(memories, dim), places)
