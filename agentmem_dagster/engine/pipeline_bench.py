"""The orchestration benchmark: the product as a user runs it. A sparse multi-day history of
chat memories is written as landing files; then whole commands run as separate processes,
each timed from spawn to exit: `agentmem ingest --all` on fresh stores, one small new day on
those stores, `agentmem search` on them, the model alone on the same texts, and naive peers
(Mem0, Chroma: `agentmem_dagster/bench_peers/`, each in a virtual environment of its own)
on the same memories and model. Rounds interleave them; figures are medians over rounds."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .bench import machine

HISTORY_START = dt.date(2023, 1, 1)
SMALL_DAY_MEMORIES = 20
# Dialogue turns, as in the public history issue 13 was measured on (no long notes).
LONG_SHARE = 0.0
PEERS_DIR = Path(__file__).resolve().parent.parent / "bench_peers"
# Each peer's pinned packages; fastembed is pinned to the project's own version.
PEERS = {"mem0": ["mem0ai==2.2.1"], "chroma": ["chromadb==1.5.9"]}


class BenchError(RuntimeError):
    """A benchmark step failed: its one-line reason."""


def _demo():
    """The demo generator (its one import site here: the module is moving to a package)."""
    from .. import demo

    return demo


# --------------------------------------------------------------------------- the history


def data_days(span_days: int, n_days: int, seed: int) -> list[str]:
    """`n_days` days out of `span_days` from HISTORY_START, the first and last among them."""
    if not 2 <= n_days <= span_days:
        raise ValueError(f"--data-days must be between 2 and --span-days ({span_days}), not {n_days}")
    rng = random.Random(f"pipeline-bench-days-{seed}")
    offsets = sorted({0, span_days - 1, *rng.sample(range(1, span_days - 1), n_days - 2)})
    return [(HISTORY_START + dt.timedelta(days=k)).isoformat() for k in offsets]


def _records(n: int, seed: int, days: list[str]) -> list[dict]:
    """`n` chat memories of the demo generator, spread over `days` in order."""
    first = dt.date.fromisoformat(days[0])
    records = _demo().generate_memories(n, seed=seed, start=first, days=len(days), long_share=LONG_SHARE)
    for record in records:
        k = (dt.date.fromisoformat(record["created_at"][:10]) - first).days
        record["created_at"] = days[k] + record["created_at"][10:]
    return records


def write_landing(landing: Path, records: list[dict]) -> int:
    """`<landing>/<day>/<agent>.jsonl`, one line per record; returns the files written."""
    files: dict[tuple[str, str], list[str]] = {}
    for record in records:
        files.setdefault((record["created_at"][:10], record["agent_id"]), []).append(json.dumps(record, ensure_ascii=False))
    for (day, agent), lines in files.items():
        (landing / day).mkdir(parents=True, exist_ok=True)
        (landing / day / f"{agent}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(files)


def build_history(landing: Path, memories: int, span_days: int, n_days: int, seed: int) -> dict:
    """The history's landing files, the same for the same arguments."""
    if memories < n_days:
        raise ValueError(f"--memories ({memories}) must be at least --data-days ({n_days})")
    days = data_days(span_days, n_days, seed)
    records = _records(memories, seed, days)
    return {
        "memories": len(records), "days_with_data": len({r["created_at"][:10] for r in records}),
        "span_days": span_days, "first_day": days[0], "last_day": days[-1],
        "files": write_landing(landing, records),
    }


def small_day(history: dict, seed: int) -> tuple[str, list[dict]]:
    """The day after the history, with SMALL_DAY_MEMORIES memories of their own ids."""
    day = (dt.date.fromisoformat(history["last_day"]) + dt.timedelta(days=1)).isoformat()
    return day, _records(SMALL_DAY_MEMORIES, seed + 1, [day])


def search_question(seed: int) -> dict:
    """A labelled demo question (its user has memories in any history of 200 or more)."""
    return _demo().demo_questions(seed)[0]


# --------------------------------------------------------------------------- processes


def agentmem_argv() -> list[str]:
    """The `agentmem` command of this environment, as a user runs it."""
    script = Path(sys.executable).parent / "agentmem"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentmem_dagster.cli"]


