"""Search: scope and time range, one hit per memory, fusion order, the index life cycle."""

import contextlib
import json
from pathlib import Path

import pyarrow as pa
import pytest

from agentmem_dagster.engine.embedding import Embedder
from agentmem_dagster.engine.ingest import ingest
from agentmem_dagster.engine.lance_store import LanceStore
from agentmem_dagster.engine.libsql_store import LibsqlPool, LibsqlStore
from agentmem_dagster.engine.record_store import open_store
from agentmem_dagster.engine.records import MEMORY_SCHEMA, timestamp_micros
from agentmem_dagster.engine.search import reciprocal_rank_fusion, search

from .conftest import new_postgres_database

LONG = " ".join(
    f"Section {i}: the greenhouse tomatoes need watering every morning and the basil needs shade."
    for i in range(60)
)
MEMORIES = [  # (memory_id, user_id, created_at, content)
    ("m-jan", "ann", "2024-01-10T08:00:00Z", "I adopted a grey cat called Pixel."),
    ("m-feb", "ann", "2024-02-10T08:00:00Z", "My cat Pixel hates the vacuum cleaner."),
    ("m-mar", "ann", "2024-03-10T08:00:00Z", "Pixel the cat had her vaccination today."),
    ("m-wifi", "ann", "2024-03-11T08:00:00Z", "The guest wifi password is QX7TANGO."),
    ("m-long", "ann", "2024-03-12T08:00:00Z", LONG),
    ("m-bob", "bob", "2024-02-10T08:00:00Z", "My cat Pixel hates the vacuum cleaner."),
]


def _memories(rows) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "memory_id": mid, "user_id": user, "agent_id": "a", "session_id": "s", "role": "user",
                "content": content, "created_at": created, "created_at_us": timestamp_micros(created),
                "metadata": "{}", "content_hash": "0" * 64, "day": created[:10], "source_file": "f",
                "source_line": i + 1,
            }
            for i, (mid, user, created, content) in enumerate(rows)
        ],
        schema=MEMORY_SCHEMA,
    )


def _ingest(world_parts, rows) -> None:
    embedder, lance, libsql = world_parts
    table = _memories(rows)
    ingest(table, embedder=embedder, lance=lance, libsql=libsql, days=sorted(set(table["day"].to_pylist())))


@pytest.fixture(scope="module", params=["libsql", "postgres"])
def world(request, tmp_path_factory, static_model):
    """Search hydrated from each system of record."""
    root = tmp_path_factory.mktemp("search")
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(new_postgres_database(request.getfixturevalue("postgres_server")))
        else:
            url = str(root / "m.db")
        parts = Embedder(*static_model), LanceStore(str(root / "lance")), open_store(url)
        stack.callback(parts[2].close)
        _ingest(parts, MEMORIES)
        parts[1].maintain()
        yield parts


def _ids(world, query, **kwargs):
    return [hit.memory_id for hit in search(*world, query, **kwargs).hits]


def test_hits_are_scoped_to_the_user_and_time_range(world):
    assert "m-bob" not in _ids(world, "cat Pixel vacuum", user_id="ann", k=10)
    assert _ids(world, "cat Pixel vacuum", user_id="bob", k=10) == ["m-bob"]
    in_feb = _ids(world, "Pixel the cat", user_id="ann", since="2024-02-01", until="2024-03-01", k=10)
    assert in_feb == ["m-feb"]
    # `since` is inclusive, `until` exclusive, both to the microsecond and in any offset
    assert _ids(world, "Pixel", user_id="ann", since="2024-03-10T08:00:00Z", until="2024-03-10T08:00:00.000001Z") == ["m-mar"]
    assert _ids(world, "Pixel", user_id="ann", since="2024-03-10T09:00:00+01:00", until="2024-03-10T08:00:00Z") == []
    assert set(_ids(world, "Pixel", user_id="ann", until="2024-02-10T08:00:00Z")) == {"m-jan"}


