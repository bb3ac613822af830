import pyarrow as pa
import pytest

from agentmem_dagster.engine.chunking import chunk_memories, split_text
from agentmem_dagster.engine.embedding import Embedder
from agentmem_dagster.engine.records import MEMORY_SCHEMA

LONG = " ".join(
    f"On day {i} of the trip we visited the old harbour of Porto, ate grilled sardines and "
    f"talked about the budget for the kitchen renovation, item number {i}."
    for i in range(80)
)


def _memories(contents: dict[str, str]) -> pa.Table:
    rows = [
        {
            "memory_id": mid, "user_id": "u1", "agent_id": None, "session_id": "s1", "role": "user",
            "content": content, "created_at": "2024-06-01T12:00:00.000000Z", "created_at_us": 1717243200000000,
            "metadata": "{}", "content_hash": "0" * 64, "day": "2024-06-01", "source_file": "f", "source_line": 1,
        }
        for mid, content in contents.items()
    ]
    return pa.Table.from_pylist(rows, schema=MEMORY_SCHEMA)


@pytest.mark.parametrize("which", ["onnx_model", "static_model"])
def test_no_chunk_exceeds_the_model_window(request, which):
    embedder = Embedder(*request.getfixturevalue(which))
    chunks = chunk_memories(_memories({"long": LONG, "short": "I like tea."}), embedder.tokenizer, 256)
    long_chunks = chunks.filter(pa.compute.equal(chunks["memory_id"], "long")).to_pylist()
    assert len(long_chunks) > 3
    for chunk in long_chunks:
        assert len(embedder.tokenizer.encode(chunk["text"]).ids) + 2 <= 256  # + [CLS] and [SEP]
    assert [c["chunk_id"] for c in long_chunks] == [f"long#{i}" for i in range(len(long_chunks))]
    assert {c["chunk_count"] for c in long_chunks} == {len(long_chunks)}
    short = chunks.filter(pa.compute.equal(chunks["memory_id"], "short")).to_pylist()
    assert [(c["chunk_id"], c["text"]) for c in short] == [("short#0", "I like tea.")]


def test_chunks_cover_every_sentence_and_are_deterministic(onnx_model):
    tokenizer = Embedder(*onnx_model).tokenizer
    first = split_text(LONG, tokenizer, 120, 16)
    assert first == split_text(LONG, tokenizer, 120, 16)
    joined = " ".join(first)
    for i in range(80):
        assert f"item number {i}." in joined
    # chunks end at sentence boundaries where one is near the window's end
    assert all(piece.endswith(".") for piece in first[:-1])


def test_short_text_in_many_bytes_is_still_checked(onnx_model):
    """A text of few characters but many tokens (CJK, emoji) is tokenized, not assumed short."""
    embedder = Embedder(*onnx_model)
    text = "记忆" * 200 + "🙂" * 50
    chunks = chunk_memories(_memories({"cjk": text}), embedder.tokenizer, 64)
    assert chunks.num_rows > 1
    assert all(len(embedder.tokenizer.encode(t).ids) <= 64 for t in chunks["text"].to_pylist())
