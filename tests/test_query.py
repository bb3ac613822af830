"""Query handling and fusion: the user's own name, time windows, the fused ranking's parts."""

import datetime as dt

import pytest

from agentmem_dagster.engine.query import names_of, understand_query
from agentmem_dagster.engine.records import timestamp_micros
from agentmem_dagster.engine.search import DEFAULT_FUSION, FUSIONS, Fusion, fuse, fusion_for, rank

ASKED = "2024-03-20T15:00:00Z"  # a Wednesday


def _day(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1_000_000, tz=dt.timezone.utc).isoformat()


def _window(question: str, asked: str = ASKED) -> tuple[str, str] | None:
    plan = understand_query(question, "u_x", timestamp_micros(asked))
    return None if plan.since_us is None else (_day(plan.since_us), _day(plan.until_us))


def test_the_scoped_users_own_name_is_dropped():
    assert names_of("u_alice") == {"alice"}
    assert names_of("user-42") == set() and names_of("usr:Bob_Smith") == {"bob", "smith"}
    assert understand_query("what is Alice allergic to?", "u_alice").text == "what is allergic to?"
    assert understand_query("Who is ALICE's partner?", "u_alice").text == "Who is partner?"
    assert understand_query("Alice\u2019s car", "u_alice").text == "car"
    # only whole words, only the scoped user's name
    assert understand_query("Alicent and Bob", "u_alice").text == "Alicent and Bob"
    assert understand_query("what is Alice allergic to?", "u_bob").text == "what is Alice allergic to?"
    # a query that is only the name stays as it is
    assert understand_query("Alice", "u_alice").text == "Alice"
    # extra names (e.g. from a profile) are dropped too
    assert understand_query("Ally's allergy", "u_1", names={"ally"}).text == "allergy"


@pytest.mark.parametrize(
    "question, window",
    [
        ("what did I read last week?", ("2024-03-11", "2024-03-18")),
        ("what did I read this week?", ("2024-03-18", "2024-03-20")),  # up to when it is asked
        ("what did I cook yesterday", ("2024-03-19", "2024-03-20")),
        ("what did I cook 3 days ago", ("2024-03-16", "2024-03-19")),
        ("where did I go last Monday", ("2024-03-18", "2024-03-19")),
        ("which film did I see in February?", ("2024-02-01", "2024-03-01")),
        ("which film did I see in May?", ("2023-05-01", "2023-06-01")),  # the latest May before it was asked
        ("which film did I see in May 2022?", ("2022-05-01", "2022-06-01")),
        ("what happened last month", ("2024-02-01", "2024-03-01")),
    ],
)
def test_time_expressions_become_a_created_at_window(question, window):
    got = _window(question)
    assert got is not None and (got[0][:10], got[1][:10]) == window


def test_time_expressions_leave_the_query_and_others_do_not_narrow():
    plan = understand_query("Which book was I into last week?", "u_x", timestamp_micros(ASKED))
    assert plan.text == "Which book was I into?" and plan.dropped == ("last week",)
    assert _window("what may I eat?") is None  # "may" is not a month
    assert _window("what is my weekly plan") is None
    # a window never reaches past the moment the question is asked
    this_month = _window("what did I cook this month?")
    assert this_month[1] <= "2024-03-21"


def _row(memory_id, *, cos=None, bm25=None, session="s", at=0, role="user"):
    row = {"memory_id": memory_id, "chunk_id": memory_id + "#0", "session_id": session, "created_at_us": at * 1_000_000, "role": role}
    if cos is not None:
        row["_distance"] = 2.0 - 2.0 * cos
    if bm25 is not None:
        row["_score"] = bm25
    return row


def test_calibrated_fusion_keeps_weak_text_matches_weak():
    vector = [_row("a", cos=0.62), _row("b", cos=0.60)]
    weak_text = [_row("b", bm25=0.4)]  # one common word: the best text score, but a weak one
    strong_text = [_row("b", bm25=12.0)]
    calibrated = Fusion(method="calibrated", weight=0.85, tau=5.0)
    assert [r["memory_id"] for r, _ in fuse(vector, weak_text, calibrated)] == ["a", "b"]
    assert [r["memory_id"] for r, _ in fuse(vector, strong_text, calibrated)] == ["b", "a"]
    # scaling to the best text score (min-max) cannot tell them apart
    minmax = Fusion(method="minmax", weight=0.4)
    assert fuse(vector, weak_text, minmax)[0][0]["memory_id"] == fuse(vector, strong_text, minmax)[0][0]["memory_id"] == "b"


