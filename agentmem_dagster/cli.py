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
from .engine.record_store import BadDatabaseUrl
from .engine.settings import Settings

RUN_TAG = "agentmem/invocation"
MODES = ("hybrid", "vector", "text")  # engine.search.MODES, without importing the engine here
WRITERS = {"lancedb_memories", "libsql_memories"}  # run in parallel: the slower one counts


def _day(value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {value!r}") from None


class UsageError(Exception):
    """A setting or argument the command cannot use: one line on stderr, exit 2."""


def _print_json(doc) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


def _fail(message: str, code: int = 2) -> int:
    print(f"agentmem: {message}", file=sys.stderr)
    return code


def ingest_job():
    """The job, reconstructable by the run's step processes."""
    from .definitions import build_definitions

    return build_definitions().resolve_job_def("ingest_memories")


def _open_instance():
    """The Dagster instance, its SQLite storages created under a file lock: several
    `agentmem ingest` started at once on a fresh DAGSTER_HOME would race to create them."""
    import fcntl

    import dagster as dg

    from .instance import enable_event_batches

    enable_event_batches()
    lock_path = Path(os.environ["DAGSTER_HOME"], ".agentmem-init.lock")
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.event_log_storage.get_maximum_record_id()
        return instance


def _ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, defaulting to $AGENTMEM_HOME/dagster, so runs are recorded for `dg dev`.

    A home created here, or the default one, gets the package's instance configuration
    (`agentmem_dagster/dagster.yaml`) when it has none; an existing file is never touched."""
    from .instance import write_instance_config

    configured = os.environ.get("DAGSTER_HOME")
    default = (settings.home / "dagster").absolute()
    home = Path(configured).absolute() if configured else default
    created = not home.exists()
    try:
        home.mkdir(parents=True, exist_ok=True)
        if created or home == default:
            write_instance_config(home)
    except OSError as exc:
        raise UsageError(f"DAGSTER_HOME {home} cannot be created ({exc.strerror or exc}): set DAGSTER_HOME (or AGENTMEM_HOME) to a writable directory") from None
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _check_days(args, settings: Settings) -> None:
    """Refuse days outside AGENTMEM_PARTITIONS_START..tomorrow, before anything is opened."""
    if args.all:
        return
    start, end = (args.partition, args.partition) if args.partition else (args.start, args.end)
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    last = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)).isoformat()
    if start < settings.partitions_start or end > last:
        raise ValueError(
            f"days {start}..{end} are outside {settings.partitions_start}..{last} "
            "(AGENTMEM_PARTITIONS_START sets the first)"
        )


def _days_to_ingest(args, settings: Settings, instance) -> list[str]:
    """The days asked for: every landing day (--all), one day, or the days of a range that
    have landing files or were ingested before (a day whose files are gone is emptied)."""
    from .assets.partitions import PARTITIONS_NAME
    from .engine.records import landing_days

    if args.all:
        days = [d for d in landing_days(settings.landing) if d >= settings.partitions_start]
        if not days:
            raise ValueError(f"no landing folders under {settings.landing} (try `agentmem demo`)")
        return days
    if args.partition:
        return [args.partition]
    known = set(landing_days(settings.landing)) | set(instance.get_dynamic_partitions(PARTITIONS_NAME))
    days = sorted(d for d in known if args.start <= d <= args.end)
    if not days:
        raise ValueError(f"no landing folders between {args.start} and {args.end} under {settings.landing}")
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
    """(where, why) of each failure: a step's, or the run's resources' (set up once for a run
    in one process, before its first step)."""
    from .console import error_text

    failures = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
        elif event.is_resource_init_failure:
            error = event.engine_event_data.error
        else:
            continue
        where = f"step {event.step_key}" if event.step_key else "resource setup"
        failures.append((where, error_text(error) if error else ""))
    return failures


def _execute(instance, plan, args):
    """One Dagster run of the plan, with a progress bar on stderr."""
    import dagster as dg

    tags = {RUN_TAG: uuid.uuid4().hex, **plan.tags}
    run_config = {**plan.run_config, "loggers": {"console": {"config": {"log_level": args.log_level}}}}
    done = threading.Event()
    watcher = threading.Thread(target=_progress, args=(instance, tags[RUN_TAG], done, args.json), daemon=True)
    watcher.start()
    try:
        return dg.execute_job(
            dg.reconstructable(ingest_job), instance=instance, tags=tags, run_config=run_config, raise_on_error=False
        )
    finally:
        done.set()
        watcher.join()


def _store_stats(settings: Settings, days: list[str], success: bool) -> dict:
    from .engine.memory import MemoryEngine

    engine = MemoryEngine(settings)
    try:
        return engine.stats(days)
    except StoreUnavailable:  # the stores the run could not use cannot be counted either
        if success:
            raise
        return dict.fromkeys(["memories", "quarantined", "chunks", "lancedb_rows", "libsql_rows", "consistent"])
    finally:
        engine.close()


def _events_written(instance, run_ids: list[str], landing) -> dict:
    """What the runs wrote to Dagster's event log: `total`, `by_type`, and how many name a day
    with landing data, a day without, or no day (the run's and steps' own events)."""
    from collections import Counter

    from .engine.records import landing_days
    from .workers import workers_of

    with_data = set(landing_days(landing))
    by_type, by_day = Counter(), Counter()
    steps = []
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            by_type[event.event_type_value if event else "LOG_MESSAGE"] += 1
            day = event.partition if event else None
            by_day["no_day" if day is None else "days_with_data" if day in with_data else "days_without_data"] += 1
            if event is not None:
                steps.append(event)
    return {"total": by_type.total(), "by_type": dict(sorted(by_type.items())),
            **{key: by_day[key] for key in ("days_with_data", "days_without_data", "no_day")},
            "workers": workers_of(steps)}


def _executor_of(run_config: dict) -> str:
    """in_process, multiprocess, or celery (whose run config has no in_process switch)."""
    from .definitions import executor_kind

    config = (run_config.get("execution") or {}).get("config") or {}
    if "in_process" not in config:
        return "celery" if executor_kind() == "celery" else "multiprocess"  # the switch's default: False
    return "in_process" if config["in_process"] else "multiprocess"


def _ingest_report(results: list, days: list[str], seconds: float, stats: dict, events: dict) -> dict:
    success = all(result.success for result in results)
    failures = [failure for result in results for failure in _step_failures(result)]
    stage_seconds: dict[str, float] = {}
    peak_rss: dict[str, float] = {}
    for result in results:
        for stage, value in _stage_metadata(result, "seconds").items():
            stage_seconds[stage] = round(stage_seconds.get(stage, 0.0) + value, 3)
        # peak memory of each step's process, and of this one (which runs Dagster's orchestration)
        peak_rss.update(_stage_metadata(result, "peak_rss_mb"))
        peak_rss.update({f"{k} shards": v for k, v in _stage_metadata(result, "shard_peak_rss_mb").items()})
    peak_rss["agentmem"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    executors = {_executor_of(result.dagster_run.run_config) for result in results}
    in_process = executors == {"in_process"}
    writers = [v for k, v in stage_seconds.items() if k in WRITERS]
    return {
        "run_id": results[-1].run_id,
        "run_ids": [result.run_id for result in results],
        "status": "SUCCESS" if success else "FAILURE",
        "partitions": days,
        **{key: stats[key] for key in ("memories", "quarantined", "chunks", "lancedb_rows", "libsql_rows", "consistent")},
        "seconds": round(seconds, 3),
        "memories_per_s": round((stats["memories"] or 0) / seconds, 1) if seconds else 0.0,
        # the engine's own time inside the run: the stages in sequence, the two writers side by
        # side under the multiprocess executor
        "engine_seconds": round(
            sum(v for k, v in stage_seconds.items() if k not in WRITERS) + (sum(writers) if in_process else max(writers, default=0.0)),
            3,
        ),
        "stage_seconds": stage_seconds,
        "peak_rss_mb": peak_rss,
        "events": {key: value for key, value in events.items() if key != "workers"},
        "executor": "celery" if "celery" in executors else "in_process" if in_process else "multiprocess",
        # the distinct processes (host, pid; a cluster worker's name) that ran the runs' steps
        "workers": events["workers"],
        "error": failures[0][1] if failures else None,
    }


def cmd_ingest(args) -> int:
    from .definitions import build_executor
    from .retention import keep_days_from_env, prune_runs
    from .runs import plan_runs

    settings = Settings.from_env()
    try:
        _check_days(args, settings)
        keep_days = keep_days_from_env()
        build_executor()  # AGENTMEM_EXECUTOR and what it needs, checked before Dagster is opened
    except ValueError as exc:
        return _fail(str(exc))
    _ensure_dagster_home(settings)

    started = time.perf_counter()
    with _open_instance() as instance:
        try:
            days = _days_to_ingest(args, settings, instance)
        except ValueError as exc:
            return _fail(str(exc))
        results = []
        for plan in plan_runs(instance, settings.landing, days):
            results.append(_execute(instance, plan, args))
            if not results[-1].success:
                break
        seconds = time.perf_counter() - started
        events = _events_written(instance, [result.run_id for result in results], settings.landing)
        pruned = prune_runs(instance, keep_days, settings.staging)  # the Dagster home stays bounded
    success = all(result.success for result in results)
    if success:
        from .resources.staging import drop_run_outputs

        for result in results:
            drop_run_outputs(str(settings.staging), result.run_id)
    doc = _ingest_report(results, days, seconds, _store_stats(settings, days, success), events)
    doc["pruned_runs"] = len(pruned)
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
    for where, text in (failure for result in results for failure in _step_failures(result)):
        print(f"agentmem: {where} failed: {text}", file=sys.stderr)
    return 0 if success else 1


def cmd_search(args) -> int:
    from .engine.memory import MemoryEngine
    from .engine.search import search

    engine = MemoryEngine.from_env()
    try:
        result = search(
            engine.embedder, engine.lance, engine.libsql, args.query,
            user_id=args.user, agent_id=args.agent, session_id=args.session,
            since=args.since, until=args.until, k=args.k, mode=args.mode,
            asked_at=args.asked_at, understand=not args.raw_query,
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
    if args.split:
        questions = [q for q in questions if q.get("split") == args.split]
        if not questions:
            return _fail(f"argument --split: no question of {args.qa} is in split {args.split!r}")
    engine = MemoryEngine.from_env()
    bar = tqdm(total=len(questions) * len(args.mode), unit="question", desc="eval", file=sys.stderr, disable=args.json)

    def ranked_ids(question: dict, mode: str) -> list[str]:
        bar.update(1)
        if not question["evidence"]:  # unanswerable: nothing to find, not scored
            return []
        hits = search(
            engine.embedder, engine.lance, engine.libsql, question["question"],
            user_id=question["user_id"], k=args.k, mode=mode, asked_at=question.get("asked_at"),
            understand=not args.raw_query,
        ).hits
        return [hit.memory_id for hit in hits]

    try:
        results = {mode: evaluate(questions, lambda q, m=mode: ranked_ids(q, m)) for mode in args.mode}
    finally:
        bar.close()
        engine.close()
    # the first mode's figures at the top level (the contract's keys), every mode under "modes"
    doc = {
        **results[args.mode[0]], "k": args.k, "mode": args.mode[0], "split": args.split,
        "query_handling": not args.raw_query, "modes": results,
    }
    if args.json:
        _print_json(doc)
        return 0
    print(
        f"{doc['n']} questions from {args.qa}" + (f" (split {args.split})" if args.split else "") + f", top {args.k}"
        + (f"; {doc['unanswerable']} unanswerable ones not scored" if doc.get("unanswerable") else "")
    )
    for mode, figures in results.items():
        print(f"  {mode:<7} " + "  ".join(f"{key} {figures[key]:.3f}" for key in ("hit@1", "hit@5", "hit@10", "mrr")))
        for name, cat in figures.get("categories", {}).items():
            if "mrr" not in cat:
                continue
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


def cmd_forget(args) -> int:
    """Erase a user's (an agent's, a session's) memories from everything the project keeps."""
    from .engine.lifecycle import Scope, forget
    from .engine.memory import MemoryEngine

    try:
        scope = Scope(args.user, args.agent, args.session)
    except ValueError as exc:
        return _fail(f"--{str(exc).split('_')[0]}: {exc}")
    engine = MemoryEngine.from_env()
    try:
        report = forget(
            engine.lance, engine.libsql, scope, staging=engine.settings.staging, wait=args.wait,
            on_wait=lambda message: print(f"agentmem: {message}", file=sys.stderr),
        )
    except TimeoutError as exc:
        return _fail(str(exc), 1)
    finally:
        engine.close()
    if args.json:
        _print_json(report)
    else:
        print(
            f"forgot {report['memories']} memories ({report['versions']} versions, {report['chunks']} chunks, "
            f"{report['quarantined_lines']} quarantined lines) of {scope.user_id} in {report['seconds']}s"
        )
    return 0


