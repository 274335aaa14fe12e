"""Global intrinsic-dimension estimators with scikit-dimension 0.5.0 definitions and defaults.

Every estimator comes in two layers:

- a pure ``jnp`` core on neighbour distances or a spectrum (``twonn_from_ratios``,
  ``mle_pointwise``, ``lpca_from_spectrum``, ...) that ``jit``/``vmap``/shards unchanged (the
  local estimates in :mod:`geometry.local_id` vmap these over neighbourhoods);
- a public function of a point cloud ``x`` (N, D) (``twonn``, ``mle``, ``mle_global``, ``mom``,
  ``tle``, ``mada``, ``corr_int``, ``lpca``, ``mind_ml``, ``gride``, ``gride_multiscale``) that
  validates the input, computes exact neighbours with :func:`geometry.knn.knn` and calls the core. Run under
  ``jax.enable_x64(True)`` for float64 (scikit-dimension parity to rtol 1e-6).

Deliberate deviations from scikit-dimension 0.5.0 (each keeps skdim's number on valid input):

- Too few points for the neighbourhood raises ``ValueError``; skdim warns and silently lowers
  ``n_neighbors`` to ``N - 1``.
- Estimates that skdim cannot form are ``nan`` instead of an exception inside a Python loop
  (TLE with all neighbour distances 0; TwoNN/GRIDE with fewer than 2 usable ratios).
- Duplicate points (see :mod:`geometry.knn`): by default neighbours include exact copies at
  distance 0, as in skdim, so TwoNN and GRIDE drop those points (skdim warns and drops them),
  MLE gives a pointwise 0 and so a harmonic mean of 0 (skdim's flaw), MiND_ML's likelihood
  becomes undefined. ``exclude_duplicates=True`` (recommended for real embeddings) computes all
  neighbour lists over distinct points instead. MADA always excludes copies, like skdim.
- TwoNN in float32 computes ``floor(N (1 - discard_fraction))`` with a one-ulp upward nudge so
  that e.g. ``450 * 0.9`` keeps 405 points as Python's float64 does; float64 is exact.
- lPCA: only the explained-variance versions (FO, Fan, maxgap, ratio, participation_ratio,
  Kaiser, broken_stick); skdim's random-matrix signal-rank versions (MP, GD, KN, ...) are not
  ported. MLE: only the noise-free estimators (``dnoise=None``, the default): per neighbourhood
  (:func:`mle`) and from the data set's smallest distances (:func:`mle_global`).
- CorrInt counts pairs below r with exact distances; skdim uses scikit-learn's expanded-form
  distances, so a pair at exactly r (frequent: r is a median of k-th neighbour distances, often a
  mutual pair's distance) is counted or not by rounding there. Results can differ by a pair.
- Where skdim's number is decided by float rounding we do not chase it: lPCA 'Fan' when the first
  component holds more than ``p_fan`` of the variance (the de-noised total is then 0 up to
  rounding), lPCA 'maxgap' on rank-deficient spectra (gaps between rounding-noise eigenvalues),
  and ``mle_global``, where skdim's ``set()`` of kd-tree distances keeps a mutual pair twice
  when its two computed distances differ by an ulp (we dedupe exactly symmetric distances).
- MiND_MLk maximises the concave likelihood exactly (bisection on the score) instead of
  L-BFGS-B from the integer MLi start. Where L-BFGS-B converges the two agree to its tolerance;
  skdim's run sometimes stops at the integer start (M7_Roll, N = 600: 2.0 with the score at 87,
  against the maximiser 1.936), a flaw not reproduced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from geometry.knn import check_neighbours, check_points, knn, sort_floats
from geometry.spectra import covariance_spectrum, singular_values

COMBINATIONS = ("mle", "mean", "median")
LPCA_VERSIONS = ("FO", "Fan", "maxgap", "ratio", "participation_ratio", "Kaiser", "broken_stick")
_BISECTION_STEPS = 200


def check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {tuple(choices)}")


def check_fraction(value, name: str, low_open: bool = False) -> float:
    value = float(value)
    if not (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0):
        raise ValueError(f"{name}={value}: expected a number in {'(0, 1)' if low_open else '[0, 1)'}")
    return value


@functools.partial(jax.jit, static_argnames=("comb",))
def combine(values: jax.Array, comb: str = "mean") -> jax.Array:
    """Combine pointwise estimates: 'mean', 'median' or 'mle' (harmonic mean, Levina-Bickel)."""
    check_choice(comb, "comb", COMBINATIONS)
    if comb == "mean":
        return jnp.mean(values)
    if comb == "median":
        return jnp.median(values)
    return 1.0 / jnp.mean(1.0 / values)


def _bisect_decreasing(fn, low, high, steps: int = _BISECTION_STEPS):
    """Root of a decreasing function on [low, high] (fn(low) > 0 > fn(high)) by bisection."""

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        positive = fn(mid) > 0
        return jnp.where(positive, mid, lo), jnp.where(positive, hi, mid)

    lo, hi = jax.lax.fori_loop(0, steps, body, (low, high))
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------------------
# TwoNN (Facco et al. 2017; skdim TwoNN)


@functools.partial(jax.jit, static_argnames=("discard_fraction", "method"))
def twonn_from_ratios(mu: jax.Array, discard_fraction: float = 0.1, method: str = "linear"):
    """TwoNN from the ratios ``mu = r2 / r1``; non-finite ratios (duplicates) are dropped.

    Of the N finite ratios the ``floor(N (1 - discard_fraction))`` smallest are kept. 'linear':
    least-squares slope through the origin of ``-log(1 - i / N)`` on ``log mu_(i)``; 'mle':
    ``(n - 1) / (sum_{i<=n} log mu_(i) + (N - n) log mu_(n))`` (Type-II censored, unbiased).
    Returns nan when fewer than 2 ratios are kept.
    """
    check_choice(method, "method", ("linear", "mle"))
    keep_fraction = 1.0 - float(discard_fraction)
    valid = jnp.isfinite(mu)
    n_valid = jnp.sum(valid)
    mu_sorted = sort_floats(jnp.where(valid, mu, jnp.inf))
    nudge = 1.0 if mu.dtype == jnp.float64 else 1.0 + 2 * float(jnp.finfo(mu.dtype).eps)
    n_keep = jnp.floor(n_valid.astype(mu.dtype) * keep_fraction * nudge).astype(jnp.int32)
    rank = jnp.arange(1, mu.shape[0] + 1)
    kept = rank <= n_keep
    log_mu = jnp.where(kept, jnp.log(jnp.where(kept, mu_sorted, 1.0)), 0.0)
    if method == "mle":
        last = jnp.take(log_mu, jnp.maximum(n_keep - 1, 0))
        d = (n_keep - 1) / (jnp.sum(log_mu) + (n_valid - n_keep) * last)
    else:
        f_emp = rank.astype(mu.dtype) / n_valid
        y = jnp.where(kept, -jnp.log(1.0 - jnp.where(kept, f_emp, 0.0)), 0.0)
        d = jnp.sum(log_mu * y) / jnp.sum(log_mu * log_mu)
    return jnp.where(n_keep >= 2, d, jnp.nan)


def twonn(
    x,
    *,
    discard_fraction: float = 0.1,
    method: str = "linear",
    exclude_duplicates: bool = False,
    block_size: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | tuple[str, ...] = "data",
) -> jax.Array:
    """TwoNN intrinsic dimension of ``x`` (N, D) (skdim ``TwoNN(discard_fraction, method)``).
    ``mesh``: the neighbour search is split over ``mesh_axis`` (see :func:`geometry.knn.knn`)."""
    check_fraction(discard_fraction, "discard_fraction")
    check_choice(method, "method", ("linear", "mle"))
    x = check_points(x, "x", min_points=3)
    dist, _ = knn(x, 2, exclude_duplicates=exclude_duplicates, block_size=block_size, mesh=mesh,
                  mesh_axis=mesh_axis)
    return twonn_from_ratios(dist[:, 1] / dist[:, 0], discard_fraction, method)


# ----------------------------------------------------------------------------------------------
# MLE (Levina & Bickel 2005; skdim MLE, dnoise=None)


@functools.partial(jax.jit, static_argnames=("unbiased",))
def mle_pointwise(dists: jax.Array, unbiased: bool = False) -> jax.Array:
    """Levina-Bickel estimate per row of sorted neighbour distances (N, k):
    ``(k - 1) / sum_j log(T_k / T_j)`` (``k - 2`` when ``unbiased``)."""
    k = dists.shape[-1]
    k_factor = k - 2 if unbiased else k - 1
    r_k = dists[..., -1:]
    return k_factor / jnp.sum(jnp.log(r_k / dists), axis=-1)


def mle(
    x,
    k: int = 20,
    *,
    comb: str = "mle",
    unbiased: bool = False,
    exclude_duplicates: bool = False,
    block_size: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | tuple[str, ...] = "data",
) -> jax.Array:
    """Levina-Bickel MLE on ``k`` neighbours, combined by ``comb`` ('mle' = harmonic mean).
    ``mesh``: as :func:`twonn`."""
    check_choice(comb, "comb", COMBINATIONS)
    x = check_points(x, "x")
    k = check_neighbours(k, x.shape[0], "k", minimum=2)
    dist, _ = knn(x, k, exclude_duplicates=exclude_duplicates, block_size=block_size, mesh=mesh,
                  mesh_axis=mesh_axis)
    return combine(mle_pointwise(dist, unbiased), comb)


@functools.partial(jax.jit, static_argnames=("n_smallest", "unbiased"))
def mle_from_all_distances(dists: jax.Array, n_smallest: int = 20, unbiased: bool = False) -> jax.Array:
    """Levina-Bickel on the ``n_smallest`` distinct values among all neighbour distances (N, K)
    of the data set (skdim ``MLE(neighborhood_based=False)``: one global estimate)."""
    values = sort_floats(dists.reshape(-1))
    is_new = jnp.concatenate([jnp.ones((1,), bool), values[1:] != values[:-1]])
    (first,) = jnp.nonzero(is_new, size=n_smallest, fill_value=values.shape[0] - 1)
    return mle_pointwise(values[first][None, :], unbiased)[0]


def mle_global(x, k: int = 20, n_neighbours_per_point: int = 5, *, unbiased: bool = False) -> jax.Array:
    """skdim ``MLE(K=n_neighbours_per_point, neighborhood_based=False).fit(x, n_neighbors=k)``:
    the ``k`` smallest distinct distances among every point's ``K`` neighbour distances."""
    x = check_points(x, "x")
    n_nb = check_neighbours(n_neighbours_per_point, x.shape[0], "n_neighbours_per_point", minimum=1)
    if k < 2 or k > x.shape[0] * n_nb:
        raise ValueError(f"k={k}: expected 2 <= k <= N * n_neighbours_per_point")
    dist, _ = knn(x, n_nb)
    return mle_from_all_distances(dist, int(k), unbiased)


