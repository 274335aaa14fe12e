"""P24 local intrinsic dimension: parity with skdim's pointwise fits and a planted union."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geometry import local_id, manifolds

skdim = pytest.importorskip("skdim")


def _sphere_and_ball(n_each: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-sphere (in R^4) and an 8-ball, placed far apart in R^20; labels 0 / 1."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    s = jax.random.normal(k1, (n_each, 4))
    s = s / jnp.linalg.norm(s, axis=1, keepdims=True)
    g = jax.random.normal(k2, (n_each, 8))
    radius = jax.random.uniform(k3, (n_each, 1)) ** (1 / 8)
    b = g / jnp.linalg.norm(g, axis=1, keepdims=True) * radius
    x = np.zeros((2 * n_each, 20))
    x[:n_each, :4] = np.asarray(s)
    x[n_each:, 4:12] = np.asarray(b)
    x[n_each:, 0] += 10.0
    return x, np.repeat([0, 1], n_each)


@pytest.mark.parametrize("method", ["linear", "mle"])
def test_local_twonn_matches_skdim_fit_pw(x64, method):
    x = np.asarray(manifolds.generate("M1_Sphere", 300, seed=1), np.float64)
    ours = np.asarray(local_id.local_twonn(x, 40, method=method))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = skdim.id.TwoNN(method=method).fit_pw(x, n_neighbors=40).dimension_pw_
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_local_twonn_matches_skdim_fit_pw_above_25_features(x64):
    """skdim switches to chunked expanded-form distances above 25 features."""
    x = np.asarray(manifolds.generate("M6_Nonlinear", 200, seed=2), np.float64)
    ours = np.asarray(local_id.local_twonn(x, 30))
    ref = skdim.id.TwoNN().fit_pw(x, n_neighbors=30).dimension_pw_
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_local_mle_matches_skdim_as_pointwise(x64):
    from skdim._commonfuncs import asPointwise

    x = np.asarray(manifolds.generate("M7_Roll", 150, seed=0), np.float64)
    ours = np.asarray(local_id.local_mle(x, 32))
    ref = asPointwise(x, skdim.id.MLE(), n_neighbors=32)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_local_mle_unbiased_with_duplicates_matches_skdim(x64):
    """Exact copies put a zero distance in some neighbourhoods (skdim's MLE then gives 0 there)."""
    from skdim._commonfuncs import asPointwise

    x = np.array(manifolds.generate("M7_Roll", 150, seed=3), np.float64)
    x[[40, 80]] = x[7]
    ours = np.asarray(local_id.local_mle(x, 32, unbiased=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = asPointwise(x, skdim.id.MLE(unbiased=True), n_neighbors=32)
    assert np.sum(ref == 0.0) > 0 and np.all(ours[ref == 0.0] == 0.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_planted_sphere_and_ball_separate():
    """P24's sanity check: local TwoNN (L = 128) separates a 3-sphere from an 8-ball."""
    x, labels = _sphere_and_ball(700)
    values = np.asarray(local_id.local_twonn(x, 128))
    sphere, ball = local_id.summarize(values[labels == 0]), local_id.summarize(values[labels == 1])
    assert 2.5 < sphere["mean"] < 3.4, sphere
    assert 5.8 < ball["mean"] < 7.6, ball
    assert sphere["q90"] < ball["q10"]  # the two populations do not overlap
    mle_values = np.asarray(local_id.local_mle(x, 128))
    assert np.mean(mle_values[labels == 0]) < 3.6
    assert np.mean(mle_values[labels == 1]) > 5.5


def test_summarize_counts_finite_values():
    s = local_id.summarize(np.array([1.0, 2.0, 3.0, np.nan]))
    assert s["mean"] == pytest.approx(2.0) and s["n_finite"] == 3 and s["n"] == 4


def test_local_estimates_reject_bad_input():
    x = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match="fewer points than neighbours"):
        local_id.local_twonn(x, 60)
    with pytest.raises(ValueError, match="at least 3"):
        local_id.local_twonn(x, 2)
    with pytest.raises(ValueError, match="fewer points than neighbours"):
        local_id.local_mle(x, 10, k=20)
    with pytest.raises(ValueError, match="2-D"):
        local_id.local_mle(np.zeros(50))


def test_local_estimates_compile_once_per_shape():
    import chex

    from geometry.knn import knn

    calls = chex.assert_max_traces(local_id.twonn_of_points, n=1)
    x = manifolds.generate("M7_Roll", 120, seed=0)
    _, idx = knn(x, 16)
    fn = jax.jit(lambda pts_idx: jax.vmap(lambda i: calls(x[i]))(pts_idx))
    first = fn(idx)
    second = fn(idx[::-1])  # same shapes: no retrace
    np.testing.assert_allclose(second, first[::-1], rtol=1e-6)


def _with_copies(n: int = 300, seed: int = 1) -> np.ndarray:
    x = np.array(manifolds.generate("M1_Sphere", n, seed=seed), np.float64)
    x[[10, 20, 30]] = x[5]
    return x


@pytest.mark.parametrize("n_neighbors, scan", [(40, 64), (40, 2), (3, 64)])
def test_local_twonn_from_global_lists_equals_brute_force(x64, n_neighbors, scan):
    """Ratios read off the global neighbour lists equal brute force inside each neighbourhood,
    with copies of a point present; scan 2 makes blocks fall back to all L entries, L = 3 makes
    some fall back to brute force (checked: some block's lists do lack two members)."""
    from geometry.knn import knn, query_blocks

    x = _with_copies()
    dist, idx = knn(x, n_neighbors)
    rows = query_blocks(x.shape[0], 16)
    ours = local_id.local_twonn_from_knn(jnp.asarray(x), dist, idx, block_size=16, scan=scan)
    brute = local_id.local_twonn_from_neighbours(jnp.asarray(x), idx)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(brute), rtol=1e-14)
    member = np.zeros((x.shape[0], x.shape[0]), bool)
    np.put_along_axis(member, np.asarray(idx), True, axis=1)
    found = [bool(local_id._ratios_by_membership(jnp.asarray(member[r]), dist, idx[:, :scan], idx[r])[1])
             for r in np.asarray(rows)]
    assert not all(found) if (n_neighbors, scan) != (40, 64) else all(found)


def test_estimates_split_over_a_mesh_equal_one_device(x64):
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = _with_copies(203)  # not a multiple of the blocks: padded rows are dropped
    np.testing.assert_array_equal(np.asarray(local_id.local_twonn(x, 24, mesh=mesh)),
                                  np.asarray(local_id.local_twonn(x, 24)))
    np.testing.assert_array_equal(np.asarray(local_id.local_mle(x, 24, mesh=mesh)),
                                  np.asarray(local_id.local_mle(x, 24)))
    np.testing.assert_array_equal(np.asarray(local_id.local_twonn(x, 24, exclude_duplicates=True, mesh=mesh)),
                                  np.asarray(local_id.local_twonn(x, 24, exclude_duplicates=True)))
    from geometry import intrinsic_dim as gid

    assert float(gid.twonn(x, mesh=mesh)) == float(gid.twonn(x))
    assert float(gid.mle(x, mesh=mesh)) == float(gid.mle(x))
    explicit = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    np.testing.assert_array_equal(np.asarray(local_id.local_twonn(x, 24, mesh=explicit)),
                                  np.asarray(local_id.local_twonn(x, 24)))


def test_local_mle_falls_back_where_float32_keys_cannot_certify(x64):
    """An integer lattice ties distances everywhere, so the float32-key selection cannot
    certify its neighbour sets; the result is still the brute force's, here to the last bit."""
    from geometry.knn import knn, neighbours_within_by_float32_keys

    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3), -1).reshape(-1, 3)
    _, idx = knn(grid, 30)
    certified = jax.vmap(lambda p: neighbours_within_by_float32_keys(p, 8)[1])(jnp.asarray(grid)[idx])
    assert not bool(jnp.all(certified))
    ours = local_id.local_mle(grid, 30, k=8)
    brute = local_id._sharded_over_neighbourhoods(
        lambda p: local_id.mle_of_points(p, 8), jnp.asarray(grid), idx, 1, None, "data")
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(brute))
