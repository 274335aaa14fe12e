"""DANCo: dimensionality from angle and norm concentration (Ceruti, Bassis, Rozza, Lombardi,
Casiraghi & Campadelli 2014; scikit-dimension 0.5.0 ``DANCo``, after the R package
intrinsicDimension).

Three statistics of a point cloud with k neighbours per point (k = 10):

- ``dhat``: the MiND_ML continuous estimate from ``rho_i = r_1 / r_{k+1}`` capped at D
  (:func:`geometry.intrinsic_dim.mind_from_ratios`);
- ``mu_nu``, ``mu_tau``: means over points of the von Mises location and concentration fitted
  to the C(k, 2) angles between the vectors from a point to its k nearest neighbours
  (``nu = arctan(sum sin / sum cos)``, ``tau = A^{-1}(eta)`` by the Best-Fisher approximation).

The same statistics of N points drawn uniformly in the unit d-ball, d = 1..D, are the
calibration (:func:`danco_calibration`); the estimate is the d minimising the KL divergence
between the data's statistics and the calibration's (the MiND part has a closed form with k
digamma terms, the angle part is the von Mises KL), and, with ``fractal=True``, the minimiser of
skdim's spline interpolation of the KL over d (cubic for > 3 features, quadratic for 3,
linear for 2). ``ver`` 'MIND_MLi' / 'MIND_MLk' return MiND_ML's integer / continuous estimates.

The calibration is the cost users complain about: skdim samples a ball per d and loops over
points in Python. Here the D calibration problems run as one ``jax.lax.map`` with
``batch_size`` (vmap over candidate dimensions in memory-bounded chunks), each d-ball stored
zero-padded in D coordinates (distances and angles are unchanged). Its randomness is either
``jax.random`` (``key``; uniform direction times ``U^(1/d)``), or, for parity, numpy's
``RandomState`` (``random_state``): the balls are then built on the host exactly as skdim's
(``hyperBall(N, d, random_state=rs)`` for d = 1..D in order), so ours and
``skdim.id.DANCo(random_state=seed)`` calibrate on the same balls.
For large N, ``calibration_queries`` (off by default) averages the calibration statistics
over a subset of each ball's points (neighbours still searched among all N), trading Monte-Carlo
noise for a cost linear instead of quadratic in N. Calibration statistics can also be passed in
(:class:`DancoCalibration`, e.g. from skdim's ``calibration_data_`` with
:meth:`DancoCalibration.from_skdim`) and reused for data of the same size. Run under
``jax.enable_x64(True)`` for parity: the MiND KL term is an alternating sum of binomially
weighted digammas, which loses digits in float32.

Deviations from scikit-dimension 0.5.0:

- The calibration's MiND estimate on the d-ball is capped at 2 d + 5, as in the R code
  (``dancoDimEstNoCalibration(ball, k, 2 d + 5)``). skdim 0.5.0 passes ``k`` in that argument
  position (its Python signature dropped ``k``), so its calibration dhat saturates at k = 10
  for d > 10 and the KL curve flattens: on the 10-sphere in R^20 (N = 2500, the same balls)
  skdim gives 13.0 where the 2 d + 5 cap gives 11.3. ``skdim_cap=True`` reproduces skdim.
- ``dhat`` is the exact maximiser of MiND's concave likelihood (bisection on the score, as in
  :mod:`geometry.intrinsic_dim`); skdim runs L-BFGS-B from the integer estimate, which
  sometimes stops early. On the calibration balls the cap 2 d + 5 is applied as
  ``min(maximiser on (0, 2 D + 5], 2 d + 5)``, equal by concavity.
- The fractal estimate is the exact local minimum of the interpolating spline within one unit
  of the integer estimate (grid then golden-section search), where skdim runs L-BFGS-B with
  finite differences and ``tol=1e-3`` (it can stop ~1e-2 short, and when the integer estimate
  is D it sees the jump to the fill value D + 1 and returns D unchanged). Between D and D + 1
  the interpolant is skdim's fill value D + 1. The spline order is lowered to D - 1 when D is
  smaller than the order needs (skdim raises).
- Fewer points than k + 1 neighbours raises (skdim lowers k to N - 2 with a warning); data
  statistics with nan (duplicate points; see ``exclude_duplicates``) give a nan estimate, as in
  skdim. 'DANCoFit' (skdim's precomputed calibration table) is not ported.
"""

