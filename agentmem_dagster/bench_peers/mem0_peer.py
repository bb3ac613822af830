"""Peer: Mem0 with `infer=False` (each memory embedded and stored as given, no LLM), one
`add` per memory, into a local embedded Qdrant on disk.

    python mem0_peer.py LANDING STORE_DIR

Run by `agentmem bench --pipeline --peers` in Mem0's own virtual environment, which times
this whole process; prints one JSON line: the memories read and the count Mem0 holds.
Offline, Qdrant's BM25 sparse encoder (a hub model) fails to load and Mem0 goes on without
it, as it is written to: a little less work than Mem0 does online."""

import json
import os
import sys
from importlib.metadata import version

from _landing import metadata, read_memories, text_embedding

os.environ.setdefault("MEM0_TELEMETRY", "False")
if len(sys.argv) == 3:
    os.environ.setdefault("MEM0_DIR", os.path.join(sys.argv[2], "mem0-dir"))  # not ~/.mem0
os.environ.setdefault("OPENAI_API_KEY", "unused")  # the default LLM client is built, never called (infer=False)

from mem0 import Memory  # noqa: E402
from mem0.embeddings.base import EmbeddingBase  # noqa: E402
from mem0.utils.factory import EmbedderFactory  # noqa: E402

MODEL = text_embedding()
DIM = len(next(iter(MODEL.embed(["dimension probe"]))))


class LocalFastEmbed(EmbeddingBase):
    """Mem0's own fastembed embedder (`mem0.embeddings.fastembed`) loads a model by name from
    the hub only, and its config accepts no other provider name: this small wrapper, the same
    embedder on the pipeline's model from its local directory, takes its place in Mem0's
    embedder factory under the name "fastembed"."""

    def __init__(self, config=None):
        super().__init__(config)
        self.config.embedding_dims = DIM

    def embed(self, text, memory_action=None):
        return next(iter(MODEL.embed(text.replace("\n", " ")))).tolist()  # as Mem0's fastembed embedder


EmbedderFactory.provider_to_class["fastembed"] = f"{__name__}.LocalFastEmbed"


def scope(record: dict) -> dict:
    """The record's metadata without the identity fields, which Mem0 takes as arguments."""
    return {k: v for k, v in metadata(record).items() if k not in ("user_id", "agent_id")}


def main(landing: str, store: str) -> None:
    records = read_memories(landing)
    memory = Memory.from_config({
        "embedder": {"provider": "fastembed", "config": {"embedding_dims": DIM}},
        "vector_store": {"provider": "qdrant", "config": {
            "collection_name": "memories", "path": os.path.join(store, "qdrant"),
            "embedding_model_dims": DIM, "on_disk": True,
        }},
        "history_db_path": os.path.join(store, "history.db"),
    })
    for r in records:
        # Mem0 skips "system" messages: every memory goes in as a user or assistant message,
        # its own role kept in the metadata
        role = "assistant" if r.get("role") == "assistant" else "user"
        memory.add(
            [{"role": role, "content": r["content"]}], user_id=r["user_id"], agent_id=r.get("agent_id"),
            run_id=r.get("session_id"), metadata={"memory_id": r["memory_id"], **scope(r)}, infer=False,
        )
    stored = memory.vector_store.client.count(collection_name="memories", exact=True).count  # read back
    print(json.dumps({"peer": "mem0", "version": version("mem0ai"), "memories": len(records), "stored": stored}))


if __name__ == "__main__":
    main(*sys.argv[1:])