def cmd_history(args) -> int:
    """Every version of one memory, oldest first."""
    from .engine.lifecycle import NoSuchMemory, history
    from .engine.memory import MemoryEngine

    engine = MemoryEngine.from_env()
    try:
        versions = history(engine.libsql, args.user, args.memory_id)
    except NoSuchMemory as exc:
        return _fail(str(exc))
    finally:
        engine.close()
    if args.json:
        _print_json(versions)
        return 0
    for version in versions:
        mark = "*" if version["current"] else " "
        print(f"{mark} {version['created_at']}  ({version['day']})  {version['content']}")
    return 0


def cmd_demo(args) -> int:
    from .demo import demo_questions, write_demo_landing

    settings = Settings.from_env()
    try:
        summary = write_demo_landing(
            settings.landing, start=dt.date.fromisoformat(args.start), days=args.days, memories=args.memories, seed=args.seed
        )
    except OSError as exc:
        raise UsageError(f"the landing zone {settings.landing} cannot be written ({exc.strerror or exc}): set AGENTMEM_LANDING (or AGENTMEM_HOME) to a writable directory") from None
    _ensure_dagster_home(settings)  # so that `dg dev` finds the instance configuration
    if args.memories >= 200:  # every planted fact is in the landing zone from 200 memories on
        qa = Path(args.qa or settings.home / "demo-qa.jsonl")
        try:
            qa.parent.mkdir(parents=True, exist_ok=True)
            qa.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in demo_questions(args.seed)), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"argument --qa: {qa} cannot be written ({exc.strerror or exc}): give a writable path") from None
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