from __future__ import annotations

import functools
import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, i0e, i1e

from geometry.intrinsic_dim import check_choice, mind_from_ratios, mind_ml
from geometry.knn import check_neighbours, check_points, knn, knn_unchecked

VERSIONS = ("DANCo", "MIND_MLi", "MIND_MLk")
_GOLDEN_STEPS = 60
_GRID_POINTS = 2001


class DancoStatistics(typing.NamedTuple):
    """DANCo's statistics: scalars for a data set, or (D,) arrays over d = 1..D for a calibration."""

    dhat: jax.Array
    mu_nu: jax.Array
    mu_tau: jax.Array


class DancoCalibration(typing.NamedTuple):
    """Calibration statistics for data sets of ``n`` points with ``k`` neighbours; entry d - 1 of
    each array belongs to the uniform d-ball."""

    statistics: DancoStatistics
    n: int
    k: int

    @property
    def max_dim(self) -> int:
        return int(self.statistics.dhat.shape[0])

    @classmethod
    def from_skdim(cls, calibration: dict) -> DancoCalibration:
        """From skdim's ``DANCo(...).fit(x).calibration_data_`` (or R's ``calibration.data``)."""
        rows = calibration["calibration_data"]
        stats = DancoStatistics(*(jnp.asarray([float(r[key]) for r in rows]) for key in DancoStatistics._fields))
        return cls(stats, int(calibration["N"]), int(calibration["k"]))


class DancoResult(typing.NamedTuple):
    dimension: jax.Array  # fractal (or integer) estimate
    kl_divergence: jax.Array  # KL divergence at the integer estimate (skdim ``kl_divergence_``)
    kl: jax.Array  # (D,) KL divergence for d = 1..D
    statistics: DancoStatistics  # of the data
    calibration: DancoCalibration


# ----------------------------------------------------------------------------------------------
# Statistics of a point cloud


def inverse_mean_resultant(eta: jax.Array) -> jax.Array:
    """Best-Fisher approximation of the von Mises concentration from the mean resultant length."""
    small = 2 * eta + eta**3 + 5 * eta**5 / 6
    mid = -0.4 + 1.39 * eta + 0.43 / (1 - eta)
    large = 1 / (eta**3 - 4 * eta**2 + 3 * eta)
    return jnp.where(eta < 0.53, small, jnp.where(eta < 0.85, mid, large))


