"""P13 MP-SAE: matching-pursuit identities, exact recovery, hierarchy, adaptive inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
from interp.sae import MatchingPursuitSAE, matching_pursuit
from interp.sae.matching_pursuit import _pursuit_step, adaptive_matching_pursuit
from interp.sae.synthetic import hierarchical_data, hierarchical_dictionary, random_dictionary
from interp.sae.topk import topk_codes


def test_residual_energy_drops_by_coefficient_squared():
    dictionary = random_dictionary(jax.random.key(0), 48, 16)
    x = jax.random.normal(jax.random.key(1), (64, 16))
    _, _, coeffs, norms = matching_pursuit(x, dictionary, 6)
    np.testing.assert_allclose(norms[1:], norms[:-1] - coeffs**2, rtol=1e-4, atol=1e-4)
    assert bool(jnp.all(coeffs >= 0))
    assert bool(jnp.all(jnp.diff(norms, axis=0) <= 1e-5))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_exact_recovery_of_orthonormal_atoms(k):
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (24, 24)))
    dictionary = q.T[:20]
    key_idx, key_val = jax.random.split(jax.random.key(k))
    support = jax.vmap(lambda kk: jax.random.choice(kk, 20, (k,), replace=False))(
        jax.random.split(key_idx, 32))
    values = jax.random.uniform(key_val, (32, k), minval=0.5, maxval=2.0)
    codes = jnp.zeros((32, 20)).at[jnp.arange(32)[:, None], support].set(values)
    z, r, _, _ = matching_pursuit(codes @ dictionary, dictionary, k)
    np.testing.assert_allclose(z, codes, atol=1e-5)
    np.testing.assert_allclose(r, 0.0, atol=1e-5)


def test_hierarchy_children_recovered_by_mp_not_topk():
    """Explaining away on a superposed hierarchy: MP removes the parent before choosing the child;
    a shallow TopK read-out with the same planted dictionary and k mixes the children."""
    n_parents, n_children, d = 8, 4, 16
    parents, children = hierarchical_dictionary(jax.random.key(1), n_parents, n_children, d)
    np.testing.assert_allclose(jnp.einsum("pcd,pd->pc", children, parents), 0.0, atol=1e-5)
    x, parent, child = hierarchical_data(jax.random.key(2), parents, children, 1000)
    dictionary = jnp.concatenate([parents, children.reshape(-1, d)])
    truth = n_parents + parent * n_children + child[:, 0]

    def child_accuracy(z):
        return float(jnp.mean(jnp.argmax(z[:, n_parents:], -1) + n_parents == truth))

    z_mp, residual, _, _ = matching_pursuit(x, dictionary, 2)
    z_topk = topk_codes(x @ dictionary.T, 2)
    assert child_accuracy(z_mp) > 0.99
    assert float(jnp.max(jnp.abs(residual))) < 1e-4
    assert child_accuracy(z_topk) < 0.6


def test_adaptive_inference_stops_on_residual_threshold():
    model = MatchingPursuitSAE(16, 40, rngs=nnx.Rngs(0), k=4, max_iterations=16)
    x = jax.random.normal(jax.random.key(3), (128, 16))
    tau = 0.5 * float(jnp.median(jnp.linalg.norm(x, axis=-1)))
    adaptive = model.encode(x, residual_threshold=tau)
    _, _, _, norms = matching_pursuit(x, model.W_dec[...], 16)
    below = jnp.sqrt(norms) < tau
    stop = jnp.where(jnp.any(below, 0), jnp.argmax(below, 0), 16)  # steps taken per token
    z, r, steps = jnp.zeros((128, 40)), x, []
    for _ in range(16):
        z, r, _ = _pursuit_step(z, r, model.W_dec[...], jnp.ones(128))
        steps.append(z)
    per_step = jnp.stack(steps)
    expected = jnp.where(stop[:, None] == 0, 0.0, per_step[jnp.maximum(stop, 1) - 1,
                                                           jnp.arange(128)])
    np.testing.assert_allclose(adaptive, expected, atol=1e-5)
    assert 0 < float(jnp.mean(stop)) < 16
    assert float(jnp.mean(jnp.sum(adaptive != 0, -1))) < float(
        jnp.mean(jnp.sum(model.encode(x) != 0, -1)))


def test_adaptive_equals_fixed_steps_without_stopping():
    dictionary = random_dictionary(jax.random.key(4), 30, 12)
    x = jax.random.normal(jax.random.key(5), (20, 12))
    fixed, _, _, _ = matching_pursuit(x, dictionary, 5)
    adaptive = adaptive_matching_pursuit(x, dictionary, 5, 0.0, stop_on_duplicate_support=False)
    np.testing.assert_allclose(adaptive, fixed, atol=1e-6)


def test_bad_inputs():
    dictionary = random_dictionary(jax.random.key(0), 8, 4)
    with pytest.raises(ValueError, match="residual"):
        matching_pursuit(jnp.ones((3, 5)), dictionary, 2)
    with pytest.raises(ValueError, match="n_steps"):
        matching_pursuit(jnp.ones((3, 4)), dictionary, 0)
    with pytest.raises(ValueError, match="k="):
        MatchingPursuitSAE(4, 8, rngs=nnx.Rngs(0), k=0)
    with pytest.raises(ValueError, match="d_in=4"):
        MatchingPursuitSAE(4, 8, rngs=nnx.Rngs(0), k=2)(jnp.ones((2, 5)))


def test_differentiable_adaptive_pursuit_matches_inference_loop():
    dictionary = random_dictionary(jax.random.key(6), 40, 16)
    x = jax.random.normal(jax.random.key(7), (64, 16))
    tau = 0.6 * float(jnp.median(jnp.linalg.norm(x, axis=-1)))
    for duplicate in (False, True):
        loop = adaptive_matching_pursuit(x, dictionary, 10, tau, duplicate)
        scan = adaptive_matching_pursuit(x, dictionary, 10, tau, duplicate, differentiable=True)
        np.testing.assert_allclose(scan, loop, atol=1e-6)


def test_adaptive_training_forward():
    """Adaptive training codes equal the inference codes; with no stopping rule they equal the
    fixed-k training codes; gradients reach the dictionary."""
    x = jax.random.normal(jax.random.key(8), (32, 16))
    kwargs = {"k": 3, "max_iterations": 3, "adaptive_training": True}
    model = MatchingPursuitSAE(16, 40, rngs=nnx.Rngs(0), **kwargs)
    fixed = MatchingPursuitSAE(16, 40, rngs=nnx.Rngs(0), k=3)
    np.testing.assert_allclose(model.train_forward(x)[0], fixed.train_forward(x)[0], atol=1e-6)
    model.residual_threshold, model.stop_on_duplicate_support = 3.0, True
    z_train, _, _ = model.train_forward(x)
    np.testing.assert_allclose(z_train, model.encode(x), atol=1e-6)
    assert float(jnp.mean(jnp.sum(z_train != 0, -1))) < 3

    grads = nnx.grad(lambda m: jnp.sum((m.train_forward(x)[1] - x) ** 2))(model)
    grad = grads["W_dec"][...]
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0
