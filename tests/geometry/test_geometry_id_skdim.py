"""Every global estimator against scikit-dimension 0.5.0 run side by side on the benchmark
manifolds (our generator, several seeds), rtol 1e-4 in float64."""

import functools
import warnings

import numpy as np
import pytest

skdim = pytest.importorskip("skdim")

from geometry import intrinsic_dim as gid  # noqa: E402
from geometry import manifolds  # noqa: E402

RTOL = 1e-4
# skdim's CorrInt counts pairs below r with expanded-form distances; r is a median of k-th
# neighbour distances and often exactly a mutual pair's distance, so skdim counts such a tied
# pair or not by rounding. We count exact distances (see test_corr_int_exact_pair_counts), which
# can differ by a pair or two: ~2e-4 relative at N = 600.
RTOL_BY_ESTIMATOR = {"CorrInt": 1e-3}
SEEDS = (0, 1, 2)
MANIFOLDS = ("M1_Sphere", "M7_Roll", "M10a_Cubic", "Mp1_Paraboloid")
N = 600


@functools.lru_cache(maxsize=None)
def _data(name: str, seed: int, n: int = N) -> np.ndarray:
    return np.asarray(manifolds.generate(name, n, seed), dtype=np.float64)


def _skdim(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


ESTIMATORS = {
    "TwoNN-linear": (lambda x: gid.twonn(x), lambda x: skdim.id.TwoNN().fit(x).dimension_),
    "TwoNN-mle": (lambda x: gid.twonn(x, method="mle"), lambda x: skdim.id.TwoNN(method="mle").fit(x).dimension_),
    "MLE": (lambda x: gid.mle(x), lambda x: skdim.id.MLE().fit(x).dimension_),
    "MLE-unbiased-median": (
        lambda x: gid.mle(x, 10, unbiased=True, comb="median"),
        lambda x: skdim.id.MLE(unbiased=True).fit(x, n_neighbors=10, comb="median").dimension_,
    ),
    "MLE-global": (
        lambda x: gid.mle_global(x),
        lambda x: skdim.id.MLE(neighborhood_based=False).fit(x).dimension_,
    ),
    "MOM": (lambda x: gid.mom(x), lambda x: skdim.id.MOM().fit(x).dimension_),
    "TLE": (lambda x: gid.tle(x), lambda x: skdim.id.TLE().fit(x).dimension_),
    "MADA": (lambda x: gid.mada(x), lambda x: skdim.id.MADA().fit(x).dimension_),
    "CorrInt": (lambda x: gid.corr_int(x), lambda x: skdim.id.CorrInt().fit(x).dimension_),
    "MiND_MLi": (lambda x: gid.mind_ml(x, ver="MLi"), lambda x: skdim.id.MiND_ML(ver="MLi").fit(x).dimension_),
    "GRIDE": (lambda x: gid.gride(x)[0], lambda x: skdim.id.GRIDE().fit(x).dimension_),
    "GRIDE-n1=4": (lambda x: gid.gride(x, 4)[0], lambda x: skdim.id.GRIDE(n1=4).fit(x).dimension_),
}
ESTIMATORS.update(
    {
        f"lPCA-{ver}": (
            functools.partial(lambda x, v: gid.lpca(x, v), v=ver),
            functools.partial(lambda x, v: skdim.id.lPCA(ver=v).fit(x).dimension_, v=ver),
        )
        for ver in gid.LPCA_VERSIONS
    }
)


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_estimator_matches_skdim_on_benchmark_manifolds(x64, estimator):
    ours_fn, ref_fn = ESTIMATORS[estimator]
    for name in MANIFOLDS:
        for seed in SEEDS:
            x = _data(name, seed)
            ours, ref = float(ours_fn(x)), float(_skdim(lambda: ref_fn(x)))
            rtol = RTOL_BY_ESTIMATOR.get(estimator, RTOL)
            assert ours == pytest.approx(ref, rel=rtol), f"{estimator} on {name} seed {seed}: {ours} vs {ref}"


def _ill_posed(estimator: str, x: np.ndarray) -> str | None:
    """Where skdim's number is decided by float rounding, so parity is not defined."""
    ev = np.asarray(gid.pca_spectrum(x))
    if estimator == "lPCA-Fan" and ev[0] / ev.sum() > 0.95:
        return "first PC holds > PFan of the variance: Fan's de-noised total is 0 up to rounding"
    if estimator == "lPCA-maxgap" and np.any((ev > 0) & (ev < ev[0] * 1e-12)):
        return "rank-deficient spectrum: gaps between rounding-noise eigenvalues"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_estimator_matches_skdim_at_n2500_all_manifolds(x64, estimator):
    if estimator == "MLE-global":  # compared at N = 600 above and on skdim's fixtures
        pytest.skip("skdim's set() of kd-tree distances keeps a mutual pair twice when they differ by an ulp")
    ours_fn, ref_fn = ESTIMATORS[estimator]
    compared = 0
    for name in manifolds.SUITE:
        for seed in SEEDS:
            x = _data(name, seed, 2500)
            if _ill_posed(estimator, x):
                continue
            ours, ref = float(ours_fn(x)), float(_skdim(lambda: ref_fn(x)))
            rtol = RTOL_BY_ESTIMATOR.get(estimator, RTOL)
            assert ours == pytest.approx(ref, rel=rtol, nan_ok=True), f"{estimator} on {name} seed {seed}"
            compared += 1
    assert compared > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gid.mle(np.random.default_rng(0).normal(size=(10, 3)), 1), "at least 2"),
        (lambda: gid.mle(np.random.default_rng(0).normal(size=(10, 3)), 10), "fewer points than neighbours"),
        (lambda: gid.twonn(np.arange(10.0)), "2-D"),
        (lambda: gid.twonn(np.full((10, 3), np.nan)), "NaN or inf"),
        (lambda: gid.twonn(np.ones((10, 3)), discard_fraction=1.5), "discard_fraction"),
        (lambda: gid.twonn(np.ones((10, 3)), method="ols"), "method"),
        (lambda: gid.tle(np.random.default_rng(0).normal(size=(10, 3)), 1), "at least 2"),
        (lambda: gid.mom(np.random.default_rng(0).normal(size=(50, 3))), "fewer points than neighbours"),
        (lambda: gid.corr_int(np.random.default_rng(0).normal(size=(50, 3)), 20, 10), "k1 < k2"),
        (lambda: gid.lpca(np.random.default_rng(0).normal(size=(50, 3)), "MP"), "ver"),
        (lambda: gid.mle(np.random.default_rng(0).normal(size=(50, 3)), comb="max"), "comb"),
    ],
)
def test_estimators_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_duplicates_policy_twonn_drops_and_mle_is_zero_unless_excluded(x64):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 3))
    x = np.concatenate([base, base[:20]])
    ref = _skdim(lambda: skdim.id.TwoNN().fit(x).dimension_)
    assert float(gid.twonn(x)) == pytest.approx(ref, rel=1e-9)  # drops the 40 points, like skdim
    assert float(gid.mle(x)) == 0.0  # skdim's behaviour: log(R_k / 0) = inf -> harmonic mean 0
    assert float(gid.mle(x, exclude_duplicates=True)) == pytest.approx(float(gid.mle(base)), rel=0.05)
    assert 2.5 < float(gid.twonn(x, exclude_duplicates=True)) < 3.5


@pytest.mark.parametrize("n", [450, 500, 130])
def test_twonn_float32_keeps_as_many_ratios_as_float64(n):
    """floor(N * 0.9) in float32 must equal Python's float64 count (e.g. 450 * 0.9 = 405)."""
    x = np.asarray(manifolds.generate("M7_Roll", n, seed=5), np.float64)
    ref = _skdim(lambda: skdim.id.TwoNN().fit(x).dimension_)
    assert float(gid.twonn(x.astype(np.float32))) == pytest.approx(ref, rel=1e-4)
