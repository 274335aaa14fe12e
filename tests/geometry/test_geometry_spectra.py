"""P11 RankMe / alpha-ReQ on planted spectra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geometry import spectra


def _gaussian(n, variances, seed=0):
    z = jax.random.normal(jax.random.key(seed), (n, len(variances)))
    return z * jnp.sqrt(jnp.asarray(variances))


def test_rankme_isotropic_gaussian_is_full_rank():
    z = _gaussian(20000, np.ones(64))
    assert float(spectra.rankme(z)) == pytest.approx(64, rel=0.01)
    assert float(spectra.rankme_pca(z)) == pytest.approx(64, rel=0.01)


def test_rankme_low_rank_data():
    k1, k2 = jax.random.split(jax.random.key(1))
    z = jax.random.normal(k1, (4000, 10)) @ jnp.linalg.qr(jax.random.normal(k2, (64, 10)))[0].T
    assert float(spectra.rankme(z)) == pytest.approx(10, rel=0.01)
    assert float(spectra.rankme_pca(z)) == pytest.approx(10, rel=0.01)


def test_the_two_rankme_definitions_differ_on_uncentred_data():
    """Garrido's RankMe sees the mean direction; the P11 (centred covariance) one does not."""
    z = _gaussian(5000, np.ones(16)) + 20.0
    assert float(spectra.rankme(z)) < 3.0
    assert float(spectra.rankme_pca(z)) == pytest.approx(16, rel=0.02)


def test_rankme_formula_on_a_known_spectrum():
    values = jnp.asarray([3.0, 1.0])
    p = np.array([0.75, 0.25]) + 1e-7
    assert float(spectra.rankme_from_spectrum(values)) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5])
def test_alpha_req_recovers_power_law_spectrum(alpha):
    lam = jnp.arange(1, 1025, dtype=jnp.float32) ** -alpha
    fit = spectra.alpha_req_from_spectrum(lam)
    assert float(fit["alpha"]) == pytest.approx(alpha, abs=1e-3)
    assert float(fit["r2"]) > 0.999


def test_alpha_req_from_data_with_planted_power_law():
    lam = np.arange(1, 513) ** -1.0
    z = _gaussian(6000, lam, seed=3)
    fit = spectra.alpha_req(z)
    assert float(fit["alpha"]) == pytest.approx(1.0, abs=0.02)
    assert float(fit["r2"]) > 0.99


def test_alpha_req_weighted_fit_matches_numpy_reference():
    """The weighted (1 / rank) least squares of the alpha-ReQ / P11 code, solved with numpy."""
    rng = np.random.default_rng(0)
    lam = np.sort(rng.uniform(0.1, 1, 300))[::-1] * np.arange(1, 301) ** -1.2
    trange = np.arange(11, 100)
    y = np.log(lam[trange])
    ranks = trange + 1.0
    x = np.stack([-np.log(ranks), np.ones_like(ranks)], 1)
    w = (1.0 / ranks)[:, None]
    b = np.linalg.solve(x.T @ (x * w), (w * x).T @ y)
    fit = spectra.alpha_req_from_spectrum(jnp.asarray(lam, jnp.float32))
    assert float(fit["alpha"]) == pytest.approx(b[0], rel=1e-4)
    assert float(fit["intercept"]) == pytest.approx(b[1], rel=1e-4, abs=1e-4)


def test_spectra_vmap_over_checkpoints():
    zs = jnp.stack([_gaussian(500, np.ones(8), seed=s) for s in range(3)])
    values = jax.vmap(spectra.rankme_pca)(zs)
    assert values.shape == (3,) and np.all(np.asarray(values) > 7.5)


def test_spectra_reject_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        spectra.rankme(np.zeros(10))
    with pytest.raises(ValueError, match="fit_ranks"):
        spectra.alpha_req_from_spectrum(jnp.ones(10), fit_ranks=(12, 100))


@pytest.mark.parametrize("shape", [(3000, 5), (5, 3000), (40, 40)])
def test_singular_values_never_allocate_the_long_side_squared(shape):
    z = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(spectra.singular_values(jnp.asarray(z)),
                               np.linalg.svd(z, compute_uv=False),
                               rtol=1e-4)
    long_side = max(shape)
    if shape[0] != shape[1]:  # JAX's CPU SVD would allocate U of long_side x long_side
        assert f"{long_side}x{long_side}" not in jax.jit(spectra.singular_values).lower(z).as_text()
