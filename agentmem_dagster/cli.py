"""`agentmem`: ingest through Dagster, search, stats, and a demo landing zone."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import threading
import time
import uuid
from pathlib import Path

from .engine.errors import StoreUnavailable
from .engine.settings import Settings

RUN_TAG = "agentmem/invocation"
MODES = ("hybrid", "vector", "text")  # engine.search.MODES, without importing the engine here
WRITERS = {"lancedb_memories", "libsql_memories"}  # run in parallel: the slower one counts


def _day(value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {value!r}") from None


def _print_json(doc) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def _fail(message: str, code: int = 2) -> int:
    print(f"agentmem: {message}", file=sys.stderr)
    return code


def ingest_job():
    """The job, reconstructable by the run's step processes."""
    from .definitions import defs

    return defs.resolve_job_def("ingest_memories")


def _open_instance():
    """The Dagster instance, its SQLite storages created under a file lock: several
    `agentmem ingest` started at once on a fresh DAGSTER_HOME would race to create them."""
    import fcntl

    import dagster as dg

    lock_path = Path(os.environ["DAGSTER_HOME"], ".agentmem-init.lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.event_log_storage.get_maximum_record_id()
        return instance


def _ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, defaulting to $AGENTMEM_HOME/dagster, so runs are recorded for `dagster dev`."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster").absolute()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _days_to_ingest(args, settings: Settings) -> list[str]:
    from .assets.partitions import daily_partitions
    from .engine.records import landing_days

    valid = daily_partitions.get_partition_keys()
    if args.all:
        wanted = set(valid)
        days = [d for d in landing_days(settings.landing) if d in wanted]
        if not days:
            raise ValueError(f"no landing folders under {settings.landing} (try `agentmem demo`)")
        return days
    start, end = (args.partition, args.partition) if args.partition else (args.start, args.end)
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    days = [d for d in valid if start <= d <= end]
    if not days or days[0] != start or days[-1] != end:
        raise ValueError(
            f"days {start}..{end} are outside the partitions {valid[0]}..{valid[-1]} "
            "(AGENTMEM_PARTITIONS_START sets the first)"
        )
    return days


