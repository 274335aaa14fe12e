"""P24 Less is More: Local Intrinsic Dimensions of Contextual Language Models.

Local (pointwise) intrinsic dimension: for every point take its ``n_neighbors`` (L) nearest
neighbours and run a global estimator on that neighbourhood alone; report the values and their
mean and spread (the paper tracks the mean local TwoNN dimension, L = 128, across training).

Implemented: local TwoNN and local MLE, vectorised over neighbourhoods in memory-bounded blocks
(no Python loop over points), optionally split over the devices of a mesh (on a CPU host, one
fake device per core puts every core to work). The neighbourhood of point i is its L nearest
neighbours *without* the point itself, exactly as scikit-dimension's ``fit_pw`` /
``asPointwise`` (``get_nn`` then ``estimator.fit(X[knn[i]])``), which are the parity references.
Inside a neighbourhood, neighbours are again exact:

- local TwoNN on CPU reads each point's two nearest neighbourhood members off its own global
  neighbour list (:func:`local_twonn_from_knn`; no distances inside neighbourhoods, so the cost
  does not grow with D), falling back to brute force (:func:`geometry.knn.two_nearest_within`)
  for a block where a list holds fewer than two members;
- local MLE on CPU selects by float32 keys with a certificate
  (:func:`geometry.knn.neighbours_within_by_float32_keys`), a block it cannot certify by
  :func:`geometry.knn.neighbours_within`;
- on accelerators both take the brute force with ``top_k`` (the paths timed on an H200).

Measured at N = 20k, L = 128, float64, on 2 CPU cores as 2 devices against skdim's loop
(``results/geometry_skdim_local.md``): local TwoNN 14.4x (d = 20) / 11.1x (d = 128), local MLE
15.5x / 10.4x, estimates equal to 7e-15; the exact global kNN alone takes 74 % / 76 % of local
TwoNN's time.

Deviations from skdim ``fit_pw``: an inner ``k`` (MLE) larger than ``L - 1`` raises instead of
being lowered with a warning; a neighbourhood whose estimate cannot be formed gives nan, and
:func:`summarize` reports how many values were finite.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from geometry.intrinsic_dim import (
    check_choice,
    check_fraction,
    combine,
    mle_pointwise,
    twonn_from_ratios,
)
from geometry.knn import (
    check_block_size,
    check_neighbours,
    check_points,
    knn,
    mesh_shards,
    neighbours_within,
    neighbours_within_by_float32_keys,
    over_row_blocks,
    query_blocks,
    selection_by_buffer,
    static_axis,
    two_nearest_within,
)

DEFAULT_NEIGHBOURHOOD = 128
MEMBERSHIP_SCAN = 64  # entries of each neighbour's own list searched before all L of them


def _blocks(n: int, block_size: int, mesh, mesh_axis) -> np.ndarray:
    """Point indices (blocks, block_size), the last block padded, as many blocks as the mesh
    axis divides."""
    return query_blocks(n, block_size, mesh_shards(mesh, mesh_axis))


def _over_neighbourhoods(fn, x, idx, rows):
    """``fn(points (L, D)) -> scalar`` for every neighbourhood ``x[idx[i]]``, i in ``rows``."""
    return jax.lax.map(lambda r: jax.vmap(lambda i: fn(x[i]))(idx[r]), rows)


def twonn_of_points(points: jax.Array, discard_fraction: float = 0.1, method: str = "linear"):
    """TwoNN of one small point set (L, D); pure, vmap-able."""
    d = two_nearest_within(points)
    return twonn_from_ratios(d[:, 1] / d[:, 0], discard_fraction, method)


def mle_of_points(points: jax.Array, k: int = 20, comb: str = "mle", unbiased: bool = False):
    """Levina-Bickel MLE (``k`` neighbours, combined by ``comb``) of one point set; vmap-able."""
    return combine(mle_pointwise(neighbours_within(points, k), unbiased), comb)


def _sharded_over_neighbourhoods(fn, x, idx, block_size: int, mesh, mesh_axis):
    rows = _blocks(idx.shape[0], block_size, mesh, mesh_axis)
    run = functools.partial(_over_neighbourhoods, fn)
    return over_row_blocks(run, (x, idx), rows, mesh, mesh_axis).reshape(-1)[: idx.shape[0]]


@functools.partial(jax.jit, static_argnames=("discard_fraction", "method", "block_size", "mesh", "mesh_axis"))
def local_twonn_from_neighbours(x, idx, discard_fraction: float = 0.1, method: str = "linear", block_size: int = 16,
                                mesh=None, mesh_axis="data"):
    """Local TwoNN for every row of ``idx`` (N, L) (neighbour indices into ``x``) by brute force
    inside each neighbourhood; jitted, and ``vmap``-able without a mesh (the checkpoint analysis
    maps it over a stack). Small blocks keep the (block, L, L) distances in cache: ~2x faster on
    CPU than 256 at L = 128. :func:`local_twonn_from_knn` is faster where the global distances
    are known."""
    fn = functools.partial(twonn_of_points, discard_fraction=discard_fraction, method=method)
    return _sharded_over_neighbourhoods(fn, x, idx, block_size, mesh, mesh_axis)


def _ratios_by_membership(member, dist, lists, nb):
    """``r2 / r1`` inside every neighbourhood ``nb`` (B, L) read off the neighbours' own sorted
    lists ``lists`` (N, S) and distances ``dist`` (N, >= S); ``member`` (B, N) marks each
    neighbourhood's points. Returns the ratios (B, L) and whether every point found two
    neighbourhood members among its first S entries."""
    scan = lists.shape[1]
    inside = member[jnp.arange(nb.shape[0])[:, None, None], lists[nb]]  # (B, L, S)
    first = jnp.argmax(inside, axis=-1)
    second = jnp.argmax(inside & (jnp.arange(scan) > first[..., None]), axis=-1)
    found = jnp.take_along_axis(inside, second[..., None], axis=-1)[..., 0] & (second > first)
    return dist[nb, second] / dist[nb, first], jnp.all(found)


@functools.partial(jax.jit, static_argnames=("discard_fraction", "method", "block_size", "mesh", "mesh_axis", "scan"))
def local_twonn_from_knn(x, dist, idx, discard_fraction: float = 0.1, method: str = "linear", block_size: int = 16,
                         mesh=None, mesh_axis="data", scan: int = MEMBERSHIP_SCAN):
    """Local TwoNN from the global neighbour lists ``dist``, ``idx`` (N, L) of :func:`knn`
    (duplicates kept), ``block_size`` neighbourhoods at a time; jitted, not for ``vmap``.

    For a point j of the neighbourhood N(i), its nearest points inside N(i) are the first
    entries of its own sorted list ``idx[j]`` that belong to N(i) (anything closer would be in
    that list), so ``r1``, ``r2`` are read off ``dist[j]``: no distances inside neighbourhoods,
    and no dependence on D. Membership is a (B, N) mask per block, set and cleared in place.
    The first ``scan`` entries are searched, then all L; a block where some point
    still has fewer than two members in its list is computed by brute force
    (:func:`twonn_of_points`). Same ratios as the brute force (the distances are the exact
    ones of :func:`knn`)."""
    n, n_neighbors = idx.shape
    scan = min(scan, n_neighbors)

    def run(x, dist, idx, rows):
        block = jnp.arange(rows.shape[1])[:, None]
        short = idx[:, :scan]

        def step(member, r):
            nb = idx[r]
            member = member.at[block, nb].set(True)

            def brute():
                d = jax.vmap(two_nearest_within)(x[nb])
                return d[..., 1] / d[..., 0]

            def all_entries():
                mu, found = _ratios_by_membership(member, dist, idx, nb)
                return jax.lax.cond(found, lambda: mu, brute)

            mu, found = _ratios_by_membership(member, dist, short, nb)
            mu = jax.lax.cond(found, lambda: mu, all_entries)
            estimate = jax.vmap(lambda m: twonn_from_ratios(m, discard_fraction, method))(mu)
            return member.at[block, nb].set(False), estimate

        return jax.lax.scan(step, jnp.zeros((rows.shape[1], n), bool), rows)[1]

    rows = _blocks(n, block_size, mesh, mesh_axis)
    return over_row_blocks(run, (x, dist, idx), rows, mesh, mesh_axis).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("k", "comb", "unbiased", "block_size", "mesh", "mesh_axis"))
def local_mle_from_neighbours(x, idx, k: int = 20, comb: str = "mle", unbiased: bool = False, block_size: int = 1,
                              mesh=None, mesh_axis="data"):
    """Local MLE for every row of ``idx`` (N, L) (neighbour indices into ``x``), ``block_size``
    neighbourhoods at a time; jitted. On CPU a block's neighbours come from
    :func:`geometry.knn.neighbours_within_by_float32_keys` (N = 20k, L = 128, d = 20: 1.4x
    faster), and a block it cannot certify is recomputed by :func:`neighbours_within`."""
    if not selection_by_buffer():
        fn = functools.partial(mle_of_points, k=k, comb=comb, unbiased=unbiased)
        return _sharded_over_neighbourhoods(fn, x, idx, block_size, mesh, mesh_axis)

    def run(x, idx, rows):
        def block(r):
            points = x[idx[r]]
            dist, certified = jax.vmap(lambda p: neighbours_within_by_float32_keys(p, k))(points)
            dist = jax.lax.cond(jnp.all(certified), lambda: dist,
                                lambda: jax.vmap(lambda p: neighbours_within(p, k))(points))
            return jax.vmap(lambda d: combine(mle_pointwise(d, unbiased), comb))(dist)

        return jax.lax.map(block, rows)

    rows = _blocks(idx.shape[0], block_size, mesh, mesh_axis)
    return over_row_blocks(run, (x, idx), rows, mesh, mesh_axis).reshape(-1)[: idx.shape[0]]


def local_twonn(
    x,
    n_neighbors: int = DEFAULT_NEIGHBOURHOOD,
    *,
    discard_fraction: float = 0.1,
    method: str = "linear",
    exclude_duplicates: bool = False,
    block_size: int = 16,
    mesh: Mesh | None = None,
    mesh_axis: str | tuple[str, ...] = "data",
) -> jax.Array:
    """Local TwoNN dimension of every point of ``x`` (N, D) on its ``n_neighbors`` neighbours
    (skdim ``TwoNN().fit_pw(x, n_neighbors=...)``). Returns (N,).

    ``mesh``: the kNN queries and the neighbourhoods are split over ``mesh_axis`` (on one CPU
    host, fake devices from ``--xla_force_host_platform_device_count`` put every core to work).
    On CPU without ``exclude_duplicates`` the estimates come from the global neighbour lists
    (:func:`local_twonn_from_knn`); otherwise by brute force inside each neighbourhood (with
    ``exclude_duplicates`` a point's own list lacks its copies, which its neighbourhood may hold).
    """
    check_fraction(discard_fraction, "discard_fraction")
    check_choice(method, "method", ("linear", "mle"))
    x = check_points(x, "x")
    n_neighbors = check_neighbours(n_neighbors, x.shape[0], "n_neighbors", minimum=3)
    block_size = check_block_size(block_size)
    dist, idx = knn(x, n_neighbors, exclude_duplicates=exclude_duplicates, mesh=mesh, mesh_axis=mesh_axis)
    args = (float(discard_fraction), method, block_size, mesh, static_axis(mesh_axis))
    if selection_by_buffer() and not exclude_duplicates:
        return local_twonn_from_knn(x, dist, idx, *args)
    return local_twonn_from_neighbours(x, idx, *args)


def local_mle(
    x,
    n_neighbors: int = DEFAULT_NEIGHBOURHOOD,
    *,
    k: int = 20,
    comb: str = "mle",
    unbiased: bool = False,
    exclude_duplicates: bool = False,
    block_size: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | tuple[str, ...] = "data",
) -> jax.Array:
    """Local Levina-Bickel MLE of every point: MLE (``k`` inner neighbours, combined by ``comb``)
    fitted on its ``n_neighbors`` neighbours (skdim ``asPointwise(x, MLE(), n_neighbors)``; skdim's
    MLE has no ``fit_pw``). The classical per-point Levina-Bickel value on L neighbours is
    ``intrinsic_dim.mle_pointwise(knn(x, L)[0])`` (skdim ``MLE().fit(x, n_neighbors=L).dimension_pw_``).
    ``block_size=None``: one neighbourhood at a time on CPU (keeps the selection buffer in cache:
    fastest at L = 128; 2, 4: 1.2x, 1.3x slower), 256 elsewhere. ``mesh``: as
    :func:`local_twonn`."""
    check_choice(comb, "comb", ("mle", "mean", "median"))
    x = check_points(x, "x")
    n_neighbors = check_neighbours(n_neighbors, x.shape[0], "n_neighbors", minimum=3)
    k = check_neighbours(k, n_neighbors, "k", minimum=2)
    block_size = check_block_size((1 if selection_by_buffer() else 256) if block_size is None else block_size)
    _, idx = knn(x, n_neighbors, exclude_duplicates=exclude_duplicates, mesh=mesh, mesh_axis=mesh_axis)
    return local_mle_from_neighbours(x, idx, k, comb, unbiased, block_size, mesh, static_axis(mesh_axis))


def summarize(values) -> dict[str, float]:
    """Mean and spread of local estimates over their finite values: mean, std, median, 10th and
    90th percentiles, and the number of finite / total values."""
    values = jnp.asarray(values).reshape(-1)
    finite = jnp.isfinite(values)
    v = jnp.where(finite, values, jnp.nan)
    q10, q50, q90 = jnp.nanpercentile(v, jnp.asarray([10.0, 50.0, 90.0]))
    return {
        "mean": float(jnp.nanmean(v)),
        "std": float(jnp.nanstd(v)),
        "median": float(q50),
        "q10": float(q10),
        "q90": float(q90),
        "n_finite": int(jnp.sum(finite)),
        "n": int(values.shape[0]),
    }
