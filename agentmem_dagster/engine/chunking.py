"""Token-aware chunking: every chunk fits the embedding model's window, ids are `memory_id#n`."""

from __future__ import annotations

import hashlib

import pyarrow as pa

CHUNK_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("memory_id", pa.string()),
        ("chunk_index", pa.int32()),
        ("chunk_count", pa.int32()),
        ("text", pa.string()),
        ("text_hash", pa.string()),
        ("user_id", pa.string()),
        ("agent_id", pa.string()),
        ("session_id", pa.string()),
        ("role", pa.string()),
        ("created_at", pa.string()),
        ("created_at_us", pa.int64()),
        ("day", pa.string()),
    ]
)

# Memory columns copied onto each of its chunks, so the vector store can filter and show them.
_CARRIED = ["user_id", "agent_id", "session_id", "role", "created_at", "created_at_us", "day"]
_SENTENCE_ENDS = (".", "!", "?", "\n", "。", "！", "？")


def chunk_id(memory_id: str, index: int) -> str:
    return f"{memory_id}#{index}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def split_text(text: str, tokenizer, max_tokens: int, overlap: int, encoding=None) -> list[str]:
    """Split `text` into pieces of at most `max_tokens` tokens (specials excluded).

    Pieces are cut at token offsets, preferring the end of a sentence in the last third of
    a window; consecutive pieces share about `overlap` tokens so that a fact on a boundary
    stays whole in one of them. Short text comes back unchanged as one piece.
    """
    enc = encoding or tokenizer.encode(text, add_special_tokens=False)
    offsets = enc.offsets
    if len(offsets) <= max_tokens:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(offsets):
        end = min(start + max_tokens, len(offsets))  # exclusive token index
        if end < len(offsets):
            for cut in range(end, start + (2 * max_tokens) // 3, -1):
                if text[offsets[cut - 1][1] - 1 : offsets[cut - 1][1]] in _SENTENCE_ENDS:
                    end = cut
                    break
        pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end >= len(offsets):
            break
        start = max(end - overlap, start + 1)
    return pieces


def _may_exceed(text: str, max_tokens: int) -> bool:
    """False when `text` surely fits: every token covers at least one byte of the text, and
    at most one more (a word-start marker) covers none."""
    return len(text.encode("utf-8", "surrogatepass")) + 1 > max_tokens


def chunk_memories(memories: pa.Table, tokenizer, max_tokens: int, overlap: int = 32) -> pa.Table:
    """One row per chunk of each memory (CHUNK_SCHEMA).

    `max_tokens` is the model's window including its two special tokens; a margin of a few
    tokens covers re-tokenisation differences at cut points.
    """
    budget = max(8, max_tokens - 2 - 6)
    cols: dict[str, list] = {name: [] for name in CHUNK_SCHEMA.names}
    carried = {name: memories.column(name).to_pylist() for name in _CARRIED}
    contents = memories.column("content").to_pylist()
    # Only text that might be too long is tokenized, all at once (the tokenizer is parallel).
    maybe_long = [i for i, text in enumerate(contents) if _may_exceed(text, budget)]
    encodings = dict(zip(maybe_long, tokenizer.encode_batch([contents[i] for i in maybe_long], add_special_tokens=False)))
    for row, (memory_id, content) in enumerate(zip(memories.column("memory_id").to_pylist(), contents)):
        if row in encodings:
            pieces = split_text(content, tokenizer, budget, min(overlap, budget // 4), encodings[row])
        else:
            pieces = [content]
        for index, piece in enumerate(pieces):
            cols["chunk_id"].append(chunk_id(memory_id, index))
            cols["memory_id"].append(memory_id)
            cols["chunk_index"].append(index)
            cols["chunk_count"].append(len(pieces))
            cols["text"].append(piece)
            cols["text_hash"].append(text_hash(piece))
            for name in _CARRIED:
                cols[name].append(carried[name][row])
    return pa.table(cols, schema=CHUNK_SCHEMA)


def embedded_schema(dim: int) -> pa.Schema:
    """CHUNK_SCHEMA plus the `vector` column that `with_vectors` adds."""
    return CHUNK_SCHEMA.append(pa.field("vector", pa.list_(pa.float32(), dim)))


def with_vectors(chunks: pa.Table, vectors) -> pa.Table:
    """`chunks` plus a fixed-size float32 `vector` column."""
    n, dim = vectors.shape
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return chunks.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, dim))