def test_a_memory_with_many_matching_chunks_is_one_hit_with_its_best_chunk(world):
    embedder, lance, libsql = world
    assert lance.table().count_rows("memory_id = 'm-long'") > 3
    for mode in ("hybrid", "vector", "text"):
        hits = search(embedder, lance, libsql, "greenhouse tomatoes watering basil", user_id="ann", k=10, mode=mode).hits
        assert [h.memory_id for h in hits].count("m-long") == 1
        long_hit = next(h for h in hits if h.memory_id == "m-long")
        assert long_hit.chunk_id.startswith("m-long#") and long_hit.content == LONG
        assert long_hit.chunk_text in LONG and len(long_hit.chunk_text) < len(LONG)
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)


def test_reciprocal_rank_fusion_order():
    fused = reciprocal_rank_fusion(["a", "b", "c"], ["c", "a"], k=60)
    assert [key for key, _ in fused] == ["a", "c", "b"]  # 1/61+1/62 > 1/61+1/63 > 1/62
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert [key for key, _ in reciprocal_rank_fusion(["x", "y"], ["y", "x"])] == ["x", "y"]  # a tie keeps first seen
    assert reciprocal_rank_fusion([], []) == []


def test_hybrid_finds_what_either_ranking_finds(world):
    """An exact code word is found by text search; hybrid keeps it and the vector hits."""
    text = _ids(world, "what is the QX7TANGO code", user_id="ann", k=3, mode="text")
    assert text[0] == "m-wifi"
    vector = _ids(world, "what is the QX7TANGO code", user_id="ann", k=3, mode="vector")
    hybrid = _ids(world, "what is the QX7TANGO code", user_id="ann", k=3, mode="hybrid")
    assert hybrid[0] == "m-wifi"
    assert set(hybrid) <= set(text) | set(vector)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "fuzzy"}, "mode must be one of"),
        ({"since": "last week"}, "not an ISO-8601 time"),
        ({"until": "2024-13-01"}, "not an ISO-8601 time"),
        ({"k": 0}, "k must be"),
    ],
)
def test_bad_arguments_are_clear_errors(world, kwargs, message):
    with pytest.raises(ValueError, match=message):
        search(*world, "cat", user_id="ann", **kwargs)


def test_index_life_cycle(tmp_path, static_model):
    """No index before the first maintenance (text search is empty, vector search works);
    then scalar and full-text indexes; rows added later are found before they are indexed
    and folded in by the next maintenance; the vector index comes past its threshold."""
    parts = embedder, lance, libsql = (
        Embedder(*static_model), LanceStore(str(tmp_path / "lance")), LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    )
    _ingest(parts, MEMORIES[:3])
    assert lance.index_status() == {}
    assert _ids(parts, "Pixel", user_id="ann", mode="text") == []
    assert len(_ids(parts, "Pixel", user_id="ann", mode="vector")) == 3

    report = lance.maintain(vector_index_min_rows=300)
    assert set(report["created"]) == {"user_id", "agent_id", "session_id", "created_at_us", "day", "chunk_id", "text"}
    assert all(index["unindexed"] == 0 for index in report["indexes"].values())

    _ingest(parts, [MEMORIES[3]])
    assert lance.index_status()["text"]["unindexed"] == 1
    assert _ids(parts, "QX7TANGO", user_id="ann", mode="text") == ["m-wifi"]
    assert lance.maintain(vector_index_min_rows=300)["created"] == []
    assert lance.index_status()["text"]["unindexed"] == 0

    many = [(f"n-{i}", "cal", f"2024-04-{1 + i % 28:02d}T08:00:00Z", f"note {i} about topic {i % 17}") for i in range(400)]
    _ingest(parts, many)
    report = lance.maintain(vector_index_min_rows=300)
    assert report["created"] == ["vector"] and report["indexes"]["vector"]["unindexed"] == 0
    assert _ids(parts, "cat Pixel vacuum", user_id="ann", mode="vector", k=3)[0] in {"m-feb", "m-jan", "m-mar"}
    assert len(_ids(parts, "cat", user_id="ann", mode="vector", k=10)) == 4  # a small scope comes back whole
    assert _ids(parts, "note 7 about topic 7", user_id="cal", mode="vector", k=5)[0] == "n-7"  # through the index
    assert _ids(parts, "note 5 about topic 5", user_id="cal", mode="text", k=1) == ["n-5"]
    libsql.pool.close()


