"""SAE training through core on harvested GPT activations: bitwise resume, scale folding,
SAELens export, spliced-in scores and P41 per layer on a (random) tiny GPT."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
from core.train import TrainConfig
from interp.activation_store import harvest
from interp.models.gpt import GPT, preset
from interp.sae import TopKSAE
from interp.sae.saelens_io import load_saelens
from interp.sae_experiment import (SAEConfig, SAEExperimentConfig, SourceConfig, build_sae,
                                   docstring_sentences, effective_features_per_layer,
                                   export_sae, spliced_lm_scores, train_sae)

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def gpt():
    return GPT(preset("tiny", vocab_size=64, d_model=16, d_mlp=32, n_ctx=16), nnx.Rngs(0))


@pytest.fixture(scope="module")
def store(gpt, tmp_path_factory):
    tokens = jax.random.randint(jax.random.key(1), (4, 8, 16), 0, 64)
    return harvest(gpt, tokens, tmp_path_factory.mktemp("store"), HOOK, shard_rows=200,
                   progress=False)


def _config(workdir, steps, arch="topk"):
    return SAEExperimentConfig(
        source=SourceConfig(hook=HOOK), sae=SAEConfig(architecture=arch, k=4, b_dec_sample=256),
        train=TrainConfig(steps=steps, batch_size=32, log_every=2, checkpoint_every=3,
                          workdir=str(workdir), progress=False, tensorboard=False),
        learning_rate=1e-2)


def test_sae_training_resumes_bitwise(store, tmp_path):
    """TopK + AuxK: besides the parameters, the dead-latent counters and step are state."""
    straight, _ = train_sae(_config(tmp_path / "a", 8), store)
    half, _ = train_sae(_config(tmp_path / "b", 4), store)
    resumed, _ = train_sae(_config(tmp_path / "b", 8), store)
    assert half.step == 4 and resumed.resumed_from == 4 and resumed.step == 8
    a, b = jax.device_get(straight.state), jax.device_get(resumed.state)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
    np.testing.assert_array_equal(np.asarray(b["rest"]["step"]), 8)
    moved = jax.device_get(half.state["params"]["W_dec"])
    assert not np.array_equal(np.asarray(moved), np.asarray(a["params"]["W_dec"]))


def test_export_folds_scale_and_round_trips(store, tmp_path):
    result, scale = train_sae(_config(tmp_path / "run", 6), store)
    assert scale == pytest.approx(store.input_scale(HOOK))
    x = jnp.asarray(next(store.chunks(HOOK, 64)))
    trained_recon = result.model(x * scale)
    exported = export_sae(result.model, scale, tmp_path / "saelens", meta={"hook_name": HOOK})
    np.testing.assert_allclose(exported(x), trained_recon / scale, rtol=1e-4, atol=1e-5)
    loaded = load_saelens(tmp_path / "saelens")
    np.testing.assert_allclose(loaded(x), exported(x), rtol=1e-6, atol=1e-6)


def test_spliced_scores_identity_and_zero(gpt):
    tokens = jax.random.randint(jax.random.key(2), (3, 12), 0, 64)

    class Identity(TopKSAE):  # reconstruction == input exactly
        def encode(self, x):
            return x

        def decode(self, z):
            return z

    scores = spliced_lm_scores(gpt, Identity(16, 16, rngs=nnx.Rngs(0), k=1), tokens, HOOK)
    assert scores["ce_sae"] == pytest.approx(scores["ce_clean"], abs=1e-6)
    assert scores["kl_sae"] == pytest.approx(0.0, abs=1e-6)
    assert scores["ce_score"] == pytest.approx(1.0, abs=1e-4)
    assert scores["kl_zero_ablation"] > 0

    class Zero(Identity):
        def decode(self, z):
            return jnp.zeros_like(z)

    zero = spliced_lm_scores(gpt, Zero(16, 16, rngs=nnx.Rngs(0), k=1), tokens, HOOK)
    assert zero["ce_score"] == pytest.approx(0.0, abs=1e-5)
    assert zero["kl_score"] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="hook"):
        spliced_lm_scores(gpt, Identity(16, 16, rngs=nnx.Rngs(0), k=1), tokens, "blocks.9.x")
    with pytest.raises(ValueError, match="tokens"):
        spliced_lm_scores(gpt, Identity(16, 16, rngs=nnx.Rngs(0), k=1), tokens[0], HOOK)


def test_effective_features_per_layer_bounded(gpt):
    tokens = jax.random.randint(jax.random.key(3), (8, 16), 0, 64)
    rows = effective_features_per_layer(gpt, tokens, SAEConfig(k=2, expansion=2), steps=30,
                                        batch_size=64)
    assert [r["layer"] for r in rows] == [0, 1]
    for r in rows:
        assert 1.0 <= r["effective_features"] <= 32 + 1e-3
        assert r["psi"] == pytest.approx(r["effective_features"] / 16)


def test_build_sae_and_sentences_validate():
    for arch in ("standard", "topk", "batchtopk", "jumprelu", "gated", "matching_pursuit"):
        assert build_sae(SAEConfig(architecture=arch, k=2), 8, 0).d_sae == 32
    with pytest.raises(ValueError, match="architecture"):
        build_sae(dataclasses.replace(SAEConfig(), architecture="dense"), 8, 0)
    sentences = docstring_sentences(5, max_files=20)
    assert len(sentences) == 5 and all(len(s) >= 20 for s in sentences)