def test_context_lifts_a_turn_whose_neighbour_matches_and_role_penalty_prefers_the_users_turn():
    vector = [
        _row("reply", cos=0.70, at=100, role="assistant"),
        _row("chatter", cos=0.66, at=5000),
        _row("fact", cos=0.64, at=60),  # the user's turn just before the reply
    ]
    plain = Fusion(method="calibrated", weight=1.0)
    assert [r["memory_id"] for r, _ in fuse(vector, [], plain)] == ["reply", "chatter", "fact"]
    shaped = Fusion(method="calibrated", weight=1.0, context=0.3, role_penalty=0.1)
    assert [r["memory_id"] for r, _ in fuse(vector, [], shaped)] == ["fact", "reply", "chatter"]
    # a neighbour of another session, or too far away, lends nothing
    far = [vector[0], vector[1], _row("fact", cos=0.64, at=60, session="other")]
    assert [r["memory_id"] for r, _ in fuse(far, [], Fusion(method="calibrated", weight=1.0, context=0.3))][-1] == "fact"


@pytest.mark.parametrize("method", ["minmax", "zscore", "cosine", "calibrated", "rrf"])
def test_every_fusion_ranks_the_union_once_with_the_vector_chunk_shown(method):
    vector = [_row("a", cos=0.9), _row("b", cos=0.5)]
    text = [{**_row("c", bm25=3.0)}, {**_row("a", bm25=1.0), "chunk_id": "a#7"}]
    fused = fuse(vector, text, Fusion(method=method, weight=0.5))
    assert sorted(r["memory_id"] for r, _ in fused) == ["a", "b", "c"]
    assert next(r for r, _ in fused if r["memory_id"] == "a")["chunk_id"] == "a#0"
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(vector, text, Fusion(method="nope"))


def test_each_model_has_its_fusion_and_others_get_the_default():
    assert fusion_for("minishlab/potion-base-8M") is FUSIONS["minishlab/potion-base-8M"]
    assert fusion_for("sentence-transformers/all-MiniLM-L6-v2") is DEFAULT_FUSION
    assert fusion_for("some/other-model") is DEFAULT_FUSION and fusion_for(None) is DEFAULT_FUSION


@pytest.mark.parametrize("model", sorted(FUSIONS))
def test_fused_ranking_is_never_worse_than_either_input_on_a_fixed_set(model):
    """A fixed set of rankings where each input alone misses some questions: the default
    fusion finds, per question, the evidence at least as high as the better input does
    on hit@1 and hit@10 and on MRR overall."""
    cases = [  # (vector ranking, text ranking, evidence)
        ([("e", 0.71), ("x", 0.69)], [("e", 9.0)], "e"),  # both agree
        ([("x", 0.72), ("e", 0.70)], [("e", 14.0), ("y", 1.0)], "e"),  # a strong text match
        ([("e", 0.74), ("x", 0.60)], [("x", 0.8), ("e", 0.5)], "e"),  # a weak text match disagrees
        ([("x", 0.65), ("y", 0.64), ("e", 0.63)], [("e", 11.0)], "e"),  # text finds it alone
        ([("e", 0.69), ("y", 0.50)], [("z", 1.2)], "e"),  # vector finds it alone
    ]
    ranks = {"hybrid": [], "vector": [], "text": []}
    for vec, txt, evidence in cases:
        vector = [_row(m, cos=c) for m, c in vec]
        text = [_row(m, bm25=b) for m, b in txt]
        for mode in ranks:
            ids = [r["memory_id"] for r, _ in rank(mode, vector, text, FUSIONS[model])]
            ranks[mode].append(ids.index(evidence) + 1 if evidence in ids else None)
    mrr = {mode: sum(1 / r for r in rs if r) / len(rs) for mode, rs in ranks.items()}
    hit1 = {mode: sum(1 for r in rs if r == 1) for mode, rs in ranks.items()}
    assert mrr["hybrid"] >= max(mrr["vector"], mrr["text"])
    assert hit1["hybrid"] >= max(hit1["vector"], hit1["text"])
    assert all(r is not None for r in ranks["hybrid"])
