"""Exact k-nearest neighbours: sklearn parity, blocks, sharding, duplicates, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from sklearn.neighbors import NearestNeighbors

from geometry.knn import (
    knn,
    neighbours_within,
    smallest_per_row,
    top_candidates,
    two_nearest_within,
)


def _reference(x, k):
    return NearestNeighbors(n_neighbors=k).fit(x).kneighbors()


@pytest.mark.parametrize("block_size", [7, 64, None])
def test_knn_matches_sklearn_in_float64(x64, block_size):
    x = np.random.default_rng(0).normal(size=(301, 12))
    dist, idx = knn(x, 9, block_size=block_size)
    ref_d, ref_i = _reference(x, 9)
    assert dist.dtype == jnp.float64 and idx.shape == (301, 9)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-12)
    np.testing.assert_array_equal(idx, ref_i)


def test_knn_float32_keys_fall_back_to_float64_where_they_cannot_be_trusted(x64):
    # clusters of spread 1e-3 at distances ~1e4: float32 keys cannot order points in a cluster
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(40, 8)) * 1e4)[rng.integers(0, 40, 400)] + rng.normal(size=(400, 8)) * 1e-3
    c32 = (x - x.mean(0)).astype(np.float32)
    d2_32 = (c32 * c32).sum(1)[:, None] + (c32 * c32).sum(1)[None] - 2 * c32 @ c32.T
    np.fill_diagonal(d2_32, np.inf)
    ref_d, ref_i = _reference(x, 3)
    assert (np.argsort(d2_32, 1, kind="stable")[:, :3] != ref_i).any()  # float32 alone is wrong
    dist, idx = knn(x, 3)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-12)
    np.testing.assert_array_equal(idx, ref_i)


@pytest.mark.parametrize("count", [1, 10, 32])
def test_two_level_candidates_select_the_same_keys_as_top_k(count):
    rng = np.random.default_rng(count)
    keys = rng.normal(size=(5, 3001)).astype(np.float32)  # 3001: not a multiple of any chunk
    keys[:, rng.choice(3001, 2000, replace=False)] = -np.inf  # excluded points, as in knn
    keys[1, 25:] = -np.inf  # fewer finite keys than some counts: real indices all the same
    keys[0, :40] = 7.0  # ties across chunks
    got = np.asarray(top_candidates(jnp.asarray(keys), count))
    expected = np.asarray(jax.lax.top_k(jnp.asarray(keys), count)[0])
    assert got.shape == (5, count) and all(len(set(row)) == count for row in got)
    assert got.min() >= 0 and got.max() < 3001
    np.testing.assert_array_equal(np.sort(np.take_along_axis(keys, got, 1), 1), np.sort(expected, 1))


@pytest.mark.parametrize("buffer", [True, False], ids=["cpu-buffer", "top-k"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_two_nearest_within_matches_sklearn_with_duplicates(x64, dtype, rtol, buffer, monkeypatch):
    """CPU buffer: float64 packs the column into the keys' last bits, float32 takes two passes;
    the accelerator path (argmin) is forced on CPU here."""
    monkeypatch.setattr("geometry.knn.selection_by_buffer", lambda: buffer)
    x = np.random.default_rng(5).normal(size=(128, 20)) * 3.0 + 50.0  # far from the origin
    x[7] = x[3]  # an exact copy: distance exactly 0, as sklearn
    x[9] = x[3]  # and a second copy: the two nearest of 3, 7 and 9 are both at 0
    got = np.asarray(jax.vmap(two_nearest_within)(jnp.asarray(np.stack([x, x[::-1]]).astype(dtype))))
    ref, _ = _reference(x.astype(dtype).astype(np.float64), 2)
    assert got.dtype == dtype
    np.testing.assert_allclose(got[0], ref, rtol=rtol)
    np.testing.assert_allclose(got[1], ref[::-1], rtol=rtol)
    assert np.all(got[0][[3, 7, 9]] == 0.0)


def test_knn_two_level_path_matches_sklearn(x64):
    x = np.random.default_rng(3).normal(size=(2000, 6))  # 2000 points, k + margin = 10: two-level
    dist, idx = knn(x, 2)
    ref_d, ref_i = _reference(x, 2)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-12)
    np.testing.assert_array_equal(idx, ref_i)


def test_knn_float32_is_close_and_never_returns_self():
    x = np.random.default_rng(1).normal(size=(200, 5)).astype(np.float32)
    dist, idx = knn(x, 4)
    ref_d, ref_i = _reference(x.astype(np.float64), 4)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-5)
    np.testing.assert_array_equal(idx, ref_i)
    assert not np.any(np.asarray(idx) == np.arange(200)[:, None])


def test_knn_far_from_origin_is_exact(x64):
    """Centring before the expanded-form distances keeps a large offset harmless."""
    x = np.random.default_rng(2).normal(size=(150, 3)) + 1e6
    dist, idx = knn(x, 5)
    ref_d, ref_i = _reference(x, 5)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-9)
    np.testing.assert_array_equal(idx, ref_i)


def test_knn_sharded_over_mesh_equals_unsharded(x64):
    x = np.random.default_rng(3).normal(size=(203, 6))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    d1, i1 = knn(x, 6, block_size=10, mesh=mesh)
    d0, i0 = knn(x, 6, block_size=10)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=0, atol=0)


def test_duplicates_kept_at_zero_or_excluded(x64):
    rng = np.random.default_rng(4)
    base = rng.normal(size=(100, 4))
    x = np.concatenate([base, base[:1], base[:1], base[:1]])  # point 0 and its copies 100..102
    copies = [0, 100, 101, 102]
    dist, idx = knn(x, 4)
    np.testing.assert_array_equal(np.asarray(dist)[copies, :3], 0.0)
    for i in copies:
        assert set(np.asarray(idx)[i, :3]) == set(copies) - {i}
    dist_ex, idx_ex = knn(x, 4, exclude_duplicates=True)
    assert np.all(np.asarray(dist_ex) > 0)
    ref_d, ref_i = _reference(base, 4)
    for i in copies:
        np.testing.assert_allclose(dist_ex[i], ref_d[0], rtol=1e-12)
        np.testing.assert_array_equal(idx_ex[i], ref_i[0])


def test_exclude_duplicates_needs_enough_distinct_points():
    x = np.zeros((6, 2))
    x[5] = 1.0
    with pytest.raises(ValueError, match="not copies"):
        knn(x, 2, exclude_duplicates=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_columns", [40, 41])
def test_smallest_per_row_equals_a_stable_sort_with_ties_zeros_and_inf(x64, dtype, n_columns):
    rng = np.random.default_rng(11)
    v = rng.normal(size=(200, n_columns)).astype(dtype)
    v[:, 8:24] = np.round(v[:, 8:24], 1)  # many exact ties
    v[3] = 0.0  # a row of exact zeros (duplicate points)
    v[4, ::2] = -0.0  # -0.0 ties with 0.0
    v[4, 1::2] = 0.0
    v[5, [2, 9, 17]] = 0.0
    v[6, :30] = np.inf  # few finite entries: inf fills the rest
    v[7, 1] = v[7, 0] = v[7].min() - 1.0  # the smallest twice, side by side
    order = np.argsort(v, axis=1, kind="stable")
    for k in [1, 2, 7, 20, n_columns]:
        smallest, first = smallest_per_row(jnp.asarray(v), k)
        assert smallest.dtype == v.dtype and smallest.shape == (200, k) and first.shape == (200,)
        np.testing.assert_array_equal(np.asarray(smallest), np.sort(v, axis=1)[:, :k])
        np.testing.assert_array_equal(np.asarray(first), order[:, 0])
    with pytest.raises(ValueError, match="k="):
        smallest_per_row(jnp.asarray(v), n_columns + 1)


@pytest.mark.parametrize("buffer", [True, False], ids=["cpu-buffer", "top-k"])
def test_neighbours_within_keeps_duplicates_at_exact_zero(x64, buffer, monkeypatch):
    """The nearest copy is at exactly 0 (recomputed from coordinates); further copies are at 0
    to the rounding of the expanded form (sqrt of ~eps |x|^2). Both selection paths."""
    monkeypatch.setattr("geometry.knn.selection_by_buffer", lambda: buffer)
    x = np.random.default_rng(6).normal(size=(64, 7)) * 2.0 + 30.0
    copies = [5, 10, 20, 30]
    x[copies] = x[5]
    dist = np.asarray(neighbours_within(jnp.asarray(x), 6))
    ref_d, _ = _reference(x, 6)
    for i in copies:
        assert dist[i, 0] == 0.0 and np.all(dist[i, 1:3] < 1e-6)
        np.testing.assert_allclose(dist[i, 3:], ref_d[i, 3:], rtol=1e-12)
    others = np.setdiff1d(np.arange(64), copies)
    np.testing.assert_allclose(dist[others], ref_d[others], rtol=1e-12)


def test_neighbours_within_vmaps_over_neighbourhoods(x64):
    pts = np.random.default_rng(5).normal(size=(4, 30, 3))
    dist = jax.vmap(lambda p: neighbours_within(p, 5))(jnp.asarray(pts))
    for b in range(4):
        ref_d, _ = _reference(pts[b], 5)
        np.testing.assert_allclose(dist[b], ref_d, rtol=1e-12)


@pytest.mark.parametrize(
    "x, k, match",
    [
        (np.zeros(10), 2, "2-D"),
        (np.full((10, 2), np.nan), 2, "NaN or inf"),
        (np.array([[0.0, 1.0], [np.inf, 0.0], [1.0, 1.0]]), 1, "NaN or inf"),
        (np.random.default_rng(0).normal(size=(5, 2)), 5, "fewer points than neighbours"),
        (np.random.default_rng(0).normal(size=(5, 2)), 0, "at least 1"),
    ],
)
def test_knn_rejects_bad_input(x, k, match):
    with pytest.raises(ValueError, match=match):
        knn(x, k)


def test_knn_rejects_non_int_k():
    with pytest.raises(TypeError, match="k: expected an int"):
        knn(np.zeros((5, 2)), 2.0)


def test_knn_on_the_project_mesh(x64):
    """core.mesh's (data, fsdp, tensor) mesh with Auto axes; queries split over 'data'."""
    from core.mesh import MeshConfig, make_mesh

    mesh = make_mesh(MeshConfig(data=4, fsdp=2))
    x = np.random.default_rng(6).normal(size=(97, 5))
    d1, i1 = knn(x, 3, mesh=mesh, mesh_axis="data")
    d0, i0 = _reference(x, 3)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_neighbours_by_float32_keys_equal_the_exact_selection_where_certified(x64, dtype):
    """Certified neighbourhoods give neighbours_within's distances, with copies of points (zeros),
    tiny and huge scales and a set far from the origin."""
    from geometry.knn import neighbours_within_by_float32_keys

    rng = np.random.default_rng(3)
    pts = rng.normal(size=(6, 64, 5)) * np.array([1.0, 1.0, 1.0, 1e-3, 1e3, 1.0])[:, None, None]
    pts[5] += 100.0
    pts[:, [7, 9]] = pts[:, [3]]
    pts = jnp.asarray(pts, dtype)
    dist, certified = jax.vmap(lambda p: neighbours_within_by_float32_keys(p, 10))(pts)
    exact = jax.vmap(lambda p: neighbours_within(p, 10))(pts)
    assert bool(jnp.all(certified))
    np.testing.assert_array_equal(np.asarray(dist), np.asarray(exact))
    ref_d, _ = _reference(np.asarray(pts[1], np.float64), 10)
    np.testing.assert_allclose(np.asarray(dist[1])[:, 1:], ref_d[:, 1:], rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sort_floats_equals_numpy_sort(x64, dtype):
    from geometry.knn import sort_floats

    rng = np.random.default_rng(4)
    v = rng.normal(size=(50, 37)).astype(dtype) * rng.choice([1e-30, 1.0, 1e30], size=(50, 1)).astype(dtype)
    v[:, :3] = np.array([np.inf, -np.inf, np.finfo(dtype).smallest_subnormal], dtype)
    v[::2, 5] = 0.0
    out = np.asarray(sort_floats(jnp.asarray(v), axis=1))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.sort(v, axis=1))
    np.testing.assert_array_equal(np.asarray(sort_floats(jnp.asarray(v[:, 0]), axis=0)), np.sort(v[:, 0]))
