"""The two offline models load through fastembed's own loader and give the reference vectors."""

import numpy as np

from agentmem_dagster.engine.embedding import Embedder


def test_minilm_matches_the_sentence_transformers_reference(onnx_model):
    embedder = Embedder(*onnx_model)
    vector = embedder.embed(["hello world"])[0]
    assert vector.shape == (384,)
    np.testing.assert_allclose(vector[:5], [-0.03448, 0.03102, 0.00673, 0.02611, -0.03936], atol=1e-4)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5


def test_static_model_matches_its_reference(static_model):
    embedder = Embedder(*static_model)
    vector = embedder.embed(["hello world"])[0]
    assert vector.shape == (256,)
    np.testing.assert_allclose(vector[:5], [-0.05875, -0.01268, 0.07294, -0.02594, -0.02385], atol=1e-4)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-5


def test_length_sorted_batches_keep_input_order(onnx_model):
    texts = ["short", "a much longer sentence about the weather in Lisbon and a trip there", "mid length text"]
    batched = Embedder(*onnx_model, batch_size=2).embed(texts)
    one_by_one = np.stack([Embedder(*onnx_model, batch_size=1).embed([t])[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_a_missing_model_directory_names_the_setting(tmp_path):
    import pytest

    from agentmem_dagster.engine.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="nowhere.*cannot be loaded.*AGENTMEM_EMBED_MODEL_PATH"):
        Embedder("sentence-transformers/all-MiniLM-L6-v2", str(tmp_path / "nowhere")).embed(["x"])
    with pytest.raises(StoreUnavailable, match="'no/such-model' .* cannot be loaded.*not supported.*AGENTMEM_EMBED_MODEL"):
        Embedder("no/such-model", str(tmp_path)).embed(["x"])
