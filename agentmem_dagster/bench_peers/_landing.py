"""What both peers share: the landing files' memories, and the model the pipeline uses."""

import gzip
import json
import os
from pathlib import Path


def read_memories(landing: str) -> list[dict]:
    """Every record of `<landing>/<day>/*.jsonl[.gz]`, day by day, file by file."""
    out = []
    for path in sorted(Path(landing).glob("*/*.jsonl*")):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        out.extend(json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip())
    return out


def text_embedding():
    """The pipeline's model (AGENTMEM_EMBED_MODEL from AGENTMEM_EMBED_MODEL_PATH) through
    fastembed, with fastembed's default batching, as a naive user of it would."""
    from fastembed import TextEmbedding

    name = os.environ.get("AGENTMEM_EMBED_MODEL", "sentence-transformers/all-MiniLM-L6-v2")
    path = os.environ.get("AGENTMEM_EMBED_MODEL_PATH")
    return TextEmbedding(name, **({"specific_model_path": path} if path else {}))


def metadata(record: dict) -> dict:
    """The record's scope and time, as flat metadata."""
    return {key: record[key] for key in ("user_id", "agent_id", "session_id", "role", "created_at") if record.get(key)}
