"""The model alone on a random sample of a store's distinct chunk texts, best batching (the
embed-only ceiling of a migration; BENCHMARKS.md, "Lifecycle").

    python benchmarks/ceiling_sample.py $AGENTMEM_HOME/memories.db 2000
"""

import json
import os
import random
import sqlite3
import sys
import time

from agentmem_dagster.engine.embedding import Embedder


def main(db: str, n: int) -> dict:
    rows = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT text FROM chunks")
    texts = sorted({row[0] for row in rows})
    random.Random(0).shuffle(texts)
    embedder = Embedder(os.environ["AGENTMEM_EMBED_MODEL"], os.environ.get("AGENTMEM_EMBED_MODEL_PATH"))
    embedder.embed(["warm up the model"])
    started = time.perf_counter()
    embedder.embed(texts[:n])
    seconds = time.perf_counter() - started
    return {"distinct_texts": len(texts), "sample": n, "seconds": round(seconds, 2),
            "texts_per_s": round(n / seconds, 1), "load": os.getloadavg()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