def _progress(instance, invocation: str, done: threading.Event, quiet: bool) -> None:
    """A progress bar on stderr: the run's steps as they finish."""
    from dagster import DagsterEventType, RunsFilter
    from tqdm import tqdm

    bar = tqdm(unit="step", desc="ingest", file=sys.stderr, disable=quiet)
    seen = 0
    while not done.wait(0.5):
        runs = instance.get_runs(filters=RunsFilter(tags={RUN_TAG: invocation}), limit=1)
        if not runs:
            continue
        records = instance.get_records_for_run(
            runs[0].run_id, of_type={DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
        ).records
        for record in records[seen:]:
            bar.set_postfix_str(record.event_log_entry.step_key or "")
            bar.update(1)
        seen = len(records)
    bar.close()


def _stage_metadata(result, name: str) -> dict[str, float]:
    """The number `name` that each asset (or check) reported in its metadata; a range reports
    once per day, the largest is kept."""
    out: dict[str, float] = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            data = event.event_specific_data.materialization
            key = data.asset_key.to_user_string()
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            key = data.check_name
        else:
            continue
        value = data.metadata.get(name)
        if value is not None:
            out[key] = max(out.get(key, 0.0), float(value.value))
    return out


def _step_failures(result) -> list[tuple[str, str]]:
    from .console import error_text

    return [
        (event.step_key, error_text(event.step_failure_data.error) if event.step_failure_data.error else "")
        for event in result.all_events
        if event.is_step_failure
    ]


def _event_counts(instance, run_id: str, landing) -> dict:
    """The run's Dagster event log records: `total`, `by_type`, and how many name a day with
    landing data, a day without, or no day (the run's and steps' own events)."""
    from collections import Counter

    from .engine.records import landing_days

    with_data = set(landing_days(landing))
    by_type, by_day = Counter(), Counter()
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        by_type[event.event_type_value if event else "LOG_MESSAGE"] += 1
        day = event.partition if event else None
        by_day["no_day" if day is None else "days_with_data" if day in with_data else "days_without_data"] += 1
    return {"total": by_type.total(), "by_type": dict(sorted(by_type.items())),
            **{key: by_day[key] for key in ("days_with_data", "days_without_data", "no_day")}}


def cmd_ingest(args) -> int:
    settings = Settings.from_env()
    try:
        days = _days_to_ingest(args, settings)
    except ValueError as exc:
        return _fail(str(exc))
    _ensure_dagster_home(settings)
    import dagster as dg

    from .engine.memory import MemoryEngine

    tags = {RUN_TAG: uuid.uuid4().hex}
    if len(days) == 1:
        tags["dagster/partition"] = days[0]
    else:
        tags["dagster/asset_partition_range_start"] = days[0]
        tags["dagster/asset_partition_range_end"] = days[-1]
    run_config = {"loggers": {"console": {"config": {"log_level": args.log_level}}}}
    started = time.perf_counter()
    with _open_instance() as instance:
        done = threading.Event()
        watcher = threading.Thread(target=_progress, args=(instance, tags[RUN_TAG], done, args.json), daemon=True)
        watcher.start()
        try:
            result = dg.execute_job(
                dg.reconstructable(ingest_job), instance=instance, tags=tags, run_config=run_config,
                raise_on_error=False,
            )
        finally:
            done.set()
            watcher.join()
        counting = time.perf_counter()
        events = _event_counts(instance, result.run_id, settings.landing) if args.json else None
        counting = time.perf_counter() - counting
    seconds = time.perf_counter() - started - counting  # without the counting of events
    if result.success:
        from .resources.staging import drop_run_outputs

        drop_run_outputs(str(settings.staging), result.run_id)
    failures = _step_failures(result)
    engine = MemoryEngine(settings)
    stage_seconds = _stage_metadata(result, "seconds")
    # peak memory of each step's process, and of this one (which runs Dagster's orchestration)
    peak_rss = _stage_metadata(result, "peak_rss_mb")
    peak_rss.update({f"{k} shards": v for k, v in _stage_metadata(result, "shard_peak_rss_mb").items()})
    try:
        stats = engine.stats(days)
    except StoreUnavailable:  # the stores the run could not use cannot be counted either
        if result.success:
            raise
        stats = dict.fromkeys(["memories", "quarantined", "chunks", "lancedb_rows", "libsql_rows", "consistent"])
    finally:
        engine.close()
    peak_rss["agentmem"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    doc = {
        "run_id": result.run_id,
        "status": "SUCCESS" if result.success else "FAILURE",
        "partitions": days,
        "memories": stats["memories"],
        "quarantined": stats["quarantined"],
        "chunks": stats["chunks"],
        "lancedb_rows": stats["lancedb_rows"],
        "libsql_rows": stats["libsql_rows"],
        "consistent": stats["consistent"],
        "seconds": round(seconds, 3),
        "memories_per_s": round((stats["memories"] or 0) / seconds, 1) if seconds else 0.0,
        # the engine's own time inside the run: the stages in sequence, the two writers in parallel
        "engine_seconds": round(
            sum(v for k, v in stage_seconds.items() if k not in WRITERS)
            + max([v for k, v in stage_seconds.items() if k in WRITERS], default=0.0),
            3,
        ),
        "stage_seconds": stage_seconds,
        "peak_rss_mb": peak_rss,
        "error": failures[0][1] if failures else None,
    }
    if events is not None:
        doc["events"] = {**events, "count_seconds": round(counting, 3)}
    if args.json:
        _print_json(doc)
    elif doc["memories"] is None:
        print(f"{doc['status']}: {len(days)} day(s) in {doc['seconds']}s; run {doc['run_id']}")
    else:
        print(
            f"{doc['status']}: {len(days)} day(s), {doc['memories']} memories, {doc['chunks']} chunks, "
            f"{doc['quarantined']} quarantined in {doc['seconds']}s ({doc['memories_per_s']} memories/s); "
            f"run {doc['run_id']}"
        )
    for step, text in failures:
        print(f"agentmem: step {step} failed: {text}", file=sys.stderr)
    return 0 if result.success else 1


def cmd_search(args) -> int:
    from .engine.memory import MemoryEngine
    from .engine.search import search

    engine = MemoryEngine.from_env()
    try:
        result = search(
            engine.embedder, engine.lance, engine.libsql, args.query,
            user_id=args.user, agent_id=args.agent, session_id=args.session,
            since=args.since, until=args.until, k=args.k, mode=args.mode,
        )
    except ValueError as exc:
        return _fail(str(exc))
    finally:
        engine.close()
    if args.json:
        _print_json([hit.to_json() for hit in result.hits])
        return 0
    if not result.hits:
        print("no memories found")
    for rank, hit in enumerate(result.hits, 1):
        text = hit.content if len(hit.content) <= 200 else hit.content[:199] + "…"
        print(f"{rank:>2}. {hit.score:.3f}  {hit.created_at}  [{hit.session_id or '-'}] {text}")
    return 0


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from .engine.evaluation import evaluate, read_questions
    from .engine.memory import MemoryEngine
    from .engine.search import search

    try:
        questions = read_questions(args.qa)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    engine = MemoryEngine.from_env()
    bar = tqdm(total=len(questions) * len(args.mode), unit="question", desc="eval", file=sys.stderr, disable=args.json)

    def ranked_ids(question: dict, mode: str) -> list[str]:
        bar.update(1)
        hits = search(
            engine.embedder, engine.lance, engine.libsql, question["question"],
            user_id=question["user_id"], k=args.k, mode=mode,
        ).hits
        return [hit.memory_id for hit in hits]

    try:
        results = {mode: evaluate(questions, lambda q, m=mode: ranked_ids(q, m)) for mode in args.mode}
    finally:
        bar.close()
        engine.close()
    # the first mode's figures at the top level (the contract's keys), every mode under "modes"
    doc = {**results[args.mode[0]], "k": args.k, "mode": args.mode[0], "modes": results}
    if args.json:
        _print_json(doc)
        return 0
    print(f"{doc['n']} questions from {args.qa}, top {args.k}")
    for mode, figures in results.items():
        print(f"  {mode:<7} " + "  ".join(f"{key} {figures[key]:.3f}" for key in ("hit@1", "hit@5", "hit@10", "mrr")))
        for name, cat in figures.get("categories", {}).items():
            print(f"    {name:<12} n={cat['n']:<4} hit@1 {cat['hit@1']:.3f}  hit@5 {cat['hit@5']:.3f}  mrr {cat['mrr']:.3f}")
    return 0


def cmd_stats(args) -> int:
    from .engine.memory import MemoryEngine

    engine = MemoryEngine.from_env()
    try:
        stats = engine.stats()
    finally:
        engine.close()
    if args.json:
        _print_json(stats)
    else:
        for key, value in stats.items():
            print(f"{key:>13}: {value}")
    return 0


def cmd_demo(args) -> int:
    from .engine.demo import demo_questions, write_demo_landing

    settings = Settings.from_env()
    summary = write_demo_landing(
        settings.landing, start=dt.date.fromisoformat(args.start), days=args.days, memories=args.memories, seed=args.seed
    )
    if args.memories >= 200:  # every planted fact is in the landing zone from 200 memories on
        qa = Path(args.qa or settings.home / "demo-qa.jsonl")
        qa.parent.mkdir(parents=True, exist_ok=True)
        qa.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in demo_questions(args.seed)), encoding="utf-8")
        summary["qa"] = str(qa)
    if args.json:
        _print_json(summary)
    else:
        print(
            f"wrote {summary['memories']} memories and {summary['bad_lines']} bad lines in "
            f"{summary['files']} files over {len(summary['days'])} days to {summary['landing']}\n"
            + (f"labelled questions about them: {summary['qa']}\n" if "qa" in summary else "")
            + "next: agentmem ingest --all"
            + (f", then agentmem eval --qa {summary['qa']}" if "qa" in summary else "")
        )
    return 0


