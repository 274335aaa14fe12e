"""P12: weight-based head attribution recovers planted per-head features; direct feature
attribution per head and source position sums exactly to the SAE pre-activation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
from interp.head_attribution import (direct_feature_attribution, head_weight_attribution,
                                     model_direct_feature_attribution, sae_head_attribution)
from interp.models.gpt import GPT, preset
from interp.sae import ReLUSAE, TopKSAE
from interp.sae.synthetic import randomize_parameters
from interp.sae.training import init_b_dec, sae_optimizer, train_on_array

N_HEADS, D_HEAD = 4, 8


def test_weight_attribution_of_planted_rows():
    w = jax.random.normal(jax.random.key(0), (6, N_HEADS, D_HEAD))
    w = w * jnp.zeros((6, N_HEADS, 1)).at[jnp.arange(6), jnp.arange(6) % N_HEADS].set(1.0)
    a = head_weight_attribution(w.reshape(6, -1), N_HEADS)
    np.testing.assert_allclose(a, jax.nn.one_hot(jnp.arange(6) % N_HEADS, N_HEADS), atol=1e-7)
    mixed = head_weight_attribution(jnp.ones((1, N_HEADS * D_HEAD)), N_HEADS)
    np.testing.assert_allclose(mixed, 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="n_heads"):
        head_weight_attribution(w.reshape(6, -1), 5)
    with pytest.raises(TypeError, match="weights"):
        head_weight_attribution(jnp.ones((2, 8), jnp.int32), 2)


def test_trained_sae_attributes_planted_head_features():
    """Sparse features, each living in one head's subspace of concatenated z; an SAE trained on
    it learns latents whose decoder (and encoder) mass sits in that head."""
    n_feat, d = 16, N_HEADS * D_HEAD
    key = jax.random.key(1)
    heads = jnp.arange(n_feat) % N_HEADS
    blocks = jax.random.normal(key, (n_feat, D_HEAD))
    atoms = jnp.zeros((n_feat, N_HEADS, D_HEAD)).at[jnp.arange(n_feat), heads].set(blocks)
    atoms = atoms.reshape(n_feat, d)
    atoms = atoms / jnp.linalg.norm(atoms, axis=-1, keepdims=True)
    k1, k2 = jax.random.split(jax.random.key(2))
    active = jax.random.bernoulli(k1, 2 / n_feat, (8192, n_feat))
    codes = active * jax.random.uniform(k2, (8192, n_feat), minval=0.5, maxval=1.5)
    x = codes @ atoms
    sae = TopKSAE(d, 32, rngs=nnx.Rngs(0), k=2, dead_steps=100)
    init_b_dec(sae, x[:1024], "mean")
    train_on_array(sae, x, sae_optimizer(3e-3), steps=1500, batch_size=256)
    learned = sae.W_dec[...] / jnp.linalg.norm(sae.W_dec[...], axis=-1, keepdims=True)
    match = jnp.argmax(atoms @ learned.T, axis=-1)
    assert float(jnp.mean(jnp.max(atoms @ learned.T, axis=-1))) > 0.9
    a = sae_head_attribution(sae, N_HEADS, "decoder")[match]  # the paper's attribution
    np.testing.assert_array_equal(jnp.argmax(a, -1), heads)
    share = a[jnp.arange(n_feat), heads]
    assert float(jnp.mean(share)) > 0.8 and float(jnp.min(share)) > 0.7
    # the encoder also cancels interference from other heads, so its shares are less sharp;
    # its largest share still points at the planted head for most features
    a = sae_head_attribution(sae, N_HEADS, "encoder")[match]
    assert float(jnp.mean(jnp.argmax(a, -1) == heads)) >= 0.85
    untrained = sae_head_attribution(TopKSAE(d, 32, rngs=nnx.Rngs(0), k=2), N_HEADS)
    assert float(jnp.mean(jnp.max(untrained, -1))) < 0.5  # a random row is spread over heads


def test_direct_attribution_sums_to_pre_activation_in_gpt():
    model = GPT(preset("tiny", vocab_size=64, n_ctx=16, n_heads=N_HEADS, d_head=D_HEAD),
                nnx.Rngs(0))
    sae = ReLUSAE(N_HEADS * D_HEAD, 48, rngs=nnx.Rngs(1))
    randomize_parameters(sae, jax.random.key(3))
    tokens = jax.random.randint(jax.random.key(4), (2, 12), 0, 64)
    out = model_direct_feature_attribution(model, tokens, 1, sae, features=[0, 5, 47])
    assert out["terms"].shape == (2, 12, N_HEADS, 12, 3)
    total = out["terms"].sum((2, 3)) + out["constant"]
    np.testing.assert_allclose(total, out["pre_activation"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["per_head"].sum(2) + out["constant"], out["pre_activation"],
                               rtol=1e-5, atol=1e-5)
    # causal: no contribution from source positions after the query
    future = jnp.triu(jnp.ones((12, 12), bool), k=1)[None, :, None, :, None]
    assert float(jnp.max(jnp.abs(jnp.where(future, out["terms"], 0.0)))) == 0.0
    # the per-head term is what that head alone contributes: ablating it removes exactly it
    from interp.capture import Intervention, run_with_hooks
    _, cache = run_with_hooks(model, tokens, capture=("blocks.1.attn.hook_z",),
                              interventions={"blocks.1.attn.hook_z": Intervention.ablate_head(2)})
    z = cache["blocks.1.attn.hook_z"].reshape(2, 12, -1)
    np.testing.assert_allclose(sae.pre_activation(z)[..., jnp.array([0, 5, 47])],
                               out["pre_activation"] - out["per_head"][:, :, 2], rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="d_in"):
        model_direct_feature_attribution(model, tokens, 1, ReLUSAE(16, 8, rngs=nnx.Rngs(0)))


def test_direct_attribution_validates_shapes():
    pattern = jnp.ones((1, 2, 3, 3)) / 3
    v = jnp.ones((1, 3, 2, 4))
    with pytest.raises(ValueError, match="w_enc"):
        direct_feature_attribution(pattern, v, jnp.ones((7, 2)), jnp.zeros(2), jnp.zeros(8))
    with pytest.raises(ValueError, match="v "):
        direct_feature_attribution(pattern, jnp.ones((1, 3, 3, 4)), jnp.ones((8, 2)),
                                   jnp.zeros(2), jnp.zeros(8))
    with pytest.raises(ValueError, match="pattern"):
        direct_feature_attribution(pattern[0], v, jnp.ones((8, 2)), jnp.zeros(2), jnp.zeros(8))
