"""ESS against scikit-dimension 0.5.0: its reference fixtures (R intrinsicDimension), skdim run
side by side (pointwise, rtol 1e-6 in float64, versions 'a' and 'b', d = 1 and d = 2 with
skdim's own random groups replayed), the closed-form reference curve, and known dimensions."""

import functools
import math
import warnings

import jax
import numpy as np
import pytest

skdim = pytest.importorskip("skdim")

from geometry import ess as ess_mod  # noqa: E402
from geometry import manifolds, skdim_reference  # noqa: E402
from geometry.knn import knn  # noqa: E402

FX, ID, DUP = skdim_reference.load()
RTOL = 1e-6


@functools.lru_cache(maxsize=None)
def _manifold(name: str, seed: int, n: int) -> np.ndarray:
    return np.asarray(manifolds.generate(name, n, seed), np.float64)


def _skdim_fit(x, n_neighbors, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skdim.id.ESS(**kwargs).fit(x, n_neighbors=n_neighbors)


@pytest.mark.parametrize("name", sorted(ID))
def test_matches_r_reference_fixtures(x64, name):
    ref = FX["intrinsicDimension"][name]
    patch = ID[name][:30]
    assert float(ess_mod.ess_patch(patch, ver="a")[0]) == pytest.approx(ref["ess_a_n30"], rel=RTOL)
    assert float(ess_mod.ess_patch(patch, ver="b")[0]) == pytest.approx(ref["ess_b_n30"], rel=RTOL)


@pytest.mark.parametrize("ver, d", [("a", 1), ("a", 2), ("a", 3), ("b", 1)])
def test_reference_curve_matches_skdim_recursion(ver, d):
    ours = ess_mod.expected_skewness(ver, d, 146)
    ref = skdim.id.ESS(ver=ver, d=d)._essReference(146)
    np.testing.assert_allclose(ours, ref, rtol=1e-11, atol=0)


@pytest.mark.parametrize("ver", ["a", "b"])
def test_pointwise_matches_skdim_default_neighbourhood(x64, ver):
    """k = 100 neighbours, d = 1: all 4950 pairs, deterministic in both."""
    x = _manifold("M7_Roll", 0, 104)
    ref = _skdim_fit(x, 100, ver=ver)
    dims, values = ess_mod.ess_pointwise(x, ver=ver)
    np.testing.assert_allclose(values, ref.essval_, rtol=RTOL)
    np.testing.assert_allclose(dims, ref.dimension_pw_, rtol=RTOL)
    assert float(ess_mod.ess(x, ver=ver)) == pytest.approx(ref.dimension_, rel=RTOL)


@pytest.mark.parametrize("name", ["M1_Sphere", "M10a_Cubic", "Mp1_Paraboloid"])
def test_global_matches_skdim_on_benchmark_manifolds(x64, name):
    for seed in (0, 1):
        x = _manifold(name, seed, 120)
        for ver in ("a", "b"):
            ref = _skdim_fit(x, 30, ver=ver)
            assert float(ess_mod.ess(x, 30, ver=ver)) == pytest.approx(ref.dimension_, rel=RTOL), (name, seed, ver)
    ref = skdim.id.ESS().fit(x, n_neighbors=30, comb="median").dimension_
    assert float(ess_mod.ess(x, 30, comb="median")) == pytest.approx(ref, rel=RTOL)


def test_d2_all_groups_and_replayed_random_groups_match_skdim(x64):
    x = _manifold("M10a_Cubic", 3, 45)
    # C(20, 3) = 1140 <= 5000: every group, deterministic
    ref = _skdim_fit(x, 20, d=2, random_state=0)
    np.testing.assert_allclose(ess_mod.ess_pointwise(x, 20, d=2)[0], ref.dimension_pw_, rtol=RTOL)
    # C(40, 3) = 9880 > 5000: skdim draws 5000 groups per point from one numpy Generator; replay it
    k, size = 40, 3
    rng = np.random.default_rng(0)
    every = ess_mod.all_groups(k, size)
    groups = np.stack([every[np.sort(rng.choice(math.comb(k, size), 5000, replace=False))] for _ in range(len(x))])
    ref = _skdim_fit(x, k, d=2, random_state=0)
    np.testing.assert_allclose(ess_mod.ess_pointwise(x, k, d=2, groups=groups)[0], ref.dimension_pw_, rtol=RTOL)
    # our own jax.random groups: same expectation, not the same draws
    ours = float(ess_mod.ess(x, k, d=2, key=jax.random.key(0)))
    assert ours == pytest.approx(ref.dimension_, rel=0.02)


def test_random_groups_are_distinct_sorted_and_uniform():
    groups = np.asarray(ess_mod.random_groups(jax.random.key(1), 6, 3, 40000))
    assert np.all(np.diff(groups, axis=1) > 0)
    _, counts = np.unique(groups, axis=0, return_counts=True)
    assert len(counts) == math.comb(6, 3)
    expected = 40000 / math.comb(6, 3)
    assert np.max(np.abs(counts - expected)) < 5 * np.sqrt(expected)  # 5 sigma


@pytest.mark.parametrize("d", [2, 3, 6])
def test_uniform_ball_patch_recovers_its_dimension(x64, d):
    """ESS is calibrated on the uniform ball: a large patch gives back d (exact groups)."""
    points = np.c_[skdim.datasets.hyperBall(150, d, random_state=d), np.zeros((150, 4))]
    for ver in ("a", "b"):
        dim, _ = ess_mod.ess_patch(points, ver=ver, max_groups=20000)
        assert float(dim) == pytest.approx(d, abs=0.1 * d), ver


def test_pointwise_equals_a_loop_over_patches(x64):
    x = _manifold("M7_Roll", 4, 80)
    _, idx = knn(x, 25)
    dims, values = ess_mod.ess_pointwise(x, 25, block_size=7)
    loop = [ess_mod.ess_patch(x[np.asarray(i)]) for i in idx]
    np.testing.assert_allclose(dims, [float(v[0]) for v in loop], rtol=1e-12)
    np.testing.assert_allclose(values, [float(v[1]) for v in loop], rtol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ess_mod.ess(np.arange(10.0)), "2-D"),
        (lambda: ess_mod.ess(np.full((10, 3), np.inf), 5), "NaN or inf"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(50, 3))), "fewer points than neighbours"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(50, 3)), 1), "at least 2"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(50, 1)), 10), "at least 2 features"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(50, 3)), 10, ver="c"), "ver"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(50, 3)), 10, ver="b", d=2), "only d = 1"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(50, 3)), 10, comb="max"), "comb"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(200, 3)), 150, d=2), "key"),
        (lambda: ess_mod.ess(np.random.default_rng(0).normal(size=(50, 3)), 10, groups=np.zeros((4, 3))), "groups"),
    ],
)
def test_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
