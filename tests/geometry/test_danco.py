"""DANCo against scikit-dimension 0.5.0 and the R package intrinsicDimension.

- Deterministic parts to rtol 1e-6 in float64: the data's statistics (R fixtures), the integer
  estimate and its KL divergence given R's calibration, skdim's calibration balls (numpy
  RandomState path, ``skdim_cap=True`` for skdim's cap of the calibration dhat at k) except
  where skdim's L-BFGS-B stops at its integer start.
- The fractal estimate is the minimum of skdim's spline interpolant (checked on a dense grid of
  scipy's interp1d); skdim's own L-BFGS-B (tol 1e-3) lands within 0.02 of it.
- With independent calibrations (jax.random vs numpy) the estimates are random: ours and skdim
  must agree within 0.5 and both recover the known dimension within 0.5 (uniform balls, N = 500,
  D = 8 <= k so skdim's cap does not bind).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

skdim = pytest.importorskip("skdim")
interpolate = pytest.importorskip("scipy.interpolate")

from geometry import danco as dc  # noqa: E402
from geometry import intrinsic_dim as gid  # noqa: E402
from geometry import skdim_reference  # noqa: E402
from geometry.knn import knn  # noqa: E402

FX, ID, DUP = skdim_reference.load()
RTOL = 1e-6


def _skdim_fit(x, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skdim.id.DANCo(**kwargs).fit(x)


def _r_calibration(name):
    ref = FX["danco"][name]
    return dict(k=ref["k"], N=ref["N"], maxdim=len(ref["calibration"]), calibration_data=ref["calibration"])


@pytest.mark.parametrize("name", sorted(ID))
def test_statistics_integer_estimate_and_kl_match_r_fixtures(x64, name):
    ref = FX["danco"][name]
    cal = dc.DancoCalibration.from_skdim(_r_calibration(name))
    result = dc.danco(ID[name], ref["k"], ref["D"], calibration=cal, fractal=False)
    for field in dc.DancoStatistics._fields:
        assert float(getattr(result.statistics, field)) == pytest.approx(ref["nocal"][field], rel=RTOL), field
    assert float(result.dimension) == ref["dim_est"]
    assert float(result.kl_divergence) == pytest.approx(ref["kl_divergence"], rel=RTOL)


def test_fractal_estimate_is_the_minimum_of_skdims_interpolant(x64):
    name = "ball5_in10"
    ref = FX["danco"][name]
    cal = dc.DancoCalibration.from_skdim(_r_calibration(name))
    result = dc.danco(ID[name], ref["k"], ref["D"], calibration=cal)
    kl = np.asarray(result.kl)
    nodes = np.arange(1, ref["D"] + 1)
    spline = interpolate.interp1d(nodes, kl, kind="cubic", bounds_error=False, fill_value=(1, ref["D"] + 1))
    grid = np.linspace(ref["dim_est"] - 1, ref["dim_est"] + 1, 200001)
    assert float(result.dimension) == pytest.approx(grid[np.argmin(spline(grid))], abs=2e-5)
    skdim_fractal = _skdim_fit(ID[name], k=ref["k"], D=ref["D"], calibration_data=_r_calibration(name)).dimension_
    assert float(result.dimension) == pytest.approx(skdim_fractal, abs=0.02)  # L-BFGS-B, tol=1e-3


@pytest.mark.parametrize("order, kind, features", [(1, "linear", 2), (2, "quadratic", 3)])
def test_low_feature_counts_use_skdims_lower_order_interpolants(x64, order, kind, features):
    kl = np.asarray([5.0, 2.5, 1.9, 2.4, 3.9, 4.4])
    start = int(np.argmin(kl)) + 1
    ours = float(dc.fractal_minimum(jnp.asarray(kl), start, order))
    spline = interpolate.interp1d(np.arange(1, 7), kl, kind=kind)
    grid = np.linspace(start - 1, start + 1, 200001)
    assert ours == pytest.approx(grid[np.argmin(spline(grid))], abs=2e-5)


def test_numpy_random_state_calibration_replays_skdims_balls(x64):
    """Same balls as skdim (RandomState path); D = 14 > k = 10 exercises skdim's cap of the
    calibration dhat at k (``skdim_cap=True``) against R's 2 d + 5 (our default)."""
    x = np.c_[skdim.datasets.hyperBall(300, 5, random_state=7), np.zeros((300, 9))]
    ours = dc.danco(x, random_state=0, skdim_cap=True, fractal=False)
    ref = _skdim_fit(x, random_state=0, fractal=False)
    rows = ref.calibration_data_["calibration_data"]
    for field in ("mu_nu", "mu_tau"):
        ref_values = [r[field] for r in rows]
        np.testing.assert_allclose(getattr(ours.calibration.statistics, field), ref_values, rtol=RTOL, atol=1e-14)
    ours_dhat, ref_dhat = np.asarray(ours.calibration.statistics.dhat), np.array([r["dhat"] for r in rows])
    assert ref_dhat.max() == 10.0 and ours_dhat.max() == 10.0  # skdim's cap at k binds at d = 14
    # skdim's L-BFGS-B sometimes stops at its integer start (here d = 2, 3); we maximise exactly
    stuck = (np.abs(ref_dhat - np.round(ref_dhat)) < 1e-9) & (ref_dhat < 10)
    assert stuck.sum() <= 3
    np.testing.assert_allclose(ours_dhat[~stuck], ref_dhat[~stuck], rtol=RTOL)
    np.testing.assert_allclose(ours_dhat[stuck], ref_dhat[stuck], atol=0.1)
    assert float(ours.dimension) == ref.dimension_
    assert float(ours.kl_divergence) == pytest.approx(ref.kl_divergence_, rel=RTOL)
    # R's cap 2 d + 5 (default): the same balls give uncapped dhat above d = 10
    default = dc.danco_calibration(300, 10, 14, random_state=0)
    assert float(default.statistics.dhat[13]) > 10.5
    np.testing.assert_allclose(default.statistics.mu_tau, ours.calibration.statistics.mu_tau, rtol=1e-12)


