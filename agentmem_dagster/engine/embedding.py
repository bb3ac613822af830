"""fastembed wrapper: one model per process, length-sorted batches."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import StoreUnavailable, detail

# Texts per model call, by measurement here (BENCHMARKS.md): a transformer is fastest with
# small length-sorted batches (8-32 alike, 64+ slower); a static model with large ones
# (16 -> ~1k texts/s, 1024 -> ~5k texts/s), its per-call overhead dominating.
TRANSFORMER_BATCH = 16
STATIC_BATCH = 1024

# The window the sentence-transformers model was trained for; fastembed would silently
# truncate at 512, so chunking keeps every chunk inside this many tokens (specials included).
DEFAULT_MAX_TOKENS = 256

_MODELS: dict[tuple, object] = {}
_MODELS_LOCK = threading.Lock()


def load_model(model_name: str, model_path: str | None = None, threads: int | None = None):
    """Load (once per process) a fastembed TextEmbedding, from a local directory when given."""
    key = (model_name, model_path, threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from fastembed import TextEmbedding  # heavy import: only where a model is needed

            try:
                if model_path and not os.path.isdir(model_path):
                    raise FileNotFoundError(f"no directory {model_path!r}")
                kwargs = {"specific_model_path": model_path} if model_path else {}
                _MODELS[key] = TextEmbedding(model_name, threads=threads, **kwargs)
            except Exception as exc:
                where = f" from {model_path!r}" if model_path else ""
                raise StoreUnavailable(
                    f"the embedding model {model_name!r}{where} cannot be loaded ({detail(exc)}): set "
                    "AGENTMEM_EMBED_MODEL to a fastembed model name and AGENTMEM_EMBED_MODEL_PATH to its "
                    "local directory (or unset it to download the model)."
                ) from exc
        return _MODELS[key]


@dataclass(frozen=True)
class ModelId:
    """A model is its name plus a fingerprint of its weights: the same name with other weights
    is another model (its cache entries and its index are its own)."""

    name: str
    path: str | None
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.name}@{self.fingerprint[:16]}"


_FINGERPRINTS: dict[tuple, str] = {}


def weights_fingerprint(directory: str | Path) -> str:
    """sha256 over the model directory's files (names and contents; the checksum list aside),
    computed once per process for files of the same sizes and times."""
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    stamp = (str(Path(directory).resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for path in files:
            digest.update(str(path.relative_to(directory)).encode() + b"\0")
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        _FINGERPRINTS[stamp] = digest.hexdigest()
    return _FINGERPRINTS[stamp]


def model_identity(name: str, path: str | None = None) -> ModelId:
    """The identity of a model: from its local directory, or from the directory fastembed
    downloaded it to (which loads it)."""
    directory = path or str(load_model(name, None).model._model_dir)
    return ModelId(name, path, weights_fingerprint(directory))


class Embedder:
    """Embeds texts in batches sorted by length, so each batch pads to a similar length."""

    def __init__(
        self,
        model_name: str,
        model_path: str | None = None,
        *,
        batch_size: int | None = None,
        threads: int | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ):
        self.model_name = model_name
        self.model_path = model_path
        self.batch_size = batch_size
        self.threads = threads
        self.max_tokens = max_tokens
        self._tokenizer = None
        self._dim: int | None = None
        self._identity: ModelId | None = None

    @property
    def model(self):
        return load_model(self.model_name, self.model_path, self.threads)

    @property
    def identity(self) -> ModelId:
        if self._identity is None:
            directory = self.model_path or str(self.model.model._model_dir)
            self._identity = ModelId(self.model_name, self.model_path, weights_fingerprint(directory))
        return self._identity

    @property
    def model_key(self) -> str:
        """What the embedding cache and the index know this model by: name and weights."""
        return self.identity.key

    @property
    def is_static(self) -> bool:
        return type(self.model.model).__name__ == "StaticTextEmbedding"

    @property
    def effective_batch_size(self) -> int:
        """The configured batch size, or the measured best for this kind of model."""
        return self.batch_size or (STATIC_BATCH if self.is_static else TRANSFORMER_BATCH)

    @property
    def tokenizer(self):
        """The model's own tokenizer, without truncation or padding (for counting and chunking)."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self.model.model.tokenizer.to_str())
            tok.no_truncation()
            tok.no_padding()
            self._tokenizer = tok
        return self._tokenizer

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def _sort_keys(self, texts: list[str]) -> list[int]:
        """Token counts for a transformer, whose batches pad to their longest text (counting
        costs ~2% of embedding; sorting by characters leaves a third of the gain); character
        counts for a static model, where tokenizing is most of the work."""
        if self.is_static:
            return [len(t) for t in texts]
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def embed(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Vectors for `texts` in their order, as a float32 (n, dim) array."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = np.argsort(self._sort_keys(texts), kind="stable")
        batch_size = self.effective_batch_size
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = np.asarray(
                list(self.model.embed([texts[i] for i in idx], batch_size=len(idx))),
                dtype=np.float32,
            )
            if out is None:
                out = np.empty((len(texts), batch.shape[1]), dtype=np.float32)
            out[idx] = batch
            if progress:
                progress(len(idx))
        return out


class EmbeddingCache:
    """Vectors already computed, keyed by model and text hash (kept in LibSQL), so unchanged
    text is never embedded twice."""

    def __init__(self, store, model_key: str):
        self.store = store
        self.model_key = model_key

    def get(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found = self.store.cached_vectors(self.model_key, hashes)
        return {h: np.frombuffer(v, dtype=np.float32) for h, v in found.items()}

    def put(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        self.store.cache_vectors(self.model_key, hashes, vectors)


def embed_cached(
    embedder: Embedder,
    texts: Sequence[str],
    hashes: Sequence[str],
    cache: EmbeddingCache | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors for `texts`, from the cache where present; returns (vectors, cache hits)."""
    if cache is None or not texts:
        return embedder.embed(texts, progress), 0
    known = cache.get(hashes)
    missing = [i for i, h in enumerate(hashes) if h not in known]
    fresh = embedder.embed([texts[i] for i in missing], progress) if missing else None
    dim = fresh.shape[1] if fresh is not None else len(next(iter(known.values())))
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, h in enumerate(hashes):
        if h in known:
            out[i] = known[h]
    if fresh is not None:
        out[missing] = fresh
        cache.put([hashes[i] for i in missing], fresh)
    if progress and len(known):
        progress(len(texts) - len(missing))
    return out, len(texts) - len(missing)
