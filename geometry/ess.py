"""ESS: expected simplex skewness (Johnsson, Soneson & Fontes 2015; scikit-dimension 0.5.0
``ESS``, after the R package intrinsicDimension).

For one neighbourhood (a local patch): centre the points at their mean, form groups of ``d + 1``
centred vectors, and compare the simplices they span with the uniform ball. Version 'a':
``ess = sum_groups vol / sum_groups prod |v|``, vol = sqrt |det(V V^T)| (the group's volume
times d!); version 'b' (d = 1 only): ``ess = sum |<u, v>| / sum |u| |v|``. The dimension n is
read off the closed-form expectation for uniform data in an n-ball ('a':
``(G(n/2) / G((n+1)/2))^d G(n/2) / G((n-d)/2)``, 0 for n <= d; 'b':
``2 / (sqrt(pi) n) G((n+2)/2) / G((n+1)/2)``) by linear interpolation between integers.

The global estimate (skdim ``ESS().fit(x)``) runs this on every point's ``k`` = 100 nearest
neighbours (the point itself excluded) and takes the mean (or median): :func:`ess`. Per-point
values come from :func:`ess_pointwise` (vmapped in blocks, no Python loop), one patch from
:func:`ess_of_patch` (skdim ``fit_once``). Run under ``jax.enable_x64(True)`` for skdim parity
(rtol 1e-6).

Groups: skdim uses every group of ``d + 1`` of the k vectors when there are at most 5000 (the
default d = 1, k = 100 gives 4950 pairs: deterministic), otherwise 5000 groups drawn without
replacement by numpy. Deviations from scikit-dimension 0.5.0:

- Above 5000 groups (``max_groups``) we draw ``max_groups`` groups per point from
  ``jax.random`` (``key``), each uniform over the groups, independently (so with replacement
  across groups); the estimate has the same expectation but not skdim's numbers. Exact groups
  can be passed (``groups``) instead, e.g. to replay skdim's draws.
- The expected-skewness table is tabulated once from log-gamma up to dimension 2000
  (``MAX_DIMENSION``); a skewness beyond it gives nan (skdim extends its table without bound and
  does not terminate for ess >= 1 in version 'a').
- Fewer points than neighbours raises instead of lowering ``k`` with a warning; at least 2
  features are required (as skdim).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from geometry.intrinsic_dim import check_choice, combine
from geometry.knn import check_neighbours, check_points, knn

VERSIONS = ("a", "b")
MAX_GROUPS = 5000
MAX_DIMENSION = 2000
DEFAULT_NEIGHBOURS = 100


def expected_skewness(ver: str = "a", d: int = 1, max_dim: int = MAX_DIMENSION) -> np.ndarray:
    """Expected simplex skewness of uniform data in the n-ball for n = 1..max_dim (host, float64)."""
    check_choice(ver, "ver", VERSIONS)
    n = np.arange(1, max_dim + 1, dtype=np.float64)
    lg = np.vectorize(math.lgamma)
    if ver == "b":
        if d != 1:
            raise ValueError(f"d={d}: version 'b' supports only d = 1")
        return 2 / (np.sqrt(np.pi) * n) * np.exp(lg((n + 2) / 2) - lg((n + 1) / 2))
    factor1 = np.exp(lg(n / 2) - lg((n + 1) / 2))
    above = n > d
    factor2 = np.where(above, np.exp(lg(n / 2) - lg(np.where(above, (n - d) / 2, 1.0))), 0.0)
    return factor1**d * factor2


def dimension_from_skewness(ess_value: jax.Array, table: jax.Array, ver: str = "a") -> jax.Array:
    """Invert the expected-skewness table (n = 1, 2, ...) by linear interpolation between the
    integers that bracket ``ess_value`` (increasing in n for 'a', decreasing for 'b'); scalar."""
    if ver == "a":
        below = jnp.sum(table <= ess_value)  # the largest n with table(n) <= ess
    else:
        below = jnp.sum(table > ess_value)  # the largest n with table(n) > ess
    lo = jnp.clip(below - 1, 0, table.shape[0] - 2)
    frac = (ess_value - table[lo]) / (table[lo + 1] - table[lo])
    inside = (below >= 1) & (below < table.shape[0])
    return jnp.where(inside & ~jnp.isnan(ess_value), below + frac, jnp.nan)


def all_groups(k: int, size: int) -> np.ndarray:
    """Every group of ``size`` indices out of ``k`` (lexicographic), shape (C(k, size), size)."""
    return np.asarray(list(itertools.combinations(range(k), size)), dtype=np.int32).reshape(-1, size)


def random_groups(key: jax.Array, k: int, size: int, count: int) -> jax.Array:
    """``count`` groups of ``size`` distinct indices out of ``k``, each uniform (sorted rows)."""
    picks = jnp.zeros((count, 0), jnp.int32)
    for j, sub in enumerate(jax.random.split(key, size)):
        r = jax.random.randint(sub, (count,), 0, k - j)
        for col in range(j):  # skip the earlier picks (ascending) so the draws stay distinct
            r = r + (r >= picks[:, col])
        picks = jnp.sort(jnp.concatenate([picks, r[:, None]], axis=1), axis=1)
    return picks


def skewness_of_patch(points: jax.Array, groups: jax.Array, ver: str = "a") -> jax.Array:
    """Simplex skewness of one patch (L, D) over index groups (M, d + 1); pure, vmap-able."""
    vectors = points - jnp.mean(points, axis=0)
    gram = jnp.dot(vectors, vectors.T, precision=jax.lax.Precision.HIGHEST)
    lengths = jnp.sqrt(jnp.sum(vectors**2, axis=1))
    weight = jnp.sum(jnp.prod(lengths[groups], axis=1))
    if ver == "b":
        return jnp.sum(jnp.abs(gram[groups[:, 0], groups[:, 1]])) / weight
    if groups.shape[1] == 2:
        i, j = groups[:, 0], groups[:, 1]
        det = gram[i, i] * gram[j, j] - gram[i, j] * gram[j, i]
    else:
        det = jnp.linalg.det(gram[groups[:, :, None], groups[:, None, :]])
    return jnp.sum(jnp.sqrt(jnp.abs(det))) / weight


@functools.partial(jax.jit, static_argnames=("ver",))
def ess_of_patch(points: jax.Array, groups: jax.Array, table: jax.Array, ver: str = "a"):
    """``(dimension, ess)`` of one patch (skdim ``ESS(ver, d).fit_once``); ``groups`` (M, d + 1)."""
    value = skewness_of_patch(points, groups, ver)
    if groups.shape[1] > points.shape[1]:  # more vectors per group than features: degenerate
        value = jnp.full_like(value, 0.0 if ver == "a" else 1.0)
    return dimension_from_skewness(value, table, ver), value


@functools.partial(jax.jit, static_argnames=("ver", "group_size", "max_groups", "block_size"))
def ess_pointwise_from_neighbours(
    x, idx, table, groups=None, key=None, *, ver: str = "a", group_size: int = 2,
    max_groups: int = MAX_GROUPS, block_size: int = 64,
):
    """``(dimensions, ess values)`` (N,) for the patches ``x[idx[i]]`` (idx (N, k)), blockwise
    ``vmap`` over points. Groups: ``groups`` shared (M, d + 1) or per point (N, M, d + 1), or
    else ``max_groups`` random groups of ``group_size`` per point from ``fold_in(key, i)``."""
    n, k = idx.shape
    block_size = min(block_size, n)
    n_blocks = -(-n // block_size)
    rows = jnp.minimum(jnp.arange(n_blocks * block_size), n - 1).reshape(n_blocks, block_size)

    def one(i):
        if groups is None:
            g = random_groups(jax.random.fold_in(key, i), k, group_size, max_groups)
        else:
            g = groups if groups.ndim == 2 else groups[i]
        return ess_of_patch(x[idx[i]], g, table, ver)

    dims, values = jax.lax.map(jax.vmap(one), rows)
    return dims.reshape(-1)[:n], values.reshape(-1)[:n]


def _groups_for(k: int, d: int, n_points: int, groups, key, max_groups: int):
    size = d + 1
    if groups is not None:
        groups = np.asarray(groups)
        if groups.ndim not in (2, 3) or groups.shape[-1] != size:
            raise ValueError(f"groups: expected shape (M, {size}) or (N, M, {size}), got {groups.shape}")
        if groups.ndim == 3 and groups.shape[0] != n_points:
            raise ValueError(f"groups: expected {n_points} rows of groups, got {groups.shape[0]}")
        if groups.min() < 0 or groups.max() >= k:
            raise ValueError(f"groups: indices must lie in [0, {k})")
        return jnp.asarray(groups, jnp.int32)
    if math.comb(k, size) <= max_groups:
        return jnp.asarray(all_groups(k, size))
    if key is None:
        raise ValueError(
            f"key: C({k}, {size}) = {math.comb(k, size)} groups exceed max_groups={max_groups}; "
            "pass key=jax.random.key(seed) to sample them (or groups=...)"
        )
    return None


def _check_version(ver: str, d: int) -> int:
    check_choice(ver, "ver", VERSIONS)
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d={d!r}: expected a positive int")
    if ver == "b" and d != 1:
        raise ValueError(f"d={d}: version 'b' supports only d = 1")
    return int(d)


def ess_patch(points, *, ver: str = "a", d: int = 1, groups=None, key=None, max_groups: int = MAX_GROUPS):
    """ESS of one local patch (L, D) (skdim ``ESS(ver, d).fit_once(points)``): ``(dimension, ess)``."""
    d = _check_version(ver, d)
    points = check_points(points, "points", min_points=d + 1)
    if points.shape[1] < 2:
        raise ValueError(f"points: expected at least 2 features (columns), got shape {tuple(points.shape)}")
    g = _groups_for(points.shape[0], d, 1, groups, key, max_groups)
    if g is None:
        g = random_groups(key, points.shape[0], d + 1, max_groups)
    elif g.ndim == 3:
        g = g[0]
    table = jnp.asarray(expected_skewness(ver, d), points.dtype)
    return ess_of_patch(points, g, table, ver)


def ess_pointwise(
    x,
    k: int = DEFAULT_NEIGHBOURS,
    *,
    ver: str = "a",
    d: int = 1,
    groups=None,
    key=None,
    max_groups: int = MAX_GROUPS,
    exclude_duplicates: bool = False,
    block_size: int = 64,
):
    """Local ESS of every point on its ``k`` nearest neighbours (skdim ``ESS().fit(x, n_neighbors=k)``
    ``.dimension_pw_`` and ``.essval_``): ``(dimensions, ess values)``, each (N,)."""
    d = _check_version(ver, d)
    x = check_points(x, "x")
    if x.shape[1] < 2:
        raise ValueError(f"x: expected at least 2 features (columns), got shape {tuple(x.shape)}")
    k = check_neighbours(k, x.shape[0], "k", minimum=d + 1)
    g = _groups_for(k, d, x.shape[0], groups, key, max_groups)
    _, idx = knn(x, k, exclude_duplicates=exclude_duplicates)
    table = jnp.asarray(expected_skewness(ver, d), x.dtype)
    return ess_pointwise_from_neighbours(
        x, idx, table, g, None if g is not None else key, ver=ver, group_size=d + 1,
        max_groups=int(max_groups), block_size=int(block_size),
    )


def ess(x, k: int = DEFAULT_NEIGHBOURS, *, comb: str = "mean", **kwargs) -> jax.Array:
    """Global ESS (skdim ``ESS(ver, d).fit(x, n_neighbors=k, comb=comb).dimension_``): the mean
    (or median) of :func:`ess_pointwise`; keyword arguments as there."""
    check_choice(comb, "comb", ("mean", "median"))
    dims, _ = ess_pointwise(x, k, **kwargs)
    return combine(dims, comb)