def test_search_and_eval_from_the_command_line(agentmem_home, static_model, tmp_path, capsys):
    from agentmem_dagster.cli import main
    from agentmem_dagster.engine.memory import MemoryEngine

    engine = MemoryEngine.from_env()
    _ingest((engine.embedder, engine.lance, engine.libsql), MEMORIES)
    engine.lance.maintain()
    engine.close()

    assert main(["search", "Pixel", "--user", "ann", "--since", "2024-02-01", "--mode", "text", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert {h["memory_id"] for h in hits} == {"m-feb", "m-mar"}
    assert set(hits[0]) >= {"memory_id", "chunk_id", "user_id", "session_id", "content", "created_at", "metadata", "score"}
    assert main(["search", "Pixel the cat in February", "--user", "ann", "--asked-at", "2024-03-20T00:00:00Z", "--json"]) == 0
    assert [h["memory_id"] for h in json.loads(capsys.readouterr().out)] == ["m-feb"]
    assert main(["search", "Pixel the cat in February", "--user", "ann", "--raw-query", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) > 1
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "Pixel", "--user", "ann", "--asked-at", "yesterday"])
    assert exit_info.value.code == 2 and "--asked-at" in capsys.readouterr().err

    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"user_id": "ann", "question": "QX7TANGO", "evidence": ["m-wifi"], "category": "code"}) + "\n"
        + json.dumps({"user_id": "ann", "question": "zzz unrelated", "evidence": ["nope"], "category": "miss"}) + "\n"
    )
    assert main(["eval", "--qa", str(qa), "--mode", "text", "--mode", "hybrid", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 2 and doc["mode"] == "text"
    assert (doc["hit@1"], doc["hit@5"], doc["hit@10"], doc["mrr"]) == (0.5, 0.5, 0.5, 0.5)
    assert doc["categories"]["code"]["hit@1"] == 1.0 and doc["categories"]["miss"]["mrr"] == 0.0
    assert set(doc["modes"]) == {"text", "hybrid"}

    qa.write_text('{"user_id": "ann", "question": "x"}\n')
    assert main(["eval", "--qa", str(qa), "--json"]) == 2
    assert "needs user_id, question and a non-empty evidence list" in capsys.readouterr().err


def test_hybrid_beats_vector_on_the_labelled_demo_set(tmp_path, static_model):
    """The demo's planted facts, asked in other words, against 2,000 memories of chatter."""
    import pyarrow as pa

    from agentmem_dagster.demo import demo_questions, write_demo_landing
    from agentmem_dagster.engine.evaluation import evaluate
    from agentmem_dagster.engine.records import read_landing_day

    summary = write_demo_landing(tmp_path / "landing", memories=2000)
    memories = pa.concat_tables(read_landing_day(tmp_path / "landing", day).memories for day in summary["days"])
    parts = Embedder(*static_model), LanceStore(str(tmp_path / "lance")), LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    ingest(memories, embedder=parts[0], lance=parts[1], libsql=parts[2], days=summary["days"])
    parts[1].maintain()
    questions = demo_questions()

    def mrr(mode):
        return evaluate(questions, lambda q: _ids(parts, q["question"], user_id=q["user_id"], mode=mode))["mrr"]

    hybrid, vector, text = mrr("hybrid"), mrr("vector"), mrr("text")
    parts[2].pool.close()
    assert hybrid > vector + 0.05, (hybrid, vector, text)
    assert text > 0.3  # the full-text side really ranks the evidence


def test_a_search_before_the_first_write_finds_nothing_then_finds_the_rows(tmp_path, static_model):
    parts = Embedder(*static_model), LanceStore(str(tmp_path / "lance")), LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    assert search(*parts, "Pixel", user_id="ann").hits == []
    _ingest(parts, MEMORIES[:1])
    assert _ids(parts, "Pixel", user_id="ann") == ["m-jan"]
    parts[2].pool.close()


def test_eval_reports_every_category_and_mode_of_the_devset(agentmem_home, tmp_path, capsys):
    """`agentmem devset` then `agentmem eval --split`: per-category figures for each mode, the
    unanswerable questions counted and not scored, the time expressions read relative to
    each question's asked_at."""
    import pyarrow as pa

    from agentmem_dagster.cli import main
    from agentmem_dagster.engine.memory import MemoryEngine
    from agentmem_dagster.engine.records import read_landing_day

    assert main(["devset", "--users", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["questions"] == 40 and summary["splits"] == {"heldout": 20, "tune": 20}
    landing = agentmem_home / "landing"
    memories = pa.concat_tables(read_landing_day(landing, day).memories for day in summary["days"])
    engine = MemoryEngine.from_env()
    ingest(memories, embedder=engine.embedder, lance=engine.lance, libsql=engine.libsql, days=summary["days"])
    engine.lance.maintain()
    engine.close()

    qa = summary["qa"]
    assert main(["eval", "--qa", qa, "--split", "heldout", "--mode", "hybrid", "--mode", "vector", "--mode", "text", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"] == "heldout" and doc["query_handling"] is True
    assert doc["n"] == 17 and doc["unanswerable"] == 3  # 20 questions, 3 of them without evidence
    assert set(doc["modes"]) == {"hybrid", "vector", "text"}
    for figures in doc["modes"].values():
        assert set(figures["categories"]) == {"single-hop", "multi-hop", "temporal", "unanswerable"}
        assert figures["categories"]["unanswerable"] == {"n": 3, "scored": False}
        assert sum(c["n"] for name, c in figures["categories"].items() if name != "unanswerable") == 17
    # the time windows are what finds the temporal evidence among the other mentions
    assert main(["eval", "--qa", qa, "--mode", "vector", "--json"]) == 0
    read = json.loads(capsys.readouterr().out)
    assert main(["eval", "--qa", qa, "--mode", "vector", "--raw-query", "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["query_handling"] is False and read["categories"]["temporal"]["n"] == 8
    assert read["categories"]["temporal"]["mrr"] > raw["categories"]["temporal"]["mrr"] + 0.1, (read, raw)

    assert main(["eval", "--qa", qa, "--split", "tune", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 17
    Path(qa).write_text('{"user_id": "u", "question": "q", "evidence": [], "category": "single-hop"}\n')
    assert main(["eval", "--qa", qa, "--json"]) == 2
    assert "empty only for category 'unanswerable'" in capsys.readouterr().err


def test_a_time_expression_narrows_the_search_relative_to_asked_at(world):
    """"in February", asked in March 2024, finds the February memory only; a window that
    holds nothing falls back to no narrowing; the explicit range still applies."""
    asked = "2024-03-20T12:00:00Z"
    assert _ids(world, "Pixel the cat in February", user_id="ann", asked_at=asked) == ["m-feb"]
    a_week_on = "2024-03-13T12:00:00Z"  # last week: 4-10 March
    assert _ids(world, "Pixel the cat last week", user_id="ann", asked_at=a_week_on, mode="text") == ["m-mar"]
    assert _ids(world, "Pixel the cat last week", user_id="ann", asked_at=a_week_on, mode="text", understand=False) != ["m-mar"]
    everything = set(_ids(world, "Pixel the cat", user_id="ann", asked_at=asked, mode="text"))
    assert set(_ids(world, "Pixel the cat in December", user_id="ann", asked_at=asked, mode="text")) == everything
    assert _ids(world, "Pixel the cat in February", user_id="ann", asked_at=asked, until="2024-02-01") == ["m-jan"]


def test_the_users_own_name_does_not_pull_up_memories_that_name_them(tmp_path, static_model):
    """Memories that only name the user (a system prompt, greetings) match "Alice" in full
    text; with the name dropped they do not, and the allergy comes first."""
    parts = Embedder(*static_model), LanceStore(str(tmp_path / "lance")), LibsqlStore(LibsqlPool(str(tmp_path / "m.db")))
    _ingest(parts, [
        ("sys", "u_alice", "2024-01-01T08:00:00Z", "You are Alice's assistant. Alice likes short answers. Greet Alice."),
        ("hi", "u_alice", "2024-01-02T08:00:00Z", "Good morning Alice, what can I do for Alice today?"),
        ("nuts", "u_alice", "2024-01-03T08:00:00Z", "Peanuts give me hives, keep them away from me."),
    ])
    parts[1].maintain()
    query = "what is Alice allergic to?"
    assert _ids(parts, query, user_id="u_alice", mode="text", understand=False)[0] in {"sys", "hi"}
    assert not {"sys", "hi"} & set(_ids(parts, query, user_id="u_alice", mode="text"))
    assert _ids(parts, query, user_id="u_alice")[0] == "nuts"
    parts[2].pool.close()
