"""P34 semi-NMF: planted sparse F and non-negative G recovered; KL-targeted steering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import core  # noqa: F401
from interp.features import kl_steering_scale, semi_nmf, steering_direction


@pytest.fixture(scope="module")
def planted():
    d, n, k, per = 64, 2000, 6, 8
    kf, kg, km = jax.random.split(jax.random.key(0), 3)
    rows, cols = jnp.arange(k * per) % d, jnp.repeat(jnp.arange(k), per)
    F = jnp.zeros((d, k)).at[rows, cols].set(1.0) * jax.random.normal(kf, (d, k))
    G = jax.random.exponential(kg, (n, k)) * jax.random.bernoulli(km, 0.3, (n, k))
    return F, G, per / d


def _matched_cosines(F_true, F_est):
    a = F_true / jnp.linalg.norm(F_true, axis=0)
    b = F_est / jnp.maximum(jnp.linalg.norm(F_est, axis=0), 1e-12)
    c = np.asarray(a.T @ b)
    rows, cols = linear_sum_assignment(-c)
    return c[rows, cols]


@pytest.mark.parametrize("init", ["svd", "random"])
def test_planted_factors_recovered(planted, init):
    F, G, sparsity = planted
    result = semi_nmf(F @ G.T, 6, init=init, sparsity=sparsity, key=jax.random.key(3))
    assert bool(jnp.all(result.G >= 0))
    assert np.all(_matched_cosines(F, result.F) > 0.95)
    assert float(result.error) < 0.1
    assert int(jnp.max(jnp.sum(result.F != 0, axis=0))) <= int(np.ceil(sparsity * 64))


def test_kmeans_init_and_early_stopping(planted):
    F, G, sparsity = planted
    result = semi_nmf(F @ G.T, 6, init="kmeans", sparsity=sparsity, max_iter=100,
                      key=jax.random.key(1))
    assert bool(jnp.all(result.G >= 0)) and float(result.error) < 0.5
    # the first iterate always improves on +inf; no later one can improve by 1e9: stop at 2
    stopped = semi_nmf(F @ G.T, 6, sparsity=sparsity, patience=1, tol=1e9)
    assert int(stopped.n_iter) == 2


def test_kl_steering_hits_target():
    base = jax.random.normal(jax.random.key(0), (5, 30))
    direction = steering_direction(jax.random.normal(jax.random.key(1), (30, 4)), 2)
    assert float(jnp.linalg.norm(direction)) == pytest.approx(1.0, rel=1e-6)
    alpha, kl = kl_steering_scale(lambda a: base + a * direction * 3.0, 0.25, alpha_max=50.0)
    assert float(kl) == pytest.approx(0.25, rel=1e-3)
    assert 0.0 < float(alpha) < 50.0
    capped, _ = kl_steering_scale(lambda a: base + a * direction * 1e-3, 5.0, alpha_max=1.0)
    assert float(capped) == pytest.approx(1.0, rel=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="rank"):
        semi_nmf(jnp.ones((4, 5)), 9)
    with pytest.raises(ValueError, match="init"):
        semi_nmf(jnp.ones((4, 5)), 2, init="nndsvd")
    with pytest.raises(ValueError, match="matrix"):
        semi_nmf(jnp.ones((4, 5, 2)), 2)
    with pytest.raises(ValueError, match="index"):
        steering_direction(jnp.ones((4, 2)), 3)