def von_mises_of_angles(point: jax.Array, neighbours: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(nu, tau)`` fitted to the C(k, 2) angles between the vectors from ``point`` (D,) to its
    ``neighbours`` (k, D); cosines above 1 (rounding) are clipped as in skdim; a neighbour that
    coincides with the point (a duplicate) makes an angle undefined and gives nan, as in skdim."""
    vec = neighbours - point
    lengths = jnp.sqrt(jnp.sum(vec * vec, axis=1))
    k = neighbours.shape[0]
    first, second = np.triu_indices(k, 1)
    dots = jnp.sum(vec[first] * vec[second], axis=1)
    theta = jnp.arccos(jnp.minimum(dots / (lengths[first] * lengths[second]), 1.0))
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    nu = jnp.arctan(jnp.sum(sin) / jnp.sum(cos))
    eta = jnp.sqrt(jnp.mean(cos) ** 2 + jnp.mean(sin) ** 2)
    undefined = jnp.any(lengths == 0)  # explicit: jitted + vmapped on XLA CPU, the nan was lost
    tau = inverse_mean_resultant(eta)
    return jnp.where(undefined, jnp.nan, nu), jnp.where(undefined, jnp.nan, tau)


@functools.partial(jax.jit, static_argnames=("k", "max_dim", "block_size"))
def statistics_from_neighbours(
    x, dists, idx, k: int, max_dim: int, cap=None, one_dimensional=False, block_size: int = 256
):
    """DANCo statistics from ``k + 1`` neighbours per point (distances and indices (N, k + 1)).

    dhat is MiND_ML's maximiser on (0, max_dim]; a traced ``cap <= max_dim`` lowers the bound to
    ``cap`` (concave likelihood: the maximiser on (0, cap] is ``min(maximiser, cap)``).
    ``one_dimensional`` sets mu_tau = 1 (skdim's rule for data with a single feature).
    """
    dhat = mind_from_ratios(dists[:, 0] / dists[:, k], k, max_dim, "MLk")
    if cap is not None:
        dhat = jnp.minimum(dhat, cap)
    n = idx.shape[0]
    block_size = min(block_size, n)
    n_blocks = -(-n // block_size)
    rows = jnp.minimum(jnp.arange(n_blocks * block_size), n - 1).reshape(n_blocks, block_size)
    nu, tau = jax.lax.map(lambda r: jax.vmap(lambda i: von_mises_of_angles(x[i], x[idx[i, :k]]))(r), rows)
    nu, tau = nu.reshape(-1)[:n], tau.reshape(-1)[:n]
    mu_tau = jnp.where(one_dimensional, jnp.ones_like(dhat), jnp.mean(tau))
    return DancoStatistics(dhat, jnp.mean(nu), mu_tau)


# ----------------------------------------------------------------------------------------------
# Calibration on uniform balls


def uniform_ball(key: jax.Array, n: int, width: int, d, dtype=None) -> jax.Array:
    """``n`` points uniform in the unit d-ball (traced ``d <= width``), zero-padded to ``width``
    coordinates: a uniform direction times ``U^(1/d)``."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    direction_key, radius_key = jax.random.split(key)
    z = jnp.where(jnp.arange(width) < d, jax.random.normal(direction_key, (n, width), dtype), 0.0)
    radius = jax.random.uniform(radius_key, (n, 1), dtype) ** (1 / d)
    return z / jnp.sqrt(jnp.sum(z**2, axis=1, keepdims=True)) * radius


def skdim_balls(n: int, max_dim: int, random_state) -> np.ndarray:
    """skdim's calibration balls, ``hyperBall(n, d, random_state=rs)`` for d = 1..max_dim in
    order from one ``RandomState`` (same draws and formula), zero-padded to (max_dim, n, max_dim)."""
    from scipy.special import gammainc
    from sklearn.utils import check_random_state

    rs = check_random_state(random_state)
    out = np.zeros((max_dim, n, max_dim))
    for d in range(1, max_dim + 1):
        z = rs.normal(size=(n, d))
        ssq = np.sum(z**2, axis=1)
        out[d - 1, :, :d] = z * (gammainc(d / 2, ssq / 2) ** (1 / d) / np.sqrt(ssq))[:, None]
    return out


@functools.partial(
    jax.jit, static_argnames=("n", "k", "max_dim", "queries", "skdim_cap", "batch_size", "block_size", "dtype")
)
def _calibrate(
    key, balls, *, n: int, k: int, max_dim: int, queries: int, skdim_cap: bool, batch_size: int, block_size: int, dtype
):
    def one(d):
        if balls is None:
            ball = uniform_ball(jax.random.fold_in(key, d), n, max_dim, d.astype(dtype), dtype)
        else:
            ball = balls[d - 1]
        dists, idx = knn_unchecked(ball, k + 1, block_size=block_size, n_queries=queries)
        cap = jnp.asarray(k, dtype) if skdim_cap else (2 * d + 5).astype(dtype)
        return statistics_from_neighbours(ball, dists, idx, k, max(2 * max_dim + 5, k), cap, d == 1)

    # repeat the last d up to a multiple of batch_size: lax.map would compile a remainder body
    n_dims = -(-max_dim // batch_size) * batch_size
    dims = jnp.minimum(jnp.arange(1, n_dims + 1), max_dim)
    stats = jax.lax.map(one, dims, batch_size=batch_size)
    return jax.tree.map(lambda s: s[:max_dim], stats)


def danco_calibration(
    n: int,
    k: int = 10,
    max_dim: int = 10,
    *,
    key: jax.Array | None = None,
    random_state=None,
    queries: int | None = None,
    skdim_cap: bool = False,
    batch_size: int | None = None,
) -> DancoCalibration:
    """DANCo statistics of ``n`` uniform points in the unit d-ball for d = 1..max_dim.

    Randomness: ``key`` (``jax.random``) or ``random_state`` (an int or ``np.random.RandomState``:
    skdim's exact balls, see :func:`skdim_balls`; memory ``max_dim^2 n``). ``queries``: average
    the statistics over the first ``queries`` points of each ball only (their neighbours are
    still searched among all n; the points are i.i.d., so this is a random subset): cost
    ``queries * n`` instead of ``n^2`` per d, at the price of more Monte-Carlo noise; default all
    n, as skdim. dhat of the d-ball is capped at 2 d + 5 (R, the paper's code); ``skdim_cap``
    caps it at k instead, as skdim 0.5.0 does (see the module docstring). All d are computed by
    one ``lax.map`` vmapped ``batch_size`` dimensions at a time (default: as many as keep about
    2^24 distance entries per step).
    """
    for name, value, low in (("n", n, 2), ("k", k, 2), ("max_dim", max_dim, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r}: expected an int >= {low}")
    check_neighbours(k + 1, n, "k + 1")
    if (key is None) == (random_state is None):
        raise ValueError("danco_calibration: pass exactly one of key (jax.random) or random_state (numpy parity)")
    queries = n if queries is None else queries
    if isinstance(queries, bool) or not isinstance(queries, (int, np.integer)) or not 1 <= queries <= n:
        raise ValueError(f"queries={queries!r}: expected an int in [1, n={n}]")
    dtype = jnp.result_type(float)
    block_size = int(min(1024, max(8, 2**22 // n)))
    if batch_size is None:
        batch_size = int(max(1, min(max_dim, 2**24 // (min(block_size, queries) * n))))
    balls = None
    if random_state is not None:
        balls = jnp.asarray(skdim_balls(n, max_dim, random_state), dtype)
    stats = _calibrate(
        key, balls, n=int(n), k=int(k), max_dim=int(max_dim), queries=int(queries),
        skdim_cap=bool(skdim_cap), batch_size=int(batch_size), block_size=block_size, dtype=dtype,
    )
    return DancoCalibration(DancoStatistics(*stats), int(n), int(k))


# ----------------------------------------------------------------------------------------------
# KL divergence and the estimate


def kl_mind(dhat, dcal, k: int) -> jax.Array:
    """KL divergence between MiND's rho distributions at dimensions ``dhat`` (data) and ``dcal``."""
    i = np.arange(k + 1)
    signed_binomials = jnp.asarray([(-1) ** j * math.comb(k, j) for j in i], jnp.result_type(dhat))
    harmonic = sum(1.0 / j for j in range(1, k + 1))
    quo = dcal / dhat
    alternating = jnp.sum(signed_binomials * digamma(1 + i / quo[..., None]), axis=-1)
    return harmonic * quo - jnp.log(quo) - (k - 1) * alternating


def _log_bessel_clamped(t, scaled_bessel):
    """``log min(float64 max, I(t))`` from the exponentially scaled Bessel function (skdim clamps)."""
    log_max = np.log(np.finfo(np.float64).max)
    value = t + jnp.log(scaled_bessel(jnp.where(jnp.isinf(t), 0.0, t)))
    return jnp.where(jnp.isinf(t), log_max, jnp.minimum(value, log_max))


def kl_von_mises(nu1, nu2, tau1, tau2) -> jax.Array:
    """KL divergence between von Mises (nu1, tau1) (data) and (nu2, tau2), Bessel values clamped
    at the float64 maximum as in skdim."""
    log_i0_1, log_i0_2 = _log_bessel_clamped(tau1, i0e), _log_bessel_clamped(tau2, i0e)
    ratio = jnp.exp(_log_bessel_clamped(tau1, i1e) - log_i0_1)
    return log_i0_2 - log_i0_1 + ratio * (tau1 - tau2 * jnp.cos(nu1 - nu2))


def kl_divergences(data: DancoStatistics, calibration: DancoStatistics, k: int) -> jax.Array:
    """(D,) KL divergence of the data's statistics against each calibration dimension."""
    return kl_mind(data.dhat, calibration.dhat, k) + kl_von_mises(
        data.mu_nu, calibration.mu_nu, data.mu_tau, calibration.mu_tau
    )


def _bspline_basis(u: jax.Array, knots: jax.Array, order: int) -> jax.Array:
    """B-spline basis functions (len(u), len(knots) - order - 1) by Cox-de Boor; u in [t_0, t_-1]."""
    u = jnp.minimum(u, jnp.nextafter(knots[-1], knots[0]))[:, None]
    basis = ((knots[:-1] <= u) & (u < knots[1:])).astype(knots.dtype)
    for p in range(1, order + 1):
        left_den = knots[p:-1] - knots[: -p - 1]
        right_den = knots[p + 1 :] - knots[1:-p]
        left = jnp.where(left_den > 0, (u - knots[: -p - 1]) / jnp.where(left_den > 0, left_den, 1), 0.0)
        right = jnp.where(right_den > 0, (knots[p + 1 :] - u) / jnp.where(right_den > 0, right_den, 1), 0.0)
        basis = left * basis[:, :-1] + right * basis[:, 1:]
    return basis


def spline_knots(n_nodes: int, order: int) -> np.ndarray:
    """scipy ``make_interp_spline``'s default (not-a-knot) knots for nodes 1..n_nodes."""
    x = np.arange(1.0, n_nodes + 1)
    half = (order + 1) // 2 if order % 2 else order // 2
    interior = x if order % 2 else (x[1:] + x[:-1]) / 2
    interior = interior[half : len(interior) - half]
    return np.r_[(x[0],) * (order + 1), interior, (x[-1],) * (order + 1)]


@functools.partial(jax.jit, static_argnames=("order",))
def fractal_minimum(kl: jax.Array, start, order: int) -> jax.Array:
    """Local minimum near ``start`` (within one unit, inside [1, D + 1]) of skdim's interpolant of
    ``kl`` over d = 1..D: the order-``order`` interpolating spline on [1, D], D + 1 beyond D."""
    n_nodes = kl.shape[0]
    dtype = kl.dtype
    knots = jnp.asarray(spline_knots(n_nodes, order), dtype)
    nodes = jnp.arange(1, n_nodes + 1, dtype=dtype)
    coef = jnp.linalg.solve(_bspline_basis(nodes, knots, order), kl)

    def interpolant(u):
        inside = _bspline_basis(jnp.clip(u, 1, n_nodes), knots, order) @ coef
        return jnp.where(u > n_nodes, jnp.asarray(n_nodes + 1, dtype), inside)

    lo = jnp.maximum(1.0, start - 1.0)
    hi = jnp.minimum(n_nodes + 1.0, start + 1.0)
    grid = lo + (hi - lo) * jnp.linspace(0.0, 1.0, _GRID_POINTS, dtype=dtype)
    values = interpolant(grid)
    best = jnp.argmin(values)
    step = (hi - lo) / (_GRID_POINTS - 1)
    a, b = jnp.maximum(lo, grid[best] - step), jnp.minimum(hi, grid[best] + step)
    ratio = (np.sqrt(5) - 1) / 2

    def golden(_, bounds):
        a, b = bounds
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        fc, fd = interpolant(jnp.stack([c, d]))
        return jnp.where(fc < fd, a, c), jnp.where(fc < fd, d, b)

    a, b = jax.lax.fori_loop(0, _GOLDEN_STEPS, golden, (a, b))
    return jnp.where(jnp.all(jnp.isfinite(kl)), 0.5 * (a + b), jnp.nan)


@functools.partial(jax.jit, static_argnames=("k", "fractal", "order"))
def danco_from_statistics(
    data: DancoStatistics, calibration: DancoStatistics, k: int, fractal: bool = True, order: int = 3
):
    """``(dimension, kl at the integer estimate, kl (D,))`` from the data's and calibration's statistics."""
    kl = kl_divergences(data, calibration, k)
    integer = jnp.argmin(kl) + 1
    valid = ~(jnp.isnan(data.dhat) | jnp.isnan(data.mu_nu) | jnp.isnan(data.mu_tau))
    kl_at = jnp.where(valid, kl[integer - 1], jnp.nan)
    dimension = integer.astype(kl.dtype)
    if fractal:
        dimension = fractal_minimum(kl, dimension, min(order, kl.shape[0] - 1))
    return jnp.where(valid, dimension, jnp.nan), kl_at, kl


def danco(
    x,
    k: int = 10,
    max_dim: int | None = None,
    *,
    ver: str = "DANCo",
    fractal: bool = True,
    calibration: DancoCalibration | None = None,
    key: jax.Array | None = None,
    random_state=None,
    exclude_duplicates: bool = False,
    calibration_queries: int | None = None,
    skdim_cap: bool = False,
    batch_size: int | None = None,
):
    """DANCo of ``x`` (N, D) with N > k + 1 and D >= 2 (skdim ``DANCo(k, D=max_dim, ver, fractal)``).

    ``max_dim`` defaults to the number of features. ver 'DANCo' returns a :class:`DancoResult`;
    'MIND_MLi' / 'MIND_MLk' return MiND_ML's integer / continuous estimate (a scalar). The
    calibration is ``calibration`` (reused; must match N and k and cover max_dim) or computed by
    :func:`danco_calibration` from ``key`` or ``random_state`` (default: ``jax.random.key(0)``)
    with ``calibration_queries`` and ``skdim_cap`` (``queries`` and ``skdim_cap`` there).
    """
    check_choice(ver, "ver", VERSIONS)
    x = check_points(x, "x")
    n, features = x.shape
    if features < 2:
        raise ValueError(f"x: expected at least 2 features (columns), got shape {tuple(x.shape)}")
    k = check_neighbours(k, n, "k", minimum=2)  # angles need two neighbours
    check_neighbours(k + 1, n, "k + 1")
    max_dim = features if max_dim is None else max_dim
    if isinstance(max_dim, bool) or not isinstance(max_dim, (int, np.integer)) or max_dim < 1:
        raise ValueError(f"max_dim={max_dim!r}: expected a positive int")
    if ver != "DANCo":
        return mind_ml(x, k, int(max_dim), ver=ver[-3:], exclude_duplicates=exclude_duplicates)
    if calibration is not None:
        if (calibration.n, calibration.k) != (n, k):
            raise ValueError(
                f"calibration: made for N={calibration.n}, k={calibration.k}; the data have N={n}, k={k}"
            )
        if calibration.max_dim < max_dim:
            raise ValueError(f"calibration: covers d <= {calibration.max_dim}, expected at least max_dim={max_dim}")
    else:
        if key is None and random_state is None:
            key = jax.random.key(0)
        calibration = danco_calibration(
            n, k, int(max_dim), key=key, random_state=random_state, queries=calibration_queries,
            skdim_cap=skdim_cap, batch_size=batch_size,
        )
    dists, idx = knn(x, k + 1, exclude_duplicates=exclude_duplicates)
    data = statistics_from_neighbours(x, dists, idx, k, int(max_dim))
    cal = DancoStatistics(*(jnp.asarray(s[:max_dim], x.dtype) for s in calibration.statistics))
    order = 3 if features > 3 else features - 1
    dimension, kl_at, kl = danco_from_statistics(data, cal, k, bool(fractal), order)
    return DancoResult(dimension, kl_at, kl, data, calibration)