# ----------------------------------------------------------------------------------------------
# MOM (Amsaleg et al. 2018; skdim MOM)


@jax.jit
def mom_pointwise(dists: jax.Array) -> jax.Array:
    """Method of moments per row: ``-m1 / (m1 - w)``, m1 the mean neighbour distance, w the k-th."""
    w = dists[..., -1]
    m1 = jnp.mean(dists, axis=-1)
    return -m1 / (m1 - w)


def mom(x, k: int = 100, *, comb: str = "mean", exclude_duplicates: bool = False, block_size=None):
    """Method-of-moments ID (skdim ``MOM``, default 100 neighbours, mean of pointwise)."""
    check_choice(comb, "comb", ("mean", "median"))
    x = check_points(x, "x")
    k = check_neighbours(k, x.shape[0], "k", minimum=2)
    dist, _ = knn(x, k, exclude_duplicates=exclude_duplicates, block_size=block_size)
    return combine(mom_pointwise(dist), comb)


# ----------------------------------------------------------------------------------------------
# TLE (Amsaleg et al. 2019, idtlec.m; skdim TLE)


def _pairwise_exact(points: jax.Array) -> jax.Array:
    """Euclidean distances between the rows of ``points`` (..., k, D) from coordinate differences."""
    diff = points[..., :, None, :] - points[..., None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def tle_one(neighbours: jax.Array, dists: jax.Array, epsilon: float = 1e-4) -> jax.Array:
    """Tight local ID estimate of one point from its k neighbours' coordinates (k, D) and sorted
    distances (k,); the variant with central measurements and reflections (``idtlec.m``)."""
    k = dists.shape[0]
    r = dists[-1]
    v = _pairwise_exact(neighbours)
    di = jnp.broadcast_to(dists[:, None], (k, k))
    dj = di.T
    z2 = 2 * di**2 + 2 * dj**2 - v**2
    den = 2 * (r**2 - di**2)
    s = r * (jnp.sqrt((di**2 + v**2 - dj**2) ** 2 + 4 * v**2 * (r**2 - di**2)) - (di**2 + v**2 - dj**2)) / den
    t = r * (jnp.sqrt((di**2 + z2 - dj**2) ** 2 + 4 * z2 * (r**2 - di**2)) - (di**2 + z2 - dj**2)) / den
    at_r = jnp.broadcast_to((dists == r)[:, None], (k, k))
    s = jnp.where(at_r, r * v**2 / (r**2 + v**2 - dj**2), s)
    t = jnp.where(at_r, r * z2 / (r**2 + z2 - dj**2), t)
    di0 = di == 0
    t = jnp.where(di0, dj, t)
    s = jnp.where(di0, dj, s)
    dj0 = dj == 0
    t = jnp.where(dj0, r * v / (r + v), t)
    s = jnp.where(dj0, r * v / (r + v), s)
    off_diagonal = ~jnp.eye(k, dtype=bool)
    v0 = (v == 0) & off_diagonal
    t = jnp.where(v0, r, t)
    s = jnp.where(v0, r, s)
    small = ((t < epsilon) | (s < epsilon) | jnp.isnan(t) | jnp.isnan(s)) & off_diagonal
    t = jnp.where(small, r, t)
    s = jnp.where(small, r, s)
    log_t = jnp.where(off_diagonal, jnp.log(t / r), 0.0)
    log_s = jnp.where(off_diagonal, jnp.log(s / r), 0.0)
    s1t, s1s = jnp.sum(log_t), jnp.sum(log_s)
    tiny = dists < epsilon
    s2 = jnp.sum(jnp.where(tiny, 0.0, jnp.log(jnp.where(tiny, r, dists) / r)))
    n_used = k**2 - jnp.sum(small) - jnp.sum(tiny) - jnp.sum(v0)
    estimate = -2 * n_used / (s1t + s1s + 2 * s2)
    estimate = jnp.where(s1t + s1s > -epsilon, 0.0, estimate)
    return jnp.where(r == 0, jnp.nan, estimate)


@functools.partial(jax.jit, static_argnames=("epsilon", "block_size"))
def tle_pointwise(x: jax.Array, dists: jax.Array, idx: jax.Array, epsilon: float = 1e-4, block_size: int = 256):
    """TLE for every point given its neighbour distances and indices (N, k); blockwise vmap."""
    n, k = idx.shape
    block_size = min(block_size, n)
    n_blocks = -(-n // block_size)
    rows = jnp.minimum(jnp.arange(n_blocks * block_size), n - 1).reshape(n_blocks, block_size)
    one = functools.partial(tle_one, epsilon=epsilon)
    out = jax.lax.map(lambda r: jax.vmap(one)(x[idx[r]], dists[r]), rows)
    return out.reshape(-1)[:n]


def tle(x, k: int = 20, *, epsilon: float = 1e-4, comb: str = "mean", exclude_duplicates: bool = False):
    """Tight local intrinsic dimensionality (skdim ``TLE``, 20 neighbours, mean of pointwise)."""
    check_choice(comb, "comb", ("mean", "median"))
    x = check_points(x, "x")
    k = check_neighbours(k, x.shape[0], "k", minimum=2)
    dist, idx = knn(x, k, exclude_duplicates=exclude_duplicates)
    return combine(tle_pointwise(x, dist, idx, epsilon=epsilon), comb)


# ----------------------------------------------------------------------------------------------
# MADA (Farahmand et al. 2007; skdim MADA)


@jax.jit
def mada_pointwise(dists: jax.Array) -> jax.Array:
    """``log 2 / log(R_k / R_{floor(k/2)})`` per row of distances to distinct neighbours (N, k)."""
    k = dists.shape[-1]
    return jnp.log(2.0) / jnp.log(dists[..., k - 1] / dists[..., k // 2 - 1])


def mada(x, k: int = 20, *, comb: str = "mean", block_size: int | None = None) -> jax.Array:
    """Manifold-adaptive dimension estimate (skdim ``MADA``): exact copies are never neighbours."""
    check_choice(comb, "comb", ("mean", "median"))
    x = check_points(x, "x")
    k = check_neighbours(k, x.shape[0], "k", minimum=2)
    dist, _ = knn(x, k, exclude_duplicates=True, block_size=block_size)
    return combine(mada_pointwise(dist), comb)


# ----------------------------------------------------------------------------------------------
# Correlation dimension (Grassberger & Procaccia 1983; skdim CorrInt)


@functools.partial(jax.jit, static_argnames=("block_size",))
def pair_counts_below(x: jax.Array, radii: jax.Array, block_size: int = 256) -> jax.Array:
    """Number of ordered pairs (i != j) with distance < each radius, blockwise over rows."""
    n = x.shape[0]
    centred = x - jnp.mean(x, axis=0)
    sq = jnp.sum(centred * centred, axis=1)
    block_size = min(block_size, n)
    n_blocks = -(-n // block_size)
    rows = jnp.arange(n_blocks * block_size).reshape(n_blocks, block_size)

    def count(r):
        valid = r < n
        rr = jnp.minimum(r, n - 1)
        d2 = sq[rr][:, None] + sq[None, :] - 2.0 * jnp.dot(
            centred[rr], centred.T, precision=jax.lax.Precision.HIGHEST
        )
        d = jnp.sqrt(jnp.maximum(d2, 0.0))
        usable = valid[:, None] & (jnp.arange(n)[None, :] != rr[:, None])
        below = (d[None] < radii[:, None, None]) & usable[None]
        return jnp.sum(below, axis=(1, 2)).astype(x.dtype)

    return jnp.sum(jax.lax.map(count, rows), axis=0)


def corr_int(x, k1: int = 10, k2: int = 20, *, exclude_duplicates: bool = False) -> jax.Array:
    """Correlation dimension between radii r1, r2 = medians of the k1-th and k2-th neighbour
    distances (skdim ``CorrInt``): ``log(C(r2) / C(r1)) / log(r2 / r1)``, C(r) = pairs < r / N^2."""
    x = check_points(x, "x")
    n = x.shape[0]
    k2 = check_neighbours(k2, n, "k2", minimum=2)
    k1 = check_neighbours(k1, n, "k1", minimum=1)
    if k1 >= k2:
        raise ValueError(f"k1={k1}, k2={k2}: expected k1 < k2")
    dist, _ = knn(x, k2, exclude_duplicates=exclude_duplicates)
    radii = jnp.stack([jnp.median(dist[:, k1 - 1]), jnp.median(dist[:, k2 - 1])])
    counts = pair_counts_below(x, radii)
    c = counts / n**2
    return jnp.log(c[1] / c[0]) / jnp.log(radii[1] / radii[0])


# ----------------------------------------------------------------------------------------------
# lPCA (skdim lPCA, explained-variance versions)


@functools.partial(jax.jit, static_argnames=("center",))
def pca_spectrum(x: jax.Array, center: bool = True) -> jax.Array:
    """Descending eigenvalues: sklearn ``PCA().explained_variance_`` (centred, / (N - 1)), or the
    eigenvalues of ``x.T @ x`` when ``center`` is False (skdim's convention); min(N, D) values."""
    return covariance_spectrum(x) if center else singular_values(x) ** 2


def _first_true(mask: jax.Array, default) -> jax.Array:
    return jnp.where(jnp.any(mask), jnp.argmax(mask), default)


@functools.partial(
    jax.jit, static_argnames=("ver", "alpha_fo", "alpha_fan", "beta_fan", "p_fan", "alpha_ratio")
)
def lpca_from_spectrum(
    ev: jax.Array,
    ver: str = "FO",
    *,
    alpha_fo: float = 0.05,
    alpha_fan: float = 10.0,
    beta_fan: float = 0.8,
    p_fan: float = 0.95,
    alpha_ratio: float = 0.05,
) -> jax.Array:
    """skdim ``lPCA`` rule ``ver`` on a descending eigenvalue vector."""
    check_choice(ver, "ver", LPCA_VERSIONS)
    m = ev.shape[0]
    if ver == "FO":
        return jnp.sum(ev > alpha_fo * ev[0])
    if ver == "maxgap":
        gaps = ev[:-1] / ev[1:]
        return jnp.argmax(jnp.where(jnp.isnan(gaps), -jnp.inf, gaps)) + 1
    if ver == "ratio":
        cum = jnp.cumsum(ev)
        return jnp.sum(cum / jnp.max(cum) < alpha_ratio) + 1
    if ver == "participation_ratio":
        return jnp.sum(ev) ** 2 / jnp.sum(ev**2)
    if ver == "Kaiser":
        return jnp.sum(ev > jnp.mean(ev))
    if ver == "broken_stick":
        stick = jnp.cumsum((1.0 / jnp.arange(1, m + 1, dtype=ev.dtype))[::-1])[::-1] / m
        return _first_true(stick > ev / jnp.sum(ev), 0)
    # Fan et al.: noise level from the tail beyond p_fan of the variance, then the first large
    # gap or the first index past beta_fan of the de-noised variance.
    r = jnp.argmax(jnp.cumsum(ev) / jnp.sum(ev) > p_fan)
    sigma = jnp.sum(jnp.where(jnp.arange(m) >= r, ev, 0.0)) / (m - r)
    shifted = ev - sigma
    gaps = shifted[:-1] / shifted[1:]
    first_gap = _first_true(gaps > alpha_fan, m)
    first_var = _first_true(jnp.cumsum(shifted) / jnp.sum(shifted) > beta_fan, m)
    return 1 + jnp.minimum(first_gap, first_var)


def lpca(x, ver: str = "FO", *, center: bool = True, **rule_kwargs) -> jax.Array:
    """PCA-based dimension of ``x`` (skdim ``lPCA(ver)``); see :func:`lpca_from_spectrum`."""
    check_choice(ver, "ver", LPCA_VERSIONS)
    x = check_points(x, "x")
    return lpca_from_spectrum(pca_spectrum(x, center), ver, **rule_kwargs)


# ----------------------------------------------------------------------------------------------
# MiND_ML (Rozza et al. 2012; skdim MiND_ML)


def mind_log_likelihood(d, rhos: jax.Array, k: int) -> jax.Array:
    """``N log(k d) + (d - 1) sum log rho + (k - 1) sum log(1 - rho^d)``."""
    n = rhos.shape[0]
    return n * jnp.log(k * d) + (d - 1) * jnp.sum(jnp.log(rhos)) + (k - 1) * jnp.sum(jnp.log1p(-(rhos**d)))


@functools.partial(jax.jit, static_argnames=("k", "max_dim", "ver"))
def mind_from_ratios(rhos: jax.Array, k: int = 20, max_dim: int = 10, ver: str = "MLk") -> jax.Array:
    """MiND from ``rho_i = r_1 / r_{k+1}``: 'MLi' the integer argmax over 1..max_dim, 'MLk' the
    continuous maximiser on (0, max_dim] (skdim's labels: 'MLk' is the fractional estimate)."""
    check_choice(ver, "ver", ("MLk", "MLi"))
    dims = jnp.arange(1, max_dim + 1, dtype=rhos.dtype)
    integer = jnp.argmax(jax.vmap(lambda d: mind_log_likelihood(d, rhos, k))(dims)) + 1
    if ver == "MLi":
        return integer
    log_rho = jnp.log(rhos)

    def score(d):
        rd = rhos**d
        return rhos.shape[0] / d + jnp.sum(log_rho - (k - 1) * rd * log_rho / (1 - rd))

    top = jnp.asarray(max_dim, rhos.dtype)
    root = _bisect_decreasing(score, jnp.asarray(1e-12, rhos.dtype), top)
    return jnp.where(score(top) >= 0, top, root)


def mind_ml(x, k: int = 20, max_dim: int = 10, *, ver: str = "MLk", exclude_duplicates: bool = False):
    """MiND_ML (skdim ``MiND_ML(k, D=max_dim, ver)``); the estimate is capped at ``max_dim``."""
    check_choice(ver, "ver", ("MLk", "MLi"))
    x = check_points(x, "x")
    k = check_neighbours(k, x.shape[0], "k", minimum=1)
    n_nb = min(k + 1, x.shape[0] - 1)
    dist, _ = knn(x, n_nb, exclude_duplicates=exclude_duplicates)
    return mind_from_ratios(dist[:, 0] / dist[:, -1], k, max_dim, ver)


# ----------------------------------------------------------------------------------------------
# GRIDE (Denti et al. 2022; skdim GRIDE, DADApy conventions)


@jax.jit
def gride_from_distances(dists: jax.Array, n1, n2):
    """Gride ID and its standard error from sorted neighbour distances (N, >= n2).

    ``mu = r_{n2} / r_{n1}``; ratios that are non-finite or 1 (ties, duplicates) are dropped, then
    those above ``q50 + 20 (q95 - q50)``; the ID is the root of the concave score. ``n1``, ``n2``
    (1-based neighbour orders) may be traced, so scales vmap in one compilation.
    Returns ``(dimension, error)``, nan when fewer than 2 ratios remain.
    """
    log_mu = jnp.log(jnp.take(dists, n2 - 1, axis=1) / jnp.take(dists, n1 - 1, axis=1))
    ok = jnp.isfinite(log_mu) & (log_mu > 0)
    mu = jnp.exp(log_mu)
    q95, q50 = jnp.nanpercentile(jnp.where(ok, mu, jnp.nan), jnp.asarray([95.0, 50.0]))
    ok = ok & (mu < 20 * (q95 - q50) + q50)
    log_mu = jnp.where(ok, log_mu, 0.0)
    n = jnp.sum(ok).astype(dists.dtype)
    sum_log = jnp.sum(log_mu)
    safe = jnp.where(ok, log_mu, 1.0)

    def score(d):
        ratio = jnp.where(ok, safe / -jnp.expm1(-d * safe), 0.0)
        return (n - 1) / d + (n2 - n1 - 1) * jnp.sum(ratio) - (n2 - 1) * sum_log

    def grow(hi):
        return jnp.where(score(hi) > 0, hi * 2, hi)

    hi = jax.lax.fori_loop(0, 64, lambda _, h: grow(h), jnp.asarray(1.0, dists.dtype))
    d = _bisect_decreasing(score, jnp.asarray(1e-8, dists.dtype), hi)
    info = n / d**2 + (n2 - n1 - 1) * jnp.sum(jnp.where(ok, (safe / (2 * jnp.sinh(d * safe / 2))) ** 2, 0.0))
    usable = n >= 2
    return jnp.where(usable, d, jnp.nan), jnp.where(usable, 1 / jnp.sqrt(info), jnp.nan)


def gride(x, n1: int = 1, n2: int | None = None, *, exclude_duplicates: bool = False):
    """Gride ID and standard error at neighbour orders (n1, n2 = 2 n1) (skdim ``GRIDE``)."""
    x = check_points(x, "x")
    n2 = 2 * n1 if n2 is None else n2
    check_neighbours(n1, x.shape[0], "n1", minimum=1)
    n2 = check_neighbours(n2, x.shape[0], "n2", minimum=2)
    if n1 >= n2:
        raise ValueError(f"n1={n1}, n2={n2}: expected n1 < n2")
    dist, _ = knn(x, n2, exclude_duplicates=exclude_duplicates)
    return gride_from_distances(dist, n1, n2)


def gride_multiscale(x, range_max: int = 64, *, exclude_duplicates: bool = False):
    """Gride at scales n1 = 1, 2, 4, ... with n2 = 2 n1 <= min(range_max, N - 1).

    Returns ``(scales, dimensions, errors, radii)``, radii the mean n2-th neighbour distance
    (skdim ``GRIDE(multiscale=True)``'s ``scales_``, ``dimension_scales_``, ``error_scales_``,
    ``radius_scales_``).
    """
    x = check_points(x, "x")
    if range_max < 2:
        raise ValueError(f"range_max={range_max}: expected at least 2")
    range_max = min(range_max, x.shape[0] - 1)
    dist, _ = knn(x, range_max, exclude_duplicates=exclude_duplicates)
    scales = 2 ** np.arange(int(np.log2(range_max)))
    dims, errs = jax.vmap(gride_from_distances, in_axes=(None, 0, 0))(dist, jnp.asarray(scales), jnp.asarray(2 * scales))
    radii = jnp.mean(dist[:, 2 * scales - 1], axis=0)
    return scales, dims, errs, radii
