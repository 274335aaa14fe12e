"""Exact k-nearest neighbours in JAX: blockwise over query rows, optionally sharded over devices.

``knn(x, k)`` returns, for every row of ``x``, the Euclidean distances to its ``k`` nearest other
rows (ascending) and their indices; the query point itself is never its own neighbour (the
convention of ``sklearn.neighbors.NearestNeighbors.kneighbors()`` without a query, which
scikit-dimension uses everywhere).

How it works, per block of query rows (memory ``O(block_size * N)``):

1. squared distances by the expanded form ``|q|^2 + |x|^2 - 2 q.x`` on mean-centred data (one
   matmul at ``Precision.HIGHEST``, so no TF32 on GPUs). Float64 input: the matmul runs on the
   centred data rounded to float32 (TwoNN at N = 20k: 1.45x faster on CPU, d = 20 and 128), and each
   block is certified: with the float32 error bound ``e = (D + 4) eps32 (|q| + max|x|)^2``, the
   k-th exact squared distance plus ``e`` must lie below every left-out candidate's key; a block
   that fails (e.g. tiny clusters far apart) is redone with float64 keys (``lax.cond``);
2. ``k + margin`` candidates by ``lax.top_k`` on float32 keys (XLA's fast CPU top-k exists for
   float32 only; float64 top-k on CPU is ~30x slower). For few candidates among many points the
   selection is two-level (:func:`top_candidates`): the best ``k + margin`` chunks by their
   maximum, then the best keys inside those chunks; the same set, ~10x cheaper than one
   ``top_k`` over 20k keys per row on CPU;
3. exact distances of the candidates recomputed from the raw coordinates as
   ``sqrt(sum((q - x_j)^2))`` in the input dtype (float64 under ``jax.enable_x64``), then sorted.

Step 3 makes every returned distance exact (exact duplicates give exactly 0, as in scikit-learn's
trees); the margin makes the neighbour *set* exact unless more than ``margin`` points tie with
the k-th neighbour within float32 key precision (relative 1e-7 of the squared distance).

Duplicate points (identical rows) — the policy:

- ``exclude_duplicates=False`` (default, scikit-learn / scikit-dimension parity): copies of a
  point are ordinary neighbours at distance exactly 0. Estimators that take ``log`` of distance
  ratios then see ``0`` or ``inf``; each estimator documents what it does with them (TwoNN drops
  such points like skdim, MLE returns 0 like skdim).
- ``exclude_duplicates=True``: exact copies of the query are removed from its candidate list, so
  neighbour distances are strictly positive (MADA's convention, and the recommended setting for
  float32 embeddings with repeated rows). Every point must then have at least ``k`` points that
  are not copies of it.

With ``mesh``, the query blocks are laid out along ``mesh_axis`` (``NamedSharding``) and each
device runs its share (:func:`over_row_blocks`); the data set itself is replicated on every
device. On one CPU host, fake devices (``--xla_force_host_platform_device_count``, one per core)
run their shares on separate cores: XLA's CPU ``top_k`` and sort are single-threaded.

Inside small point sets (neighbourhoods, ``vmap``-able): :func:`neighbours_within` (exact),
:func:`neighbours_within_by_float32_keys` (cheaper, with a certificate), :func:`two_nearest_within`;
:func:`smallest_per_row` and :func:`sort_floats` select and sort floats by their order-preserving
integer bit patterns, which XLA's CPU compares faster than floats.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

BLOCK_ELEMENTS = 2**24  # block_size * N distance entries per block when block_size is None
BLOCK_ELEMENTS_ONE_TOP_K_CPU = 2**20  # the same on CPU when one top_k runs over each whole row
DEFAULT_MARGIN = 8
TWO_LEVEL_MAX_COUNT = 32  # above this many candidates one top_k is as fast on CPU


def check_points(x, name: str = "x", min_points: int = 2) -> jax.Array:
    """Validate a point cloud: a finite real 2-D array (N, D) with at least ``min_points`` rows.

    Integer input is cast to the default float dtype; the result is a JAX array.
    """
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array of shape (N, D), got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (N points, D features), got shape {tuple(x.shape)}")
    if jnp.issubdtype(x.dtype, jnp.complexfloating) or x.dtype == bool:
        raise TypeError(f"{name}: expected real numbers, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.asarray(x, dtype=jnp.result_type(float))
    x = jnp.asarray(x)
    if x.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one feature column, got shape {tuple(x.shape)}")
    if x.shape[0] < min_points:
        raise ValueError(f"{name}: expected at least {min_points} points (rows), got {x.shape[0]}")
    if not bool(jnp.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or inf values")
    return x


def check_block_size(block_size) -> int:
    """Validate a block size: a positive int."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size={block_size!r}: expected a positive int")
    return int(block_size)


