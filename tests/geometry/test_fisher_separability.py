"""FisherS against scikit-dimension 0.5.0: its reference fixtures (the authors' MATLAB code run in
Octave) and skdim run side by side on the benchmark manifolds, rtol 1e-6 in float64; the Lambert
W inversion against scipy and the sphere formula; the fully separable case."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

skdim = pytest.importorskip("skdim")
scipy_special = pytest.importorskip("scipy.special")

from geometry import fisher_separability as fs  # noqa: E402
from geometry import manifolds, skdim_reference  # noqa: E402

FX, ID, DUP = skdim_reference.load()
RTOL = 1e-6


@functools.lru_cache(maxsize=None)
def _manifold(name: str, seed: int, n: int = 400) -> np.ndarray:
    return np.asarray(manifolds.generate(name, n, seed), np.float64)


def _skdim_fit(x, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skdim.id.FisherS(**kwargs).fit(x)


@pytest.mark.parametrize("name", sorted(ID))
def test_matches_matlab_reference_fixtures(x64, name):
    ref = FX["matlab"][name]
    result = fs.fisher_s(ID[name])
    assert float(result.dimension) == pytest.approx(ref["fisher_n_single"], rel=RTOL)
    np.testing.assert_allclose(result.n_alpha, ref["fisher_n_alpha"], rtol=RTOL)
    assert not bool(result.lower_bound)


@pytest.mark.parametrize("name", ["M1_Sphere", "M7_Roll", "M10a_Cubic", "Mp1_Paraboloid", "M9_Affine"])
def test_matches_skdim_on_benchmark_manifolds(x64, name):
    for seed in (0, 1):
        x = _manifold(name, seed)
        ours, ref = fs.fisher_s(x), _skdim_fit(x)
        assert float(ours.dimension) == pytest.approx(ref.dimension_, rel=RTOL), (name, seed)
        np.testing.assert_allclose(ours.n_alpha, np.ravel(ref.n_alpha_), rtol=RTOL)
        np.testing.assert_allclose(ours.p_alpha, ref.p_alpha_, rtol=1e-12)  # counts / (N - 1)
        # skdim's separable_fraction_ sums over the wrong axis (per point); the documented
        # quantity, per alpha, is the fraction of points with inseparability 0
        np.testing.assert_allclose(ours.separable_fraction, np.mean(ref.p_alpha_ == 0, axis=1), rtol=RTOL)


def test_options_match_skdim(x64):
    x = _manifold("M10a_Cubic", 2, 300)
    alphas = np.linspace(0.5, 0.9, 9)
    for kwargs in (
        dict(conditional_number=3.0),
        dict(project_on_sphere=False),
        dict(limit_maxdim=True),
    ):
        ref = _skdim_fit(x, **kwargs).dimension_
        assert float(fs.fisher_s_dimension(x, **kwargs)) == pytest.approx(ref, rel=RTOL), kwargs
    ref = _skdim_fit(x, alphas=alphas[None]).dimension_
    assert float(fs.fisher_s_dimension(x, alphas=alphas)) == pytest.approx(ref, rel=RTOL)
    # limit_maxdim caps at the number of features: a 20-D affine space seen in 20 features
    x = _manifold("M9_Affine", 0, 300)
    assert float(fs.fisher_s_dimension(x, limit_maxdim=True)) <= 20.0


def test_lambert_w_and_the_sphere_formula_inverse(x64):
    z = np.concatenate([[0.0], np.logspace(-12, 300, 400)])
    w = np.asarray(fs.lambert_w0(jnp.asarray(z)))
    np.testing.assert_allclose(w, scipy_special.lambertw(z).real, rtol=1e-13, atol=1e-300)
    # n(p, alpha) inverts the inseparability probability of the uniform n-sphere
    alphas = jnp.asarray(fs.default_alphas())
    for n in (2.0, 7.5, 40.0, 300.0):
        p = (1 - alphas**2) ** ((n - 1) / 2) / (alphas * jnp.sqrt(2 * jnp.pi * n))
        recovered = fs.dimension_from_inseparability(p, alphas)
        representable = np.asarray(p > 1e-150)  # p^2 must not underflow
        np.testing.assert_allclose(np.asarray(recovered)[representable], n, rtol=1e-10)
    assert bool(jnp.isnan(fs.dimension_from_inseparability(jnp.zeros(3), alphas[:3])).all())


def test_fully_separable_data_give_a_lower_bound_instead_of_nan(x64):
    """High dimension, few points: skdim returns nan; 'nan' keeps that, 'bound' returns the
    largest dimension N points can resolve (one inseparable ordered pair), flagged."""
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=(60, 100)), rng.normal(size=(400, 100))
    assert np.isnan(_skdim_fit(small).dimension_)
    assert np.isnan(float(fs.fisher_s(small, fully_separable="nan").dimension))
    with pytest.warns(UserWarning, match="lower bound"):
        bounded = fs.fisher_s(small)
    assert bool(bounded.lower_bound)
    n = small.shape[0]
    alphas = jnp.asarray(fs.default_alphas())
    expected = fs.dimension_from_inseparability(jnp.full(alphas.shape, 1 / (n * (n - 1))), alphas)
    assert float(bounded.dimension) == pytest.approx(float(jnp.max(expected)), rel=1e-12)
    with pytest.warns(UserWarning):
        larger_sample = float(fs.fisher_s(large).dimension)
    # more points resolve more: the bound grows with N and stays below the true dimension
    assert float(bounded.dimension) < larger_sample < 100


def test_pure_core_jits_and_vmaps(x64):
    xs = jnp.stack([jnp.asarray(_manifold("M7_Roll", s, 200)) for s in range(3)])
    alphas = jnp.asarray(fs.default_alphas())
    batched = jax.vmap(lambda x: fs.fisher_s_from_points(x, alphas).dimension)(xs)
    single = [float(fs.fisher_s_dimension(np.asarray(x))) for x in xs]
    np.testing.assert_allclose(batched, single, rtol=1e-12)
    blocked = fs.fisher_s(np.asarray(xs[0]), block_size=7).p_alpha
    np.testing.assert_array_equal(blocked, fs.fisher_s(np.asarray(xs[0])).p_alpha)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fs.fisher_s(np.arange(10.0)), "2-D"),
        (lambda: fs.fisher_s(np.full((10, 3), np.nan)), "NaN or inf"),
        (lambda: fs.fisher_s(np.ones((1, 3))), "at least 2 points"),
        (lambda: fs.fisher_s(np.ones((10, 1))), "at least 2 features"),
        (lambda: fs.fisher_s(np.eye(5), alphas=[0.5, 1.2]), "alphas"),
        (lambda: fs.fisher_s(np.eye(5), alphas=[0.8, 0.6]), "alphas"),
        (lambda: fs.fisher_s(np.eye(5), conditional_number=0), "conditional_number"),
        (lambda: fs.fisher_s(np.eye(5), fully_separable="zero"), "fully_separable"),
        (lambda: fs.fisher_s(np.eye(5), block_size=0), "block_size"),
    ],
)
def test_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