def _peer_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - {"mem0", "chroma"})
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"peers are mem0 and chroma, not {', '.join(unknown) or repr(value)}")
    return list(dict.fromkeys(names))


def cmd_pipeline_bench(args) -> int:
    from .engine.pipeline_bench import BenchError, run_pipeline_bench

    try:
        doc = run_pipeline_bench(
            memories=args.memories or 5000, span_days=args.span_days, n_days=args.data_days, seed=args.seed,
            runs=args.runs, peers=args.peers or [], peers_dir=args.peers_dir and Path(args.peers_dir),
            work_dir=args.dir and Path(args.dir), progress=lambda line: print(f"bench: {line}", file=sys.stderr, flush=True),
        )
    except (ValueError, BenchError) as exc:
        return _fail(str(exc))
    doc["command"] = "agentmem " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("agentmem") else "agentmem bench --pipeline"
    if args.json:
        _print_json(doc)
        return 0
    m = doc["median"]
    print(f"model {doc['model']}: {doc['memories']} memories on {doc['days_with_data']} of {doc['span_days']} days; "
          f"medians of {doc['runs']} run(s), whole processes; {doc['machine']['cpus']} cpus: {doc['machine']['cpu']}")
    ing, small = m["ingest_all"], m["small_day"]
    print(f"  ingest --all      {ing['seconds']:>8.1f} s  {ing['memories_per_s']:>7.1f} memories/s  engine {ing['engine_seconds']:.1f} s  "
          f"events {ing['events'].get('total')} ({ing['events_per_data_day']} per day with data, {ing['events_per_empty_day']} per empty day)")
    print(f"  one small day     {small['seconds']:>8.1f} s  {small['events'].get('total')} events; {m['small_day_over_search']}x the search")
    print(f"  search            {m['search']['seconds']:>8.1f} s")
    alone = m["model_alone"]
    print(f"  model alone       {alone['seconds']:>8.1f} s  {alone['memories_per_s']:>7.1f} memories/s (embedding alone {alone['embed_seconds']:.2f} s)")
    for name, peer in m.get("peers", {}).items():
        print(f"  peer {name:<12} {peer['seconds']:>8.1f} s  {peer['memories_per_s']:>7.1f} memories/s")
    if "ingest_over_best_peer" in m:
        print(f"  ingest --all at {m['ingest_over_best_peer']}x the best peer ({doc['each_run'][0]['best_peer']})")
    return 0


