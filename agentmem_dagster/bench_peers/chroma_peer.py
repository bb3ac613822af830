"""Peer: Chroma, a PersistentClient on disk, batched `add` of 1,000 memories.

    python chroma_peer.py LANDING STORE_DIR

Run by `agentmem bench --pipeline --peers` in Chroma's own virtual environment, which times
this whole process; prints one JSON line: the memories read and the count Chroma holds."""

import json
import sys

import chromadb
from _landing import metadata, read_memories, text_embedding
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

BATCH = 1000


class FastembedFunction(EmbeddingFunction[Documents]):
    """The pipeline's model, from its local directory (Chroma's own fastembed function takes
    no local path)."""

    def __init__(self):
        self.model = text_embedding()

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.model.embed(list(input)))


def main(landing: str, store: str) -> None:
    records = read_memories(landing)
    client = chromadb.PersistentClient(path=store, settings=chromadb.Settings(anonymized_telemetry=False))
    collection = client.create_collection("memories", embedding_function=FastembedFunction(), metadata={"hnsw:space": "cosine"})
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        collection.add(
            ids=[r["memory_id"] for r in batch], documents=[r["content"] for r in batch],
            metadatas=[metadata(r) for r in batch],
        )
    stored = client.get_collection("memories").count()  # read back from the store
    print(json.dumps({"peer": "chroma", "version": chromadb.__version__, "memories": len(records), "stored": stored}))


if __name__ == "__main__":
    main(*sys.argv[1:])
