"""Losses on hand-computed cases, against direct numpy formulas, and with finite gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
from brain import losses


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_soft_clip_hand_case():
    eye = jnp.eye(2)
    p = np.e / (1 + np.e)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert float(losses.soft_clip_loss(eye, eye, temperature=1.0)) == pytest.approx(entropy, abs=1e-6)


def test_soft_clip_matches_numpy_formula():
    rng = np.random.default_rng(0)
    p, t = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    p, t = p / np.linalg.norm(p, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
    tt = np.exp(_log_softmax(t @ t.T / 0.125))
    pt = p @ t.T / 0.125
    ref = (-(tt * _log_softmax(pt)).sum(-1).mean() - (tt * _log_softmax(pt.T)).sum(-1).mean()) / 2
    assert float(losses.soft_clip_loss(jnp.asarray(p), jnp.asarray(t))) == pytest.approx(ref, rel=1e-5)


def test_mixco_soft_labels_and_loss_hand_case():
    perm, betas = jnp.array([1, 0]), jnp.array([0.7, 1.0])
    np.testing.assert_allclose(np.asarray(losses.mixco_soft_labels(perm, betas)), [[0.7, 0.3], [0.0, 1.0]])
    # zero logits: every log-probability is -log 2, rows of the labels sum to 1 and columns to 2 in total
    z = jnp.zeros((2, 3))
    assert float(losses.mixco_nce(z, z, perm, betas, temperature=1.0)) == pytest.approx(np.log(2), abs=1e-6)
    # reference quirk: a self-permuted sample gets 1 - beta on its diagonal
    np.testing.assert_allclose(np.asarray(losses.mixco_soft_labels(jnp.array([0, 1]), jnp.array([0.6, 1.0]))), [[0.4, 0], [0, 0]])


def test_mixco_nce_without_mixing_is_infonce():
    rng = np.random.default_rng(1)
    p, t = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    logits = p @ t.T / 0.1
    ref = (-np.diag(_log_softmax(logits)).mean() - np.diag(_log_softmax(logits.T)).mean()) / 2
    assert float(losses.mixco_nce(jnp.asarray(p), jnp.asarray(t))) == pytest.approx(ref, rel=1e-5)
    ref_uni = -np.diag(_log_softmax(logits)).mean()
    assert float(losses.mixco_nce(jnp.asarray(p), jnp.asarray(t), bidirectional=False)) == pytest.approx(ref_uni, rel=1e-5)


def test_mixco_mixing():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4000, 2)), jnp.float32)
    mixed, perm, betas = losses.mixco(jax.random.key(0), x)
    np.testing.assert_allclose(np.asarray(mixed), np.asarray(x * betas[:, None] + x[perm] * (1 - betas[:, None])), rtol=1e-5, atol=1e-6)
    b = np.asarray(betas)
    assert 0.4 < np.mean(b == 1.0) < 0.6  # half the batch left unmixed
    mixed_b = b[b < 1]
    assert np.mean((mixed_b < 0.1) | (mixed_b > 0.9)) > 0.6  # Beta(0.15, 0.15) is U-shaped


def test_symmetric_infonce_hand_case_and_learnable_temperature():
    n, s = 3, 5.0
    eye = jnp.eye(n)
    expected = -np.log(np.exp(s) / (np.exp(s) + n - 1))
    assert float(losses.symmetric_infonce(eye, eye, s)) == pytest.approx(expected, abs=1e-5)
    temp = losses.LearnableTemperature(0.07)
    assert float(temp()) == pytest.approx(1 / 0.07, rel=1e-6)
    rng = np.random.default_rng(2)
    a, b = jnp.asarray(rng.standard_normal((4, 6))), jnp.asarray(rng.standard_normal((4, 6)))
    grads = nnx.grad(lambda m: losses.symmetric_infonce(a, b, m()))(temp)
    g = float(grads.log_scale[...])
    assert np.isfinite(g) and g != 0.0
    with pytest.raises(ValueError, match="temperature"):
        losses.LearnableTemperature(0.0)


def test_mindbridge_reconstruction_and_cycle_hand_cases():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 6)))
    assert float(losses.reconstruction_loss(x, lambda v: 2 * v, lambda e: 0.5 * e)) == pytest.approx(0.0)
    assert float(losses.reconstruction_loss(x, lambda v: 2 * v, lambda e: e)) == pytest.approx(float(jnp.mean(x**2)), rel=1e-6)
    # builder_b then embedder_b: e -> 3e -> 3e / 2 ; MSE(e, 1.5 e) = 0.25 mean(e^2)
    assert float(losses.cycle_loss(x, lambda v: v / 2, lambda e: 3 * e)) == pytest.approx(0.25 * float(jnp.mean(x**2)), rel=1e-6)


def test_all_losses_have_finite_gradients():
    rng = np.random.default_rng(4)
    p = jnp.asarray(rng.standard_normal((8, 16)), jnp.float32)
    t = losses.l2_normalize(jnp.asarray(rng.standard_normal((8, 16)), jnp.float32))
    perm, betas = jnp.asarray(np.random.default_rng(5).permutation(8)), jnp.linspace(0.1, 1.0, 8)
    fns = [
        lambda q: losses.soft_clip_loss(losses.l2_normalize(q), t),
        lambda q: losses.mixco_nce(losses.l2_normalize(q), t, perm, betas, temperature=0.006),
        lambda q: losses.symmetric_infonce(q, t, 14.3),
        lambda q: losses.reconstruction_loss(q, jnp.tanh, lambda e: 2 * e),
        lambda q: losses.cycle_loss(q, jnp.tanh, lambda e: 2 * e),
    ]
    for fn in fns:
        g = jax.grad(fn)(p)
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0


def test_shape_errors():
    with pytest.raises(ValueError, match="preds"):
        losses.soft_clip_loss(jnp.ones((3, 4)), jnp.ones((3, 5)))
