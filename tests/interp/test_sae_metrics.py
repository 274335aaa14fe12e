"""SAE metrics against hand-computed answers; spliced-in CE/KL on a toy linear model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import core  # noqa: F401
from interp.sae import metrics


def test_l0_dead_dense_firing():
    z = jnp.array([[1.0, 0.0, 0.0, 2.0], [0.5, 0.0, 0.0, 0.0], [3.0, 0.0, 1.0, 0.0]])
    assert float(metrics.l0(z)) == pytest.approx(5 / 3)
    np.testing.assert_allclose(metrics.firing_frequency(z), [1.0, 0.0, 1 / 3, 1 / 3])
    assert float(metrics.dead_fraction(z)) == pytest.approx(0.25)
    assert float(metrics.dense_fraction(z, density=0.5)) == pytest.approx(0.25)


def test_fvu_l2_ratio_and_shrinkage_bias():
    x = jax.random.normal(jax.random.key(0), (256, 8)) + 2.0
    assert float(metrics.fvu(x, x)) == pytest.approx(0.0, abs=1e-7)
    mean_only = jnp.broadcast_to(x.mean(0), x.shape)
    assert float(metrics.fvu(x, mean_only)) == pytest.approx(1.0, rel=1e-5)
    assert float(metrics.explained_variance(x, mean_only)) == pytest.approx(0.0, abs=1e-5)
    assert float(metrics.l2_ratio(x, 0.7 * x)) == pytest.approx(0.7, rel=1e-5)
    assert float(metrics.relative_reconstruction_bias(x, 0.7 * x)) == pytest.approx(0.7, rel=1e-5)
    noise = 0.1 * jax.random.normal(jax.random.key(1), x.shape)
    noise = noise - jnp.sum(noise * x, -1, keepdims=True) * x / jnp.sum(x * x, -1, keepdims=True)
    assert float(metrics.relative_reconstruction_bias(x, x + noise)) > 1.0


def test_spliced_scores_known_values():
    w = jax.random.normal(jax.random.key(2), (8, 11))

    def logits_with_replacement(acts):
        return acts @ w

    acts = jax.random.normal(jax.random.key(3), (4, 6, 8))
    targets = jnp.argmax(acts @ w, -1)
    perfect = metrics.spliced_scores(logits_with_replacement, acts, acts, targets)
    assert float(perfect["ce_score"]) == pytest.approx(1.0, abs=1e-6)
    assert float(perfect["kl_score"]) == pytest.approx(1.0, abs=1e-6)
    ablated = metrics.spliced_scores(logits_with_replacement, acts, jnp.zeros_like(acts), targets)
    assert float(ablated["ce_score"]) == pytest.approx(0.0, abs=1e-6)
    assert float(ablated["kl_score"]) == pytest.approx(0.0, abs=1e-6)
    half = metrics.spliced_scores(logits_with_replacement, acts, 0.5 * acts, targets)
    assert 0.0 < float(half["ce_score"]) < 1.0
    # uniform logits when ablated: CE_zero = log(vocab)
    assert float(ablated["ce_zero_ablation"]) == pytest.approx(np.log(11), rel=1e-6)


def test_dictionary_recovery_permutation_invariant():
    d = jax.random.normal(jax.random.key(4), (10, 6))
    perm = d[jax.random.permutation(jax.random.key(5), 10)] * 3.0
    assert float(metrics.dictionary_recovery(perm, d)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.dictionary_recovery(-d, d)) < 0.9


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        metrics.fvu(jnp.ones((3, 4)), jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.l0(jnp.array([[jnp.nan, 1.0]]))
    with pytest.raises(ValueError, match="density"):
        metrics.dense_fraction(jnp.ones((2, 2)), density=1.5)
    with pytest.raises(TypeError, match="targets"):
        metrics.spliced_scores(lambda a: a, jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones(2))