@pytest.mark.parametrize("d", [2, 5])
def test_recovers_known_dimension_and_agrees_with_skdim(x64, d):
    x = np.c_[skdim.datasets.hyperBall(500, d, random_state=d), np.zeros((500, 8 - d))]  # same shape: one compile
    ours = float(dc.danco(x, key=jax.random.key(d)).dimension)
    ref = _skdim_fit(x, random_state=d).dimension_
    assert abs(ours - d) < 0.5 and abs(ref - d) < 0.5
    assert abs(ours - ref) < 0.5


def test_vmapped_calibration_equals_one_dimension_at_a_time_and_the_data_path(x64):
    full = dc.danco_calibration(200, 10, 5, random_state=3)
    single = dc.danco_calibration(200, 10, 5, random_state=3, batch_size=2)
    for a, b in zip(full.statistics, single.statistics):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # ball d = 4 of the same draws is skdim's hyperBall; its statistics through the data path
    # (knn + statistics_from_neighbours, MiND capped at 2 d + 5 = 13) equal the calibration's
    ball = dc.skdim_balls(200, 5, 3)[3][:, :4]
    np.testing.assert_array_equal(ball, skdim.datasets.hyperBall(200, 4, random_state=_advanced_state(3, 200, 3)))
    dists, idx = knn(ball, 11)
    stats = dc.statistics_from_neighbours(jnp.asarray(ball), dists, idx, 10, 13)
    # calibration_queries: the statistics of the first 80 points, neighbours among all 200
    part = dc.danco_calibration(200, 10, 5, random_state=3, queries=80, batch_size=2)
    part_stats = dc.statistics_from_neighbours(jnp.asarray(ball), dists[:80], idx[:80], 10, 13)
    for field in dc.DancoStatistics._fields:
        assert float(getattr(stats, field)) == pytest.approx(float(getattr(full.statistics, field)[3]), rel=1e-10)
        assert float(getattr(part_stats, field)) == pytest.approx(float(getattr(part.statistics, field)[3]), rel=1e-10)