def user_env(home: Path, landing: Path) -> dict[str, str]:
    """This environment (model variables included) with a fresh AGENTMEM_HOME and its own
    Dagster instance under it, as a new user's first `agentmem ingest` has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMEM_") or k.startswith("AGENTMEM_EMBED_")}
    env.pop("DAGSTER_HOME", None)
    env.update(AGENTMEM_HOME=str(home), AGENTMEM_LANDING=str(landing), HF_HUB_OFFLINE="1")
    return env


def timed(name: str, argv: list[str], env: dict[str, str], progress: Callable[[str], None]) -> tuple[float, object]:
    """Runs one process; its wall time from spawn to exit, and the JSON of its stdout's last
    document (the whole stdout, or its last line)."""
    progress(f"{name}: started")
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{name} failed (exit {proc.returncode}): {tail}")
    out = proc.stdout.strip()
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        try:
            doc = json.loads(out.splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise BenchError(f"{name} printed no JSON: {out[-200:]!r}") from None
    progress(f"{name}: finished in {seconds:.1f}s")
    return seconds, doc


def embed_alone_main(landing: str) -> None:
    """The model alone (`python -m agentmem_dagster.engine.pipeline_bench embed LANDING`): reads
    and chunks the landing files as the pipeline does, then embeds the chunks length-sorted in
    the best batches (engine.bench.embed_ceiling); prints the texts and the embedding seconds."""
    import pyarrow as pa

    from .bench import embed_ceiling
    from .chunking import chunk_memories
    from .embedding import Embedder
    from .records import landing_days, read_landing_day
    from .settings import Settings

    settings = Settings.from_env()
    embedder = Embedder(settings.embed_model, settings.embed_model_path)
    memories = pa.concat_tables(read_landing_day(landing, day).memories for day in landing_days(landing))
    chunks = chunk_memories(memories, embedder.tokenizer, embedder.max_tokens)
    embedder.embed(["warm up the model"])
    seconds = embed_ceiling(chunks, embedder)
    print(json.dumps({"memories": memories.num_rows, "texts": chunks.num_rows, "embed_seconds": round(seconds, 3)}))


# --------------------------------------------------------------------------- peers


def default_peers_dir() -> Path:
    home = os.environ.get("AGENTMEM_HOME")
    return Path(home).absolute().parent / ".peers" if home else Path.home() / ".cache" / "agentmem" / "peers"


def peer_python(name: str, peers_dir: Path, progress: Callable[[str], None]) -> Path:
    """The Python of the peer's own virtual environment, created on first use with its
    pinned packages and the project's fastembed version; reused while they are the same."""
    requirements = [*PEERS[name], f"fastembed=={importlib.metadata.version('fastembed')}"]
    venv = peers_dir / name
    marker = venv / "agentmem-requirements.txt"
    python = venv / "bin" / "python"
    if marker.exists() and marker.read_text().split() == requirements and python.exists():
        return python
    progress(f"peer {name}: creating {venv} with {' '.join(requirements)}")
    shutil.rmtree(venv, ignore_errors=True)
    for argv in ([sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", *requirements]):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"peer {name}: {' '.join(argv[:4])} failed: {tail}")
    marker.write_text("\n".join(requirements) + "\n")
    return python


# --------------------------------------------------------------------------- one round


def _ingest_figures(seconds: float, doc: dict, data_day_count: int, empty_day_count: int) -> dict:
    events = doc.get("events") or {}
    return {
        "seconds": round(seconds, 3),
        "memories": doc["memories"],
        "memories_per_s": round(doc["memories"] / seconds, 1),
        "engine_seconds": doc["engine_seconds"],
        "events": events,
        "events_per_data_day": round(events.get("days_with_data", 0) / max(data_day_count, 1), 1),
        "events_per_empty_day": round(events.get("days_without_data", 0) / empty_day_count, 2) if empty_day_count else None,
    }


def run_round(work: Path, landing: Path, history: dict, day: tuple[str, list[dict]], question: dict,
              peers: dict[str, Path], progress: Callable[[str], None]) -> dict:
    """(a) ingest --all on fresh stores, (b) one small new day on them, (c) a search on them,
    (d) the model alone on the history's texts, (e) each peer on the history."""
    cli = agentmem_argv()
    home = work / "home"
    shutil.rmtree(work, ignore_errors=True)
    round_landing = work / "landing"  # the history, plus the small day before (b)
    shutil.copytree(landing, round_landing)
    env = user_env(home, round_landing)
    empty_days = history["span_days"] - history["days_with_data"]
    out: dict = {}

    seconds, doc = timed("ingest --all", [*cli, "ingest", "--all", "--json"], env, progress)
    if doc["memories"] != history["memories"]:
        raise BenchError(f"ingest --all stored {doc['memories']} memories of {history['memories']}")
    out["ingest_all"] = _ingest_figures(seconds, doc, history["days_with_data"], empty_days)

    small, records = day
    write_landing(round_landing, records)
    seconds, doc = timed("ingest one small day", [*cli, "ingest", "--partition", small, "--json"], env, progress)
    out["small_day"] = _ingest_figures(seconds, doc, 1, 0)
    if doc["memories"] != len(records):
        raise BenchError(f"ingest --partition {small} stored {doc['memories']} memories of {len(records)}")

    seconds, hits = timed("search", [*cli, "search", question["question"], "--user", question["user_id"], "--json"], env, progress)
    out["search"] = {"seconds": round(seconds, 3), "hits": len(hits)}

    seconds, doc = timed("model alone", [sys.executable, "-m", __name__, "embed", str(landing)], env, progress)
    out["model_alone"] = {
        "seconds": round(seconds, 3), "memories_per_s": round(doc["memories"] / seconds, 1),
        "texts": doc["texts"], "embed_seconds": doc["embed_seconds"],
        "embed_memories_per_s": round(doc["memories"] / doc["embed_seconds"], 1),
    }

    for name, python in peers.items():
        store = work / f"peer-{name}"
        argv = [str(python), str(PEERS_DIR / f"{name}_peer.py"), str(landing), str(store)]
        seconds, doc = timed(f"peer {name}", argv, env, progress)
        if doc["stored"] != history["memories"]:
            raise BenchError(f"peer {name} stored {doc['stored']} memories of {history['memories']}")
        out.setdefault("peers", {})[name] = {**doc, "seconds": round(seconds, 3), "memories_per_s": round(doc["memories"] / seconds, 1)}

    out["small_day_over_search"] = round(out["small_day"]["seconds"] / out["search"]["seconds"], 2)
    if peers:
        best = max(out["peers"], key=lambda n: out["peers"][n]["memories_per_s"])
        out["best_peer"] = best
        out["ingest_over_best_peer"] = round(out["ingest_all"]["memories_per_s"] / out["peers"][best]["memories_per_s"], 3)
    out["ingest_over_model_alone"] = round(out["ingest_all"]["memories_per_s"] / out["model_alone"]["memories_per_s"], 3)
    return out


def _medians(runs: list[dict]) -> dict:
    """The median of every number found at the same place in each run."""
    first = runs[0]
    out = {}
    for key, value in first.items():
        values = [run.get(key) for run in runs]
        if isinstance(value, dict):
            out[key] = _medians(values)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and all(isinstance(v, (int, float)) for v in values):
            out[key] = round(statistics.median(values), 3)
        elif all(v == value for v in values):
            out[key] = value
    return out


def run_pipeline_bench(*, memories: int = 5000, span_days: int = 722, n_days: int = 220, seed: int = 0,
                       runs: int = 3, peers: list[str] = (), peers_dir: Path | None = None,
                       work_dir: Path | None = None, progress: Callable[[str], None] = lambda line: None) -> dict:
    if runs < 1:
        raise ValueError("--runs must be at least 1")
    question = search_question(seed)
    pythons = {name: peer_python(name, peers_dir or default_peers_dir(), progress) for name in peers}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="agentmem-pipeline-bench-") as tmp:
        root = Path(work_dir or tmp).absolute()
        landing = root / "history"
        shutil.rmtree(landing, ignore_errors=True)
        history = build_history(landing, memories, span_days, n_days, seed)
        progress(f"history: {history['memories']} memories on {history['days_with_data']} of {span_days} days")
        day = small_day(history, seed)
        rounds = []
        for r in range(runs):
            progress(f"round {r + 1} of {runs}")
            rounds.append(run_round(root / "round", landing, history, day, question, pythons, progress))
    return {
        "model": os.environ.get("AGENTMEM_EMBED_MODEL", "sentence-transformers/all-MiniLM-L6-v2"),
        **history,
        "seed": seed,
        "small_day": {"day": day[0], "memories": len(day[1])},
        "search": {"query": question["question"], "user": question["user_id"]},
        "peers": {name: PEERS[name] for name in peers},
        "runs": len(rounds),
        "median": _medians(rounds),
        "each_run": rounds,
        # other work on the machine slows every process alike, the ratios less than the seconds
        "machine": {**machine(), "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]}},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["embed"] and len(sys.argv) == 3:
        embed_alone_main(sys.argv[2])
    else:
        sys.exit("usage: python -m agentmem_dagster.engine.pipeline_bench embed LANDING")