def cmd_devset(args) -> int:
    from .demo.devset import write_devset

    settings = Settings.from_env()
    qa = Path(args.qa or settings.home / "devset-qa.jsonl")
    try:
        summary = write_devset(settings.landing, qa, seed=args.seed, users=args.users)
    except OSError as exc:
        raise UsageError(
            f"{exc.filename or settings.landing} cannot be written ({exc.strerror or exc}): set AGENTMEM_LANDING "
            "(or AGENTMEM_HOME) and --qa to writable places"
        ) from None
    _ensure_dagster_home(settings)
    if args.json:
        _print_json(summary)
    else:
        print(
            f"wrote {summary['memories']} memories of {summary['users']} users over {len(summary['days'])} days to "
            f"{summary['landing']}\n{summary['questions']} labelled questions ({', '.join(f'{n} {c}' for c, n in summary['categories'].items())}) "
            f"to {summary['qa']}\nnext: agentmem ingest --all, then agentmem eval --qa {summary['qa']} --split heldout"
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
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"argument --dir: {root} cannot be created ({exc.strerror or exc}): give a writable directory") from None
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
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of row counts, not {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"must be positive row counts, not {value!r}")
    return sizes


def _int_between(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (no upper bound when high is None)."""
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, not {value!r}") from None
        if number < low or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, not {value!r}")
        return number

    parse.__name__ = allowed  # argparse names the type in some messages
    return parse


def _text(what: str):
    """An argparse type: text that is not empty and holds no NUL."""

    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"must be {what}, not empty")
        if "\x00" in value:
            raise argparse.ArgumentTypeError(f"must be {what} without NUL characters")
        return value

    return parse


def _seconds(value: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not {value!r}")
    return seconds


def _timestamp(value: str) -> str:
    from .engine.records import timestamp_micros

    try:
        timestamp_micros(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an ISO-8601 time (e.g. 2024-06-01T09:30:00Z), not {value!r}") from None
    return value


K = _int_between(1, 1000)  # engine.search accepts 1..1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr naming the argument and what it allows, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_ingest(sub) -> None:
    ingest = sub.add_parser("ingest", help="materialize the pipeline for some days, as one Dagster run")
    which = ingest.add_mutually_exclusive_group(required=True)
    which.add_argument("--partition", type=_day, help="one day, YYYY-MM-DD")
    which.add_argument("--from", dest="start", type=_day, help="first day of a range (with --to)")
    which.add_argument("--all", action="store_true", help="every day that has a landing folder")
    ingest.add_argument("--to", dest="end", type=_day, help="last day of a range (with --from)")
    ingest.add_argument("--json", action="store_true")
    ingest.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default="WARNING",
        help="Dagster log level on stderr (default WARNING)",
    )
    ingest.set_defaults(func=cmd_ingest, check=lambda args: _check_ingest(ingest, args))


def _check_ingest(parser: argparse.ArgumentParser, args) -> None:
    if args.start and not args.end:
        parser.error("argument --from: needs --to (a range is --from DAY --to DAY)")
    if args.end and not args.start:
        parser.error("argument --to: only with --from (a range is --from DAY --to DAY)")
    if args.start and args.start > args.end:
        parser.error(f"argument --to: must not be before --from {args.start}, not {args.end!r}")


def _add_search(sub) -> None:
    search = sub.add_parser("search", help="search one user's memories")
    search.add_argument("query", type=_text("the text to search for"))
    search.add_argument("--user", required=True, type=_text("a user id"))
    search.add_argument("--agent", type=_text("an agent id"))
    search.add_argument("--session", type=_text("a session id"))
    search.add_argument("--since", type=_timestamp, help="only memories created at or after this ISO-8601 time")
    search.add_argument("--until", type=_timestamp, help="only memories created before this ISO-8601 time")
    search.add_argument(
        "--asked-at", type=_timestamp,
        help="the time that words like 'last week' or 'in May' in the query are relative to (default: now)",
    )
    search.add_argument("--raw-query", action="store_true", help="search the query as written: keep the user's name, read no time expression")
    search.add_argument("-k", type=K, default=10, help="memories to return, 1 to 1000 (default 10)")
    search.add_argument("--mode", choices=MODES, default="hybrid", help="default: hybrid (vector + full text, fused)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)


def _add_eval(sub) -> None:
    evaluation = sub.add_parser("eval", help="retrieval quality on a labelled set of questions")
    evaluation.add_argument("--qa", required=True, help='JSON lines: {"user_id", "question", "evidence": [memory_id, ...], "category"?, "asked_at"?, "split"?}')
    evaluation.add_argument("-k", type=K, default=10, help="1 to 1000 (default 10)")
    evaluation.add_argument(
        "--mode", choices=MODES, action="append",
        help="search mode, repeatable to compare (default: hybrid); the first one's figures are the top-level keys",
    )
    evaluation.add_argument("--split", choices=("tune", "heldout"), help="only the questions of this split (the set's `split` field)")
    evaluation.add_argument(
        "--raw-query", action="store_true",
        help="search the questions as written: no name dropping, no time narrowing (to measure what they are worth)",
    )
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(func=cmd_eval)


def _add_stats(sub) -> None:
    stats = sub.add_parser("stats", help="totals over all days, and whether both stores agree")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)


def _add_lifecycle(sub) -> None:
    forget = sub.add_parser("forget", help="erase a user's (an agent's, a session's) memories everywhere, and keep them out")
    forget.add_argument("--user", required=True, type=_text("a user id"))
    forget.add_argument("--agent", type=_text("an agent id"), help="only this agent's memories of the user")
    forget.add_argument("--session", type=_text("a session id"), help="only this session's memories of the user")
    forget.add_argument("--wait", type=_seconds, default=3600.0, help="seconds to wait for running ingestions (default 3600)")
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(func=cmd_forget)

    hist = sub.add_parser("history", help="every version of one memory, oldest first")
    hist.add_argument("memory_id", type=_text("a memory id"))
    hist.add_argument("--user", required=True, type=_text("a user id"))
    hist.add_argument("--json", action="store_true")
    hist.set_defaults(func=cmd_history)


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="write a sample landing zone to ingest")
    demo.add_argument("--start", type=_day, default="2024-06-01")
    demo.add_argument("--days", type=_int_between(1, 3660), default=14, help="1 to 3660 (default 14)")
    demo.add_argument("--memories", type=_int_between(1, 10_000_000), default=400, help="default 400")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--qa", help="where to write the labelled questions (default: $AGENTMEM_HOME/demo-qa.jsonl)")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=cmd_demo, check=lambda args: _check_demo(demo, args))


def _add_devset(sub) -> None:
    from .demo.devset import max_users

    devset = sub.add_parser(
        "devset", help="write the labelled development set: multi-session conversations and their questions"
    )
    devset.add_argument("--seed", type=int, default=0)
    devset.add_argument(
        "--users", type=_int_between(2, max_users()), default=max_users(),
        help=f"conversations, 2 to {max_users()} (default {max_users()}); half tune, half held out",
    )
    devset.add_argument("--qa", help="where to write the questions (default: $AGENTMEM_HOME/devset-qa.jsonl)")
    devset.add_argument("--json", action="store_true")
    devset.set_defaults(func=cmd_devset)


def _check_demo(parser: argparse.ArgumentParser, args) -> None:
    last = dt.date.fromisoformat(args.start).toordinal() + args.days - 1
    if last > dt.date.max.toordinal():
        parser.error(f"argument --start: {args.days} days from {args.start} go past 9999-12-31")


def _add_bench(sub) -> None:
    bench = sub.add_parser(
        "bench", help="the throughput ladder: per-record to pipelined, with the embed-only ceiling; "
        "or (--pipeline) the whole commands against the peers"
    )
    bench.add_argument("--model", type=_text("a fastembed model name"), help="fastembed model name (default: AGENTMEM_EMBED_MODEL)")
    bench.add_argument("--model-path", help="local model directory (default: AGENTMEM_EMBED_MODEL_PATH)")
    bench.add_argument("--memories", type=_int_between(1), help="default: 2000 (ladder), 5000 (--pipeline)")
    bench.add_argument("--batch-size", type=_int_between(1), default=64, help="memories per batch in rungs 2 and 3")
    bench.add_argument(
        "--embed-batch-size", type=_int_between(1),
        help="texts per model call, length-sorted (default: best for the model)",
    )
    bench.add_argument("--ladder-only", action="store_true", help="skip the storage-only and cached re-ingest figures")
    pipeline = bench.add_argument_group("--pipeline", "whole commands as separate processes, on a sparse history of its own")
    pipeline.add_argument("--pipeline", action="store_true", help="time `agentmem ingest --all`, one small day and a search, the model alone and the peers")
    pipeline.add_argument("--span-days", type=_int_between(2), default=722, help="days from the history's first to its last (default 722)")
    pipeline.add_argument("--data-days", type=_int_between(2), default=220, help="days of the span that hold memories (default 220)")
    pipeline.add_argument("--seed", type=int, default=0)
    pipeline.add_argument("--runs", type=_int_between(1), default=3, help="rounds, each running every process once (default 3); medians reported")
    pipeline.add_argument(
        "--peers", nargs="?", const="mem0,chroma", type=_peer_names,
        help="also run the peers (default: mem0,chroma), each in a virtual environment of its own",
    )
    pipeline.add_argument("--peers-dir", help="where the peers' environments are made and kept (default: $AGENTMEM_HOME/../.peers, or ~/.cache/agentmem/peers)")
    pipeline.add_argument("--dir", help="work directory for the history and the stores (default: a temporary directory)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)


def _add_search_bench(sub) -> None:
    search_bench = sub.add_parser("search-bench", help="search latency (p50, p99) per mode as the chunk table grows")
    search_bench.add_argument("--sizes", type=_sizes, default=[10_000, 100_000, 1_000_000], help="chunk counts (default 10000,100000,1000000)")
    search_bench.add_argument("--users", type=_int_between(1), default=100, help="users the corpus is spread over; each search is scoped to one")
    search_bench.add_argument("--queries", type=_int_between(1), default=200, help="queries per mode and size")
    search_bench.add_argument("-k", type=K, default=10, help="1 to 1000 (default 10)")
    search_bench.add_argument("--dir", help="keep the corpus here and reuse it on the next run (default: a temporary directory)")
    search_bench.add_argument("--json", action="store_true")
    search_bench.set_defaults(func=cmd_search_bench)


COMMANDS = (_add_ingest, _add_search, _add_eval, _add_stats, _add_lifecycle, _add_demo, _add_devset, _add_bench, _add_search_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentmem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if check := getattr(args, "check", None):
        check(args)
    if args.command == "eval":
        args.mode = list(dict.fromkeys(args.mode or ["hybrid"]))
    try:
        return args.func(args)
    except StoreUnavailable as exc:
        return _fail(str(exc), 1)
    except BadDatabaseUrl as exc:  # AGENTMEM_DATABASE_URL names no system of record
        return _fail(str(exc), 2)
    except UsageError as exc:
        return _fail(str(exc), 2)


if __name__ == "__main__":
    sys.exit(main())