def cmd_bench(args) -> int:
    if args.pipeline:
        return cmd_pipeline_bench(args)
    from tqdm import tqdm

    from .engine.bench import run_ladder
    from .engine.embedding import Embedder

    settings = Settings.from_env()
    model = args.model or settings.embed_model
    path = args.model_path if args.model_path is not None else (settings.embed_model_path if not args.model else None)
    embedder = Embedder(model, path or None, batch_size=args.embed_batch_size)
    bars = []

    def progress_factory(name: str, total: int):
        if bars:
            bars[-1].close()
        bar = tqdm(total=total, desc=name[:40], unit="mem", file=sys.stderr, leave=False)
        bars.append(bar)
        return bar.update

    doc = run_ladder(embedder, args.memories or 2000, args.batch_size, progress_factory, extras=not args.ladder_only)
    if bars:
        bars[-1].close()
    doc["command"] = "agentmem " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("agentmem") else "agentmem bench"
    if args.json:
        _print_json(doc)
        return 0
    print(f"model {doc['model']}, {doc['memories']} memories ({doc['chunks']} chunks), {doc['machine']['cpus']} cpus: {doc['machine']['cpu']}")
    for i, rung in enumerate(doc["rungs"], 1):
        print(f"  {i}. {rung['name']:<60} {rung['memories_per_s']:>9.1f} memories/s  peak {rung['peak_rss_mb']:.0f} MB")
    print(f"  embed-only ceiling {doc['ceiling_per_s']:.1f}/s; last rung {doc['share_of_ceiling']:.1%} of it, {doc['speedup']}x the first")
    if "storage_rows_per_s" in doc:
        storage = doc["storage"]
        print(
            f"  storage alone: {doc['storage_rows_per_s']:.0f} chunk rows/s into both stores "
            f"({storage['chunk_rows']} chunk rows; the ladder's {storage['ladder_chunk_rows']}: {storage['ladder_rows_per_s']:.0f}/s)"
        )
        by_day = storage["by_day_rows_per_s"]
        print(f"  day after day into the same stores: {' '.join(f'{rate:.0f}' for rate in by_day)} chunk rows/s")
        cached = doc["cached_reingest"]
        print(f"  re-ingest with warm cache: {cached['first_s']}s -> {cached['again_s']}s ({cached['speedup']}x)")
    return 0