def test_jax_balls_are_uniform_in_the_first_d_coordinates(x64):
    d = 3
    ball = np.asarray(dc.uniform_ball(jax.random.key(0), 20000, 6, d))
    assert np.all(ball[:, d:] == 0)
    radius = np.linalg.norm(ball, axis=1)
    # uniform in the d-ball: P(|x| <= r) = r^d, so |x|^d is uniform on [0, 1]
    q = np.sort(radius**d)
    assert np.max(np.abs(q - np.arange(1, q.size + 1) / q.size)) < 1.63 / np.sqrt(q.size)  # KS, 1 %
    assert np.all(np.abs(np.mean(ball[:, :d] / radius[:, None], axis=0)) < 0.03)


def _advanced_state(seed, n, skipped_dims):
    """numpy RandomState(seed) after skdim's draws for d = 1..skipped_dims."""
    rs = np.random.RandomState(seed)
    for d in range(1, skipped_dims + 1):
        rs.normal(size=(n, d))
    return rs


def test_mind_versions_calibration_reuse_and_duplicates(x64):
    base = skdim.datasets.hyperBall(290, 3, random_state=0)
    x = np.c_[np.r_[base, base[:10]], np.zeros((300, 1))]  # 10 duplicated points, 4 features
    distinct = np.c_[skdim.datasets.hyperBall(300, 3, random_state=1), np.zeros((300, 1))]
    assert int(dc.danco(distinct, ver="MIND_MLi")) == _skdim_fit(distinct, ver="MIND_MLi").dimension_
    assert float(dc.danco(distinct, ver="MIND_MLk")) == pytest.approx(float(gid.mind_ml(distinct, 10, 4)), rel=1e-12)
    first = dc.danco(distinct, key=jax.random.key(5))
    again = dc.danco(distinct, calibration=first.calibration)
    assert float(again.dimension) == float(first.dimension)
    assert abs(float(first.dimension) - 3) < 0.5
    # duplicates: an angle to a copy is undefined, so nan (skdim too) unless copies are excluded
    assert np.isnan(float(dc.danco(x, calibration=first.calibration).dimension))
    assert np.isnan(_skdim_fit(x, random_state=0).dimension_)
    assert abs(float(dc.danco(x, calibration=first.calibration, exclude_duplicates=True).dimension) - 3) < 0.5


def _fake_calibration(n, k, max_dim):
    ones = jnp.ones(max_dim)
    return dc.DancoCalibration(dc.DancoStatistics(ones, ones, ones), n, k)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dc.danco(np.arange(20.0)), "2-D"),
        (lambda: dc.danco(np.full((30, 3), np.nan)), "NaN or inf"),
        (lambda: dc.danco(np.random.default_rng(0).normal(size=(11, 3))), "fewer points than neighbours"),
        (lambda: dc.danco(np.random.default_rng(0).normal(size=(30, 1))), "at least 2 features"),
        (lambda: dc.danco(np.random.default_rng(0).normal(size=(30, 3)), 1), "at least 2"),
        (lambda: dc.danco(np.random.default_rng(0).normal(size=(30, 3)), ver="DANCoFit"), "ver"),
        (lambda: dc.danco(np.random.default_rng(0).normal(size=(30, 3)), max_dim=0), "max_dim"),
        (
            lambda: dc.danco(
                np.random.default_rng(0).normal(size=(30, 3)),
                calibration=_fake_calibration(40, 10, 3),
            ),
            "N=40",
        ),
        (
            lambda: dc.danco(
                np.random.default_rng(0).normal(size=(30, 3)),
                calibration=_fake_calibration(30, 10, 2),
            ),
            "max_dim",
        ),
        (lambda: dc.danco_calibration(30, 10, 3, key=jax.random.key(0), random_state=0), "exactly one"),
    ],
)
def test_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