def check_neighbours(k: int, n_points: int, name: str = "k", minimum: int = 1) -> int:
    """Validate a neighbour count: an int with ``minimum <= k <= n_points - 1``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(k).__name__}")
    if k < minimum:
        raise ValueError(f"{name}={k}: expected at least {minimum}")
    if k > n_points - 1:
        raise ValueError(
            f"{name}={k}: fewer points than neighbours; {n_points} points give at most "
            f"{n_points - 1} neighbours per point"
        )
    return int(k)


def duplicate_groups(x) -> np.ndarray:
    """Group id per row: rows share an id exactly when they are identical (host-side)."""
    _, inverse = np.unique(np.asarray(x), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int32)


def top_candidates(keys: jax.Array, count: int) -> jax.Array:
    """Indices of the ``count`` largest ``keys`` of every row (B, N), in no particular order.

    Two-level for small ``count``: every row is cut into chunks of about ``sqrt(N / count)``
    keys; the ``count`` chunks with the largest maxima hold the ``count`` largest keys (a key
    outside them is beaten by each of their maxima), so ``top_k`` runs over the chunk maxima and
    then over ``count`` chunks (plus the remainder keys) instead of over all N keys. Ties may
    resolve differently from one ``top_k``: the selected keys are the same values.
    """
    b, n = keys.shape
    chunk = max(8, 2 ** round(math.log2(math.sqrt(n / count))))
    if count > TWO_LEVEL_MAX_COUNT or n < 4 * chunk * count:
        return jax.lax.top_k(keys, count)[1]
    whole = n - n % chunk  # the last n % chunk keys join the candidates directly
    chunks = keys[:, :whole].reshape(b, -1, chunk)
    _, best = jax.lax.top_k(chunks.max(axis=-1), count)
    inside = jnp.take_along_axis(chunks, best[..., None], axis=1).reshape(b, -1)
    index = (best[..., None] * chunk + jnp.arange(chunk)).reshape(b, -1)
    inside = jnp.concatenate([inside, keys[:, whole:]], axis=1)
    index = jnp.concatenate([index, jnp.broadcast_to(jnp.arange(whole, n), (b, n - whole))], axis=1)
    _, position = jax.lax.top_k(inside, count)
    return jnp.take_along_axis(index, position, axis=1)


def _block_neighbours(x, key_points, key_sq, groups, rows, *, k: int, n_candidates: int):
    """Exact k nearest neighbours of the query rows ``rows`` (B,) among all rows of ``x``.

    Candidates come from the expanded-form squared distances of ``key_points`` (the centred data,
    in the input dtype or rounded to float32) with squared norms ``key_sq``. Returns
    ``(distances, indices, cutoff)``: ``cutoff`` (B,) is the largest key squared distance among
    the candidates, so every point left out has a key at least that large.
    """
    q = key_points[rows]
    d2 = key_sq[rows][:, None] + key_sq[None, :] - 2.0 * jnp.dot(
        q, key_points.T, precision=jax.lax.Precision.HIGHEST
    )
    excluded = jnp.arange(x.shape[0])[None, :] == rows[:, None]
    if groups is not None:
        excluded = excluded | (groups[None, :] == groups[rows][:, None])
    keys = jnp.where(excluded, -jnp.inf, -d2).astype(jnp.float32)
    cand = top_candidates(keys, n_candidates)
    cutoff = -jnp.min(jnp.take_along_axis(keys, cand, axis=1), axis=1)
    cand_ok = ~jnp.take_along_axis(excluded, cand, axis=1)
    diff = x[rows][:, None, :] - x[cand]
    dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
    dist = jnp.where(cand_ok, dist, jnp.inf)
    order = jnp.argsort(dist, axis=1, stable=True)[:, :k]
    return jnp.take_along_axis(dist, order, axis=1), jnp.take_along_axis(cand, order, axis=1), cutoff


def _squared_distances_within(points: jax.Array) -> jax.Array:
    """(L, L) expanded-form squared distances of the centred rows, ``inf`` on the diagonal."""
    n = points.shape[0]
    centred = points - jnp.mean(points, axis=0)
    sq = jnp.sum(centred * centred, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * jnp.dot(centred, centred.T,
                                                   precision=jax.lax.Precision.HIGHEST)
    return jnp.where(jnp.eye(n, dtype=bool), jnp.inf, d2)


def _sortable_bits(values: jax.Array) -> jax.Array:
    """float64 -> int64 (float32 -> int32) with the same order: the bit pattern, negatives
    flipped, -0.0 taken as 0.0 (on the bits: a float comparison with 0 would take subnormals as 0
    where XLA flushes them). Integer min/max have no NaN rules, so XLA's CPU code for them is
    cheaper."""
    int_type = jnp.int64 if values.dtype == jnp.float64 else jnp.int32
    bits = jax.lax.bitcast_convert_type(values, int_type)
    bits = jnp.where(bits == jnp.iinfo(int_type).min, 0, bits)  # -0.0
    return jnp.where(bits < 0, bits ^ jnp.iinfo(int_type).max, bits)


def _float_of_bits(bits: jax.Array, dtype) -> jax.Array:
    """Inverse of :func:`_sortable_bits`."""
    return jax.lax.bitcast_convert_type(jnp.where(bits < 0, bits ^ jnp.iinfo(bits.dtype).max, bits), dtype)


def sort_floats(values: jax.Array, axis: int = -1) -> jax.Array:
    """``jnp.sort`` of float values (no NaN) by their order-preserving integer bit patterns: the
    same result (-0.0 comes out as 0.0), ~4x faster on XLA's CPU, whose float comparator carries
    NaN rules (128 float64 values in each of 20k rows: 0.055 s against 0.215 s)."""
    return _float_of_bits(jnp.sort(_sortable_bits(values), axis=axis), values.dtype)


def _smallest_keys(keys: jax.Array, k: int):
    """The ``k`` smallest integer ``keys`` (R, C) of every row, ascending, as (k, R), and the
    column of the smallest (R,) (ties: the lowest column); see :func:`smallest_per_row`."""
    n_rows = keys.shape[0]
    lowest, highest = jnp.iinfo(keys.dtype).min, jnp.iinfo(keys.dtype).max
    columns = keys.T  # (C, R): column j of every row is one contiguous vector

    def insert(j, carry):
        buffer, first = carry
        v = columns[j]
        first = jnp.where(v < buffer[0], j, first)
        below = jnp.concatenate([jnp.full_like(buffer[:1], lowest), buffer[:-1]], axis=0)
        return jnp.minimum(buffer, jnp.maximum(below, v[None])), first

    init = (jnp.full((k, n_rows), highest, keys.dtype), jnp.zeros((n_rows,), jnp.int32))
    return jax.lax.fori_loop(0, columns.shape[0], insert, init)


def smallest_per_row(values: jax.Array, k: int):
    """The ``k`` smallest entries of every row of ``values`` (R, C), ascending, and the column
    of the smallest (ties: the lowest column, as a stable sort). Values must not be NaN.

    Pure ``jnp``, no ``top_k`` / sort (XLA's CPU ``top_k`` is scalar code, ~10 us per 128-wide
    row): one pass over the columns keeps a sorted buffer of ``k`` values for all rows at once
    (vectorised over rows). Inserting ``v`` into the ascending buffer ``b`` (its largest entry
    dropped) is ``min(b_m, max(b_{m-1}, v))`` for every slot ``m`` at once (``b_{-1} = -inf``).
    Comparisons run on the order-preserving integer bit patterns (cheaper than float min/max on
    XLA's CPU). Returns ``(smallest (R, k), column (R,) int32)``.
    """
    if not 1 <= k <= values.shape[1]:
        raise ValueError(f"k={k}: expected 1 <= k <= {values.shape[1]} (the number of columns)")
    buffer, first = _smallest_keys(_sortable_bits(values), k)
    return _float_of_bits(buffer, values.dtype).T, first


def selection_by_buffer() -> bool:
    """Whether in-neighbourhood selection uses :func:`smallest_per_row` (on CPU, where XLA's
    ``top_k`` is scalar code) rather than ``top_k`` / ``argmin`` (accelerators, where the
    sequential pass over columns would be slow)."""
    return jax.default_backend() == "cpu"


def neighbours_within(points: jax.Array, k: int) -> jax.Array:
    """Distances (L, k) from every row of a small point set (L, D) to its ``k`` nearest other
    rows, ascending (exact neighbour set; no indices).

    Pure ``jnp`` (no validation, no host work): ``vmap`` it over a batch of neighbourhoods.
    Works on the expanded-form squared distances of the centred set (one small matmul, no gather
    of coordinates), the ``k`` smallest per row by :func:`smallest_per_row` on CPU, else by
    ``top_k`` (:func:`selection_by_buffer`); the nearest distance is recomputed from the
    coordinates (a copy of a point is at exactly 0), the others are exact to the rounding of the
    expanded form (relative ``eps * |centred|^2 / distance^2``, ~1e-15 in float64 inside a
    neighbourhood).
    """
    d2 = _squared_distances_within(points)
    if selection_by_buffer():
        sq, first = smallest_per_row(d2, k)
    else:
        negated, columns = jax.lax.top_k(-d2, k)
        sq, first = -negated, columns[:, 0]
    nearest = points - points[first]
    dist = jnp.sqrt(jnp.maximum(sq, 0.0))
    return dist.at[:, 0].set(jnp.sqrt(jnp.sum(nearest * nearest, axis=-1)))


def _exchange_pass(values: jax.Array, start: int) -> jax.Array:
    """One compare-exchange pass of odd-even transposition sort along the last axis: the pairs
    (start, start + 1), (start + 2, start + 3), ... put in order."""
    n = values.shape[-1]
    end = start + (n - start) // 2 * 2
    pairs = values[..., start:end].reshape(*values.shape[:-1], -1, 2)
    ordered = jnp.stack([pairs.min(axis=-1), pairs.max(axis=-1)], axis=-1).reshape(*values.shape[:-1], -1)
    return jnp.concatenate([values[..., :start], ordered, values[..., end:]], axis=-1)


def neighbours_within_by_float32_keys(points: jax.Array, k: int, margin: int = 3):
    """:func:`neighbours_within` with a cheaper selection, and a certificate: ``(distances (L, k),
    certified)``; where ``certified`` is true the distances equal :func:`neighbours_within`'s
    (to the summation order). CPU only (it runs :func:`_smallest_keys`); vmap-able.

    The expanded-form squared distances are rounded to float32 (monotone, so order is kept up
    to ties) and the column is packed into the low ``ceil(log2 L)`` bits of their int32 bit
    patterns: one pass of a ``k + margin`` int32 buffer finds the candidates (int32 lanes are
    twice as many as int64). Their squared distances are read back in the input dtype and put in
    order by one odd-even transposition round (packing only swaps values within 2^-16 relative).
    Certified when the first ``k`` are then ascending and no larger than the other candidates,
    and the ``k``-th lies below every point left out (the last candidate's bucket, less float32
    rounding): it fails only for near-ties across ``margin + 1`` ranks or values displaced by
    more than one place."""
    n = points.shape[0]
    d2 = _squared_distances_within(points)
    column_bits = jnp.int32(2 ** max(1, (n - 1).bit_length()) - 1)
    keys = (_sortable_bits(d2.astype(jnp.float32)) & ~column_bits) | jnp.arange(n, dtype=jnp.int32)[None, :]
    buffer, _ = _smallest_keys(keys, min(k + margin, n - 1))
    columns = (buffer & column_bits).T
    candidates = jnp.take_along_axis(d2, columns, axis=1)
    sq = _exchange_pass(_exchange_pass(candidates, 0), 1)
    in_order = jnp.all(sq[:, 1:k] >= sq[:, : k - 1]) & jnp.all(sq[:, k - 1:k] <= sq[:, k:])
    left_out = _float_of_bits(buffer[-1] & ~column_bits, jnp.float32).astype(d2.dtype)
    bound = left_out - jnp.abs(left_out) * 2.0**-22 - float(jnp.finfo(jnp.float32).smallest_subnormal)
    certified = in_order & (jnp.all(sq[:, k - 1] < bound) | (sq.shape[1] == n - 1))
    first = jnp.take_along_axis(columns, jnp.argmin(candidates, axis=1)[:, None], axis=1)[:, 0]
    nearest = points - points[first]
    dist = jnp.sqrt(jnp.maximum(sq[:, :k], 0.0))
    return dist.at[:, 0].set(jnp.sqrt(jnp.sum(nearest * nearest, axis=-1))), certified


def two_nearest_within(points: jax.Array) -> jax.Array:
    """Distances (L, 2) from every row of a small point set (L, D) to its two nearest other rows,
    ascending. Pure ``jnp`` (vmap it over neighbourhoods): the two nearest on the expanded-form
    squared distances of the centred points (in their dtype), then both distances recomputed
    exactly from the coordinates. On CPU (:func:`selection_by_buffer`), float64: one pass of
    :func:`_smallest_keys` over keys that carry the column in their last ``ceil(log2 L)`` bits
    (order kept to ~2^-45 relative, far below the rounding of the expanded form); float32: the
    nearest, then the next with it masked; elsewhere two ``argmin`` passes. A third point within
    rounding of the second may be taken instead of it (its distance is then equal to rounding).
    Cheaper than :func:`neighbours_within` for TwoNN."""
    n = points.shape[0]
    d2 = _squared_distances_within(points)
    if not selection_by_buffer():
        first = jnp.argmin(d2, axis=1)
        second = jnp.argmin(d2.at[jnp.arange(n), first].set(jnp.inf), axis=1)
        pair = jnp.stack([first, second], axis=1)
    elif d2.dtype == jnp.float64:
        column_bits = jnp.int64(2 ** max(1, (n - 1).bit_length()) - 1)
        keys = (_sortable_bits(d2) & ~column_bits) | jnp.arange(n, dtype=jnp.int64)[None, :]
        pair = (_smallest_keys(keys, 2)[0].T & column_bits).astype(jnp.int32)
    else:
        _, first = smallest_per_row(d2, 1)
        _, second = smallest_per_row(jnp.where(jnp.arange(n)[None, :] == first[:, None], jnp.inf, d2), 1)
        pair = jnp.stack([first, second], axis=1)
    diff = points[:, None, :] - points[pair]
    dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
    return jnp.stack([dist.min(axis=1), dist.max(axis=1)], axis=1)


def _knn_blocks(x, groups, rows, *, k: int, n_candidates: int, float32_keys: bool = False):
    """rows: (blocks, B) query indices -> distances, indices of shape (blocks, B, k).

    ``float32_keys`` (float64 input): candidates from float32 keys, certified per block (see
    :func:`knn`); a block whose certificate fails is redone with keys in float64.
    """
    centred = x - jnp.mean(x, axis=0)
    sq_norms = jnp.sum(centred * centred, axis=1)
    exact_keys = functools.partial(
        _block_neighbours, x, centred, sq_norms, groups, k=k, n_candidates=n_candidates
    )
    if not float32_keys:
        return jax.lax.map(lambda r: exact_keys(r)[:2], rows)
    centred32 = centred.astype(jnp.float32)
    fast_keys = functools.partial(
        _block_neighbours, x, centred32, jnp.sum(centred32 * centred32, axis=1), groups, k=k,
        n_candidates=n_candidates,
    )
    norms = jnp.sqrt(sq_norms)
    key_error = (x.shape[1] + 4) * jnp.finfo(jnp.float32).eps * (norms + jnp.max(norms)) ** 2

    def one_block(r):
        dist, idx, cutoff = fast_keys(r)
        certified = jnp.all(dist[:, -1] ** 2 + key_error[r] < cutoff)
        return jax.lax.cond(certified, lambda: (dist, idx), lambda: exact_keys(r)[:2])

    return jax.lax.map(one_block, rows)


def over_row_blocks(run, replicated: tuple, rows, mesh: Mesh | None, mesh_axis):
    """``run(*replicated, rows)`` with the blocks of ``rows`` (blocks, B) split over ``mesh_axis``
    of ``mesh`` (each device runs its share; ``replicated`` arrays are whole on every device).
    Without a mesh, one call. Use inside ``jit``; ``rows`` may be a constant there. On Explicit
    mesh axes the (small, per-row) result is made whole on every device so callers can slice it."""
    if mesh is None:
        return run(*replicated, rows)
    spec = PartitionSpec(mesh_axis)
    explicit = any(mesh.axis_types[mesh.axis_names.index(a)] == AxisType.Explicit for a in np.atleast_1d(mesh_axis))
    if explicit:  # Auto axes: shard_map splits and gathers by itself
        rows = jax.reshard(rows, NamedSharding(mesh, spec))
    out = jax.shard_map(
        run, mesh=mesh, in_specs=(PartitionSpec(),) * len(replicated) + (spec,), out_specs=spec,
        check_vma=False,
    )(*replicated, rows)
    if explicit:  # per-row results are small: whole on every device, so callers can slice them
        out = jax.tree.map(lambda a: jax.reshard(a, NamedSharding(mesh, PartitionSpec())), out)
    return out


def mesh_shards(mesh: Mesh | None, mesh_axis) -> int:
    """Number of devices along ``mesh_axis`` (a name or tuple of names); 1 without a mesh."""
    return 1 if mesh is None else int(np.prod([mesh.shape[a] for a in np.atleast_1d(mesh_axis)]))


def static_axis(mesh_axis: str | tuple[str, ...]) -> str | tuple[str, ...]:
    """A mesh axis name, or a tuple of names, in a hashable form (a static ``jit`` argument)."""
    return mesh_axis if isinstance(mesh_axis, str) else tuple(mesh_axis)


@functools.partial(jax.jit, static_argnames=("k", "n_candidates", "mesh", "mesh_axis"))
def _knn_sharded(x, groups, rows, *, k: int, n_candidates: int, mesh, mesh_axis):
    """Query blocks split over ``mesh_axis`` (per-device work, data replicated)."""
    run = functools.partial(_knn_blocks, k=k, n_candidates=n_candidates,
                            float32_keys=x.dtype == jnp.float64)
    return over_row_blocks(run, (x, groups), rows, mesh, mesh_axis)


def default_block_size(n: int, n_candidates: int = 1) -> int:
    """Query rows per block when ``block_size`` is None: ``2**24 // n``, between 8 and 1024; on
    CPU with more than :data:`TWO_LEVEL_MAX_COUNT` candidates (one ``top_k`` over every whole
    row) ``2**20 // n``, which keeps a block's keys nearer the cache (N = 20k, k = 128, 64 rows
    against 838: 1.09x (d = 20) / 1.16x (d = 128) faster on one device, 1.19x / 1.07x on two;
    k = 2 or 20, with the two-level selection, is 1.1-1.2x slower in small blocks)."""
    one_top_k = n_candidates > TWO_LEVEL_MAX_COUNT and jax.default_backend() == "cpu"
    elements = BLOCK_ELEMENTS_ONE_TOP_K_CPU if one_top_k else BLOCK_ELEMENTS
    return int(min(1024, max(8, elements // n)))


def query_blocks(n: int, block_size: int, n_shards: int = 1) -> np.ndarray:
    """Query row indices (blocks, block_size), the last block padded with row n - 1."""
    block_size = min(block_size, n)
    n_blocks = -(-n // (block_size * n_shards)) * n_shards
    rows = np.minimum(np.arange(n_blocks * block_size), n - 1).astype(np.int32)
    return rows.reshape(n_blocks, block_size)


def knn_unchecked(x: jax.Array, k: int, *, block_size: int | None = None,
                  margin: int = DEFAULT_MARGIN,
                  n_queries: int | None = None) -> tuple[jax.Array, jax.Array]:
    """:func:`knn` without validation or host work (duplicates kept): pure ``jnp``, so it can be
    ``vmap``-ed over a stack of point sets. ``x`` must be finite with more than ``k`` rows.
    Keys stay in the input dtype (no certified float32 branch: under ``vmap`` a ``lax.cond``
    would run both branches).
    ``n_queries``: neighbours of the first ``n_queries`` rows only (among all rows)."""
    n = x.shape[0]
    queries = n if n_queries is None else n_queries
    n_candidates = min(k + margin, n)
    rows = jnp.asarray(query_blocks(queries, block_size or default_block_size(n, n_candidates)))
    dist, idx = _knn_blocks(x, None, rows, k=k, n_candidates=n_candidates)
    return dist.reshape(-1, k)[:queries], idx.reshape(-1, k)[:queries]


def knn(
    x,
    k: int,
    *,
    block_size: int | None = None,
    exclude_duplicates: bool = False,
    margin: int = DEFAULT_MARGIN,
    mesh: Mesh | None = None,
    mesh_axis: str | tuple[str, ...] = "data",
) -> tuple[jax.Array, jax.Array]:
    """Exact k nearest neighbours of every row of ``x`` (N, D), the row itself excluded.

    Returns ``(distances, indices)``, both (N, k), distances ascending, indices int32.
    ``block_size`` query rows are processed at a time (default: :func:`default_block_size`).
    See the module docstring for the duplicate-point policy and exactness.
    """
    x = check_points(x, "x")
    n = x.shape[0]
    k = check_neighbours(k, n, "k")
    n_candidates = min(k + margin, n)
    if block_size is None:
        block_size = default_block_size(n, n_candidates)
    block_size = check_block_size(block_size)
    if margin < 0:
        raise ValueError(f"margin={margin}: expected a non-negative int")
    groups = None
    if exclude_duplicates:
        groups_np = duplicate_groups(x)
        available = n - np.bincount(groups_np)[groups_np]
        if available.min() < k:
            raise ValueError(
                f"k={k}: with exclude_duplicates=True point {int(available.argmin())} has only "
                f"{int(available.min())} points that are not copies of it"
            )
        groups = jnp.asarray(groups_np)
    rows = query_blocks(n, block_size, mesh_shards(mesh, mesh_axis))
    dist, idx = _knn_sharded(
        x, groups, jnp.asarray(rows), k=k, n_candidates=n_candidates, mesh=mesh, mesh_axis=static_axis(mesh_axis),
    )
    if mesh is not None:  # gather the shards: the (N, k) result is small next to the work
        replicated = NamedSharding(mesh, PartitionSpec())
        dist, idx = jax.device_put(dist, replicated), jax.device_put(idx, replicated)
    return dist.reshape(-1, k)[:n], idx.reshape(-1, k)[:n]