def cmd_search_bench(args) -> int:
    import tempfile

    from tqdm import tqdm

    from .engine.embedding import Embedder
    from .engine.search_bench import run_search_bench

    settings = Settings.from_env()
    embedder = Embedder(settings.embed_model, settings.embed_model_path)
    bars = []

    def progress_factory(name: str, total: int):
        if bars:
            bars[-1].close()
        bars.append(tqdm(total=total, desc=name, unit="row" if name.startswith("build") else "query", file=sys.stderr, leave=False, disable=args.json))
        return bars[-1].update

    with tempfile.TemporaryDirectory(prefix="agentmem-search-bench-") as tmp:
        root = Path(args.dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        doc = run_search_bench(embedder, root, args.sizes, users=args.users, queries=args.queries, k=args.k, progress_factory=progress_factory)
    if bars:
        bars[-1].close()
    doc["command"] = "agentmem " + " ".join(sys.argv[1:])
    if args.json:
        _print_json(doc)
        return 0
    print(f"model {doc['model']}, {doc['queries']} scoped queries per mode, k={doc['k']}, {doc['machine']['cpus']} cpus: {doc['machine']['cpu']}")
    for size in doc["sizes"]:
        modes = "  ".join(f"{m} p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms" for m, v in size["modes"].items())
        print(f"  {size['chunks']:>9,} chunks, {size['users']} users: {modes}  (indexes: {', '.join(size['indexes'])})")
    return 0


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of row counts: {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentmem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="materialize the pipeline for some days, as one Dagster run")
    which = ingest.add_mutually_exclusive_group(required=True)
    which.add_argument("--partition", type=_day, help="one day, YYYY-MM-DD")
    which.add_argument("--from", dest="start", type=_day, help="first day of a range (with --to)")
    which.add_argument("--all", action="store_true", help="every day that has a landing folder")
    ingest.add_argument("--to", dest="end", type=_day, help="last day of a range")
    ingest.add_argument("--json", action="store_true")
    ingest.add_argument("--log-level", default="WARNING", help="Dagster log level on stderr (default WARNING)")
    ingest.set_defaults(func=cmd_ingest)

    search = sub.add_parser("search", help="search one user's memories")
    search.add_argument("query")
    search.add_argument("--user", required=True)
    search.add_argument("--agent")
    search.add_argument("--session")
    search.add_argument("--since", help="only memories created at or after this ISO-8601 time")
    search.add_argument("--until", help="only memories created before this ISO-8601 time")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--mode", choices=MODES, default="hybrid", help="default: hybrid (vector + full text, fused)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    evaluation = sub.add_parser("eval", help="retrieval quality on a labelled set of questions")
    evaluation.add_argument("--qa", required=True, help='JSON lines: {"user_id", "question", "evidence": [memory_id, ...], "category"?}')
    evaluation.add_argument("-k", type=int, default=10)
    evaluation.add_argument(
        "--mode", choices=MODES, action="append",
        help="search mode, repeatable to compare (default: hybrid); the first one's figures are the top-level keys",
    )
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(func=cmd_eval)

    stats = sub.add_parser("stats", help="totals over all days, and whether both stores agree")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)

    demo = sub.add_parser("demo", help="write a sample landing zone to ingest")
    demo.add_argument("--start", type=_day, default="2024-06-01")
    demo.add_argument("--days", type=int, default=14)
    demo.add_argument("--memories", type=int, default=400)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--qa", help="where to write the labelled questions (default: $AGENTMEM_HOME/demo-qa.jsonl)")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser(
        "bench", help="the throughput ladder: per-record to pipelined, with the embed-only ceiling; "
        "or (--pipeline) the whole commands against the peers"
    )
    bench.add_argument("--model", help="fastembed model name (default: AGENTMEM_EMBED_MODEL)")
    bench.add_argument("--model-path", help="local model directory (default: AGENTMEM_EMBED_MODEL_PATH)")
    bench.add_argument("--memories", type=int, help="default: 2000 (ladder), 5000 (--pipeline)")
    bench.add_argument("--batch-size", type=int, default=64, help="memories per batch in rungs 2 and 3")
    bench.add_argument("--embed-batch-size", type=int, help="texts per model call, length-sorted (default: best for the model)")
    bench.add_argument("--ladder-only", action="store_true", help="skip the storage-only and cached re-ingest figures")
    pipeline = bench.add_argument_group("--pipeline", "whole commands as separate processes, on a sparse history of its own")
    pipeline.add_argument("--pipeline", action="store_true", help="time `agentmem ingest --all`, one small day and a search, the model alone and the peers")
    pipeline.add_argument("--span-days", type=int, default=722, help="days from the history's first to its last (default 722)")
    pipeline.add_argument("--data-days", type=int, default=220, help="days of the span that hold memories (default 220)")
    pipeline.add_argument("--seed", type=int, default=0)
    pipeline.add_argument("--runs", type=int, default=3, help="rounds, each running every process once (default 3); medians reported")
    pipeline.add_argument(
        "--peers", nargs="?", const="mem0,chroma", type=_peer_names,
        help="also run the peers (default: mem0,chroma), each in a virtual environment of its own",
    )
    pipeline.add_argument("--peers-dir", help="where the peers' environments are made and kept (default: $AGENTMEM_HOME/../.peers, or ~/.cache/agentmem/peers)")
    pipeline.add_argument("--dir", help="work directory for the history and the stores (default: a temporary directory)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

    search_bench = sub.add_parser("search-bench", help="search latency (p50, p99) per mode as the chunk table grows")
    search_bench.add_argument("--sizes", type=_sizes, default=[10_000, 100_000, 1_000_000], help="chunk counts (default 10000,100000,1000000)")
    search_bench.add_argument("--users", type=int, default=100, help="users the corpus is spread over; each search is scoped to one")
    search_bench.add_argument("--queries", type=int, default=200, help="queries per mode and size")
    search_bench.add_argument("-k", type=int, default=10)
    search_bench.add_argument("--dir", help="keep the corpus here and reuse it on the next run (default: a temporary directory)")
    search_bench.add_argument("--json", action="store_true")
    search_bench.set_defaults(func=cmd_search_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "ingest" and args.start and not args.end:
        parser.error("--from needs --to")
    if args.command == "eval":
        args.mode = list(dict.fromkeys(args.mode or ["hybrid"]))
    try:
        return args.func(args)
    except StoreUnavailable as exc:
        return _fail(str(exc), 1)


if __name__ == "__main__":
    sys.exit(main())
