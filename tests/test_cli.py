"""`agentmem` end to end in real processes: demo data, ingest through Dagster, search, stats."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from agentmem_dagster.cli import main

from .conftest import memory, write_landing

AGENTMEM = str(Path(sys.executable).parent / "agentmem")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([AGENTMEM, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"agentmem {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def test_demo_ingest_range_search_and_stats(agentmem_home):
    demo = json.loads(run("demo", "--days", "3", "--memories", "120", "--json").stdout)
    assert len(demo["days"]) == 3

    out = json.loads(run("ingest", "--from", demo["days"][0], "--to", demo["days"][-1], "--json").stdout)
    assert out["status"] == "SUCCESS"
    assert out["partitions"] == demo["days"]
    assert out["memories"] == demo["memories"]
    assert out["quarantined"] == demo["bad_lines"]
    assert out["chunks"] == out["lancedb_rows"] == out["libsql_rows"] > out["memories"]
    assert out["memories_per_s"] > 0
    with dg.DagsterInstance.get() as instance:  # the run is recorded where `dagster dev` looks
        run_record = instance.get_run_by_id(out["run_id"])
        assert run_record.is_success
        assert run_record.tags["dagster/asset_partition_range_end"] == demo["days"][-1]
        assert len(instance.get_runs()) == 1  # a range is one run
        checks = instance.get_records_for_run(
            out["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in checks]
        assert {e.check_name for e in evaluations} == {"stores_consistent", "vectors_sane"}
        assert all(e.passed for e in evaluations)

    stats = json.loads(run("stats", "--json").stdout)
    assert stats["consistent"] is True
    assert (stats["memories"], stats["chunks"], stats["lancedb_rows"]) == (
        out["memories"], out["chunks"], out["lancedb_rows"],
    )

    hits = json.loads(run("search", "food allergy", "--user", "o'brien", "-k", "5", "--json").stdout)
    assert 0 < len(hits) <= 5
    assert {hit["user_id"] for hit in hits} == {"o'brien"}
    assert len({hit["memory_id"] for hit in hits}) == len(hits)
    for key in ("memory_id", "chunk_id", "session_id", "content", "created_at", "metadata", "score"):
        assert all(key in hit for hit in hits)
    assert all(hit["content"] and isinstance(hit["metadata"], dict) for hit in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    assert json.loads(run("search", "anything", "--user", "nobody", "--json").stdout) == []


def test_ingest_one_day_and_search_scope(agentmem_home):
    day = "2024-07-01"
    landing = agentmem_home / "landing"
    write_landing(landing, day, [
        memory("a1", "u_ann", "Ann's cat is called Miso and loves tuna", day, session_id="s-ann", metadata={"k": 1}),
        memory("b1", "u_ben", "Ben's cat is called Pixel and loves tuna", day, session_id="s-ben"),
        "not json at all",
    ])
    out = json.loads(run("ingest", "--partition", day, "--json").stdout)
    assert (out["status"], out["memories"], out["chunks"], out["quarantined"]) == ("SUCCESS", 2, 2, 1)
    staging = agentmem_home / "staging"
    assert (staging / "memory_embeddings" / f"{day}.parquet").exists()
    assert not (staging / "runs" / out["run_id"]).exists()  # the run's op outputs are cleaned up

    hits = json.loads(run("search", "cat tuna", "--user", "u_ann", "--json").stdout)
    assert [(h["memory_id"], h["session_id"], h["metadata"]) for h in hits] == [("a1", "s-ann", {"k": 1})]
    assert hits[0]["content"] == "Ann's cat is called Miso and loves tuna"


def test_ingest_refuses_days_outside_the_partitions(agentmem_home):
    proc = run("ingest", "--partition", "1999-01-01", "--json", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "AGENTMEM_PARTITIONS_START" in proc.stderr


def test_empty_days_cost_nothing_and_a_late_older_day_splits_a_range(agentmem_home):
    landing = agentmem_home / "landing"
    days = ["2024-01-05", "2024-02-20", "2024-03-30"]  # 3 days with data over 86 calendar days
    for i, day in enumerate(days):
        write_landing(landing, day, [memory(f"{day}-{n}", "u", f"note {n} of {day}", day) for n in range(2 + i)])
    out = json.loads(run("ingest", "--all", "--json").stdout)
    assert out["status"] == "SUCCESS" and out["partitions"] == days and out["memories"] == 2 + 3 + 4
    assert out["executor"] == "in_process"
    # one process ran every step: the run's own (agentmem's), named once
    assert len(out["workers"]) == 1 and out["workers"][0]["pid"] != os.getpid()
    assert {"raw_memories", "memory_stores.commit_days", "store_checks"} <= set(out["workers"][0]["steps"])
    events = out["events"]["by_type"]
    # four daily assets materialized (and planned) once per day with data, search_index once
    assert events["ASSET_MATERIALIZATION"] == events["ASSET_MATERIALIZATION_PLANNED"] == 4 * len(days) + 1
    assert out["events"]["days_without_data"] == 0
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("memory_days") == days
        materialized = instance.get_materialized_partitions(dg.AssetKey("libsql_memories"))
        assert materialized == set(days)

    # files for an older day arrive late: it is registered after the others, so a range over it
    # and the first two days is two runs (partitions d1, d2 | d3 | late: d3 is not in the range)
    late = "2024-01-01"
    write_landing(landing, late, [memory("late-1", "u", "a late note", late)])
    again = json.loads(run("ingest", "--from", "2024-01-01", "--to", "2024-02-28", "--json").stdout)
    assert again["status"] == "SUCCESS" and again["partitions"] == [late, *days[:2]]
    assert len(again["run_ids"]) == 2 and again["memories"] == 1 + 2 + 3
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("memory_days") == [*days, late]
        assert instance.get_materialized_partitions(dg.AssetKey("lancedb_memories")) == {late, *days}
    assert len(json.loads(run("ingest", "--all", "--json").stdout)["run_ids"]) == 1  # all of them: one run


# Bad invocations: (arguments, what the one line on stderr must say). Each names the argument
# and what it allows; none may end in a traceback or reach the stores.
BAD_INVOCATIONS = [
    ([], ["command"]),
    (["bogus"], ["argument command", "choose from", "ingest"]),
    (["ingest"], ["--partition --from --all", "required"]),
    (["ingest", "--partition", "2024-13-01"], ["argument --partition", "YYYY-MM-DD"]),
    (["ingest", "--partition", "2024-06-01", "--all"], ["argument --all", "not allowed with argument --partition"]),
    (["ingest", "--partition", "2024-06-01", "--to", "2024-06-02"], ["argument --to", "only with --from"]),
    (["ingest", "--all", "--to", "2024-06-02"], ["argument --to", "only with --from"]),
    (["ingest", "--from", "2024-06-01"], ["argument --from", "needs --to"]),
    (["ingest", "--from", "2024-06-02", "--to", "2024-06-01"], ["argument --to", "must not be before --from"]),
    (["ingest", "--all", "--log-level", "LOUD"], ["argument --log-level", "'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'"]),
    (["ingest", "--partition", "1999-01-01"], ["AGENTMEM_PARTITIONS_START"]),
    (["search", "cats"], ["--user", "required"]),
    (["search", "cats", "--user", ""], ["argument --user", "not empty"]),
    (["search", "cats", "--user", "u\x00"], ["argument --user", "NUL"]),
    (["search", "  ", "--user", "u"], ["argument query", "not empty"]),
    (["search", "cats", "--user", "u", "--agent", ""], ["argument --agent", "not empty"]),
    (["search", "cats", "--user", "u", "--session", ""], ["argument --session", "not empty"]),
    (["search", "cats", "--user", "u", "-k", "0"], ["argument -k", "from 1 to 1000", "'0'"]),
    (["search", "cats", "--user", "u", "-k", "1001"], ["argument -k", "from 1 to 1000"]),
    (["search", "cats", "--user", "u", "-k", "ten"], ["argument -k", "from 1 to 1000", "'ten'"]),
    (["search", "cats", "--user", "u", "--mode", "fuzzy"], ["argument --mode", "'hybrid', 'vector', 'text'"]),
    (["search", "cats", "--user", "u", "--since", "last week"], ["argument --since", "ISO-8601"]),
    (["search", "cats", "--user", "u", "--until", "2024-02-30"], ["argument --until", "ISO-8601"]),
    (["eval"], ["--qa", "required"]),
    (["eval", "--qa", "qa.jsonl", "-k", "0"], ["argument -k", "from 1 to 1000"]),
    (["eval", "--qa", "qa.jsonl", "--mode", "best"], ["argument --mode", "'hybrid', 'vector', 'text'"]),
    (["eval", "--qa", "/nonexistent/qa.jsonl"], ["/nonexistent/qa.jsonl", "No such file"]),
    (["stats", "--verbose"], ["unrecognized arguments: --verbose"]),
    (["demo", "--days", "0"], ["argument --days", "from 1 to 3660", "'0'"]),
    (["demo", "--memories", "-1"], ["argument --memories", "from 1 to", "'-1'"]),
    (["demo", "--memories", "0"], ["argument --memories", "from 1 to"]),
    (["demo", "--seed", "x"], ["argument --seed", "invalid int value"]),
    (["demo", "--start", "June"], ["argument --start", "YYYY-MM-DD"]),
    (["demo", "--start", "9999-12-25"], ["argument --start", "past 9999-12-31"]),
    (["demo", "--qa", "/proc/no/qa.jsonl"], ["argument --qa", "cannot be written"]),
    (["bench", "--memories", "0"], ["argument --memories", "at least 1", "'0'"]),
    (["bench", "--batch-size", "0"], ["argument --batch-size", "at least 1", "'0'"]),
    (["bench", "--embed-batch-size", "-3"], ["argument --embed-batch-size", "at least 1"]),
    (["bench", "--model", ""], ["argument --model", "not empty"]),
    (["search-bench", "--users", "0"], ["argument --users", "at least 1", "'0'"]),
    (["search-bench", "--queries", "0"], ["argument --queries", "at least 1", "'0'"]),
    (["search-bench", "-k", "0"], ["argument -k", "from 1 to 1000"]),
    (["search-bench", "--sizes", "10,0"], ["argument --sizes", "positive row counts"]),
    (["search-bench", "--sizes", "ten"], ["argument --sizes", "comma-separated list of row counts"]),
    (["search-bench", "--sizes", "10", "--dir", "/proc/no/corpus"], ["argument --dir", "cannot be created"]),
]


@pytest.mark.parametrize("argv, says", BAD_INVOCATIONS, ids=[" ".join(a) or "(none)" for a, _ in BAD_INVOCATIONS])
def test_a_bad_invocation_is_one_line_on_stderr_and_exit_2(agentmem_home, monkeypatch, capsys, argv, says):
    monkeypatch.chdir(agentmem_home.parent)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exit, after one line (no traceback: nothing raised past it)
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("agentmem") and "Traceback" not in err
    for part in says:
        assert part in err, f"{part!r} not in {err!r}"
    assert not (agentmem_home / "memories.db").exists()  # refused before any store was opened


@pytest.mark.parametrize("case", ["empty user_id", "NUL in question", "evidence not ids"])
def test_eval_refuses_a_bad_question_file_in_one_line(agentmem_home, tmp_path, capsys, case):
    question = {"user_id": "u", "question": "what?", "evidence": ["m-1"]}
    question.update({
        "empty user_id": {"user_id": ""}, "NUL in question": {"question": "a\x00b"}, "evidence not ids": {"evidence": [1]},
    }[case])
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps(question) + "\n")
    assert main(["eval", "--qa", str(qa)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{qa}:1:" in err, err


def test_ingest_with_a_dagster_home_that_cannot_be_created_is_one_line(agentmem_home, monkeypatch):
    write_landing(agentmem_home / "landing", "2024-06-01", [memory("a", "u", "text", "2024-06-01")])
    env = {**os.environ, "DAGSTER_HOME": "/proc/agentmem-no/dagster"}
    proc = subprocess.run([AGENTMEM, "ingest", "--all"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "agentmem: DAGSTER_HOME /proc/agentmem-no/dagster cannot be created (No such file or directory): "
        "set DAGSTER_HOME (or AGENTMEM_HOME) to a writable directory"
    ]


# `agentmem ingest` with every step in its own process (the multiprocess executor, which runs
# past IN_PROCESS_MAX_BYTES of landing data: lowered here so that a small landing zone uses it).
MULTIPROCESS_AGENTMEM = (
    "import sys; import agentmem_dagster.runs as runs; runs.IN_PROCESS_MAX_BYTES = -1; "
    "from agentmem_dagster.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_ingest_search_stats_and_forget_on_postgres_with_a_process_per_step(agentmem_home, postgres_url, monkeypatch):
    import psycopg

    monkeypatch.setenv("AGENTMEM_DATABASE_URL", postgres_url)
    landing = agentmem_home / "landing"
    days = ["2024-07-01", "2024-07-02"]
    for i, day in enumerate(days):
        write_landing(landing, day, [
            memory(f"{day}-{n}", f"u{n % 2}", f"note {n} of {day}: the cat Miso likes tuna", day) for n in range(5 + i)
        ] + ["not json at all"])

    def ingest() -> dict:
        proc = subprocess.run([sys.executable, "-c", MULTIPROCESS_AGENTMEM, "ingest", "--all", "--json"],
                              capture_output=True, text=True, env=os.environ.copy(), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    out = ingest()
    assert (out["status"], out["executor"], out["partitions"]) == ("SUCCESS", "multiprocess", days)
    assert (out["memories"], out["quarantined"]) == (11, 2)
    assert out["chunks"] == out["lancedb_rows"] == out["libsql_rows"] == 11
    with psycopg.connect(postgres_url) as conn:  # the rows are in PostgreSQL, and no LibSQL file was made
        assert conn.execute("SELECT count(*), count(DISTINCT ingest_id) FROM memories").fetchone() == (11, 1)
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 2
    assert not (agentmem_home / "memories.db").exists()

    first = json.loads(run("stats", "--json").stdout)
    assert first["consistent"] is True and (first["memories"], first["chunks"], first["quarantined"]) == (11, 11, 2)
    again = ingest()  # a re-run replaces the days' versions: nothing doubles
    assert again["status"] == "SUCCESS"
    assert json.loads(run("stats", "--json").stdout) == first

    hits = json.loads(run("search", "cat tuna", "--user", "u1", "-k", "20", "--json").stdout)
    assert len(hits) == 5 and {h["user_id"] for h in hits} == {"u1"}
    gone = json.loads(run("forget", "--user", "u1", "--json").stdout)
    assert (gone["memories"], gone["chunks"]) == (5, 5)
    assert json.loads(run("search", "cat tuna", "--user", "u1", "--json").stdout) == []
    assert json.loads(run("stats", "--json").stdout)["memories"] == 6


@pytest.mark.parametrize("url", ["mysql://db/agentmem", "s3://bucket/memories"])
def test_a_database_url_of_no_known_kind_is_one_line_and_exit_2(agentmem_home, monkeypatch, url):
    monkeypatch.setenv("AGENTMEM_DATABASE_URL", url)
    for command in (["stats", "--json"], ["ingest", "--all", "--json"]):
        proc = run(*command, check=False)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"agentmem: AGENTMEM_DATABASE_URL has the scheme {url.split(':')[0]!r}: "
            "use a file path, libsql:// (or https://) or postgresql://"
        ]
