"""P41 effective number of features: F = exp(H), psi = F / N."""

import jax
import jax.numpy as jnp
import pytest

import core  # noqa: F401
from interp.features import effective_features, feature_distribution, superposition_ratio


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_uniform_activity_over_k_features_gives_k(k):
    codes = jnp.zeros((50, 32)).at[:, :k].set(2.5)
    assert float(effective_features(codes)) == pytest.approx(k, rel=1e-5)


def test_one_hot_gives_one_and_entropy_formula():
    one_hot = jnp.zeros((10, 16)).at[:, 5].set(jnp.arange(1.0, 11.0))
    assert float(effective_features(one_hot)) == pytest.approx(1.0, rel=1e-6)
    codes = jnp.abs(jax.random.normal(jax.random.key(0), (100, 8)))
    p = jnp.mean(codes, 0) / jnp.sum(jnp.mean(codes, 0))
    assert float(effective_features(codes)) == pytest.approx(
        float(jnp.exp(-jnp.sum(p * jnp.log(p)))), rel=1e-5)
    assert float(jnp.sum(feature_distribution(codes))) == pytest.approx(1.0, rel=1e-6)


def test_superposition_ratio_and_positions():
    # 12 features used evenly (one per token, cycling) by a 4-neuron layer: psi = 3 > 1
    codes = jax.nn.one_hot(jnp.arange(120) % 12, 24) * 0.7
    assert float(superposition_ratio(codes, 4)) == pytest.approx(3.0, rel=1e-5)
    # conv layers: positions summed first; a feature active at every position counts once
    conv = jnp.zeros((6, 5, 5, 10)).at[..., :2].set(1.0)
    assert float(effective_features(conv, position_axes=(1, 2))) == pytest.approx(2.0, rel=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_neurons"):
        superposition_ratio(jnp.ones((3, 4)), 0)
    with pytest.raises(ValueError, match="feature"):
        effective_features(jnp.ones((3, 4)), position_axes=(-1,))
    with pytest.raises(TypeError, match="floating"):
        effective_features(jnp.ones((3, 4), jnp.int32))
