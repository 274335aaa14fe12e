"""Sparse TopK training path: same loss, gradients and trained parameters as the dense path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
from interp.sae import BatchTopKSAE, TopKSAE
from interp.sae.autoencoder import SAEStat
from interp.sae.sparse_topk import sparse_topk_decode
from interp.sae.topk import SPARSE_MIN_RATIO, TopKCodes, topk_codes
from interp.sae.training import make_train_step, sae_optimizer, train_on_array

D_IN, D_SAE, K = 12, 80, 4


def _data(n, seed=0):
    return 2.0 * jax.random.normal(jax.random.key(seed), (n, D_IN)) + 0.5


def _model(sparse, dead=0, **kwargs):
    model = TopKSAE(D_IN, D_SAE, rngs=nnx.Rngs(0), k=K, dead_steps=5, sparse_training=sparse,
                    **kwargs)
    key = jax.random.key(3)
    model.b_enc[...] = 0.3 * jax.random.normal(key, (D_SAE,))
    model.b_dec[...] = 0.2 * jax.random.normal(jax.random.fold_in(key, 1), (D_IN,))
    model.W_enc[...] = model.W_enc[...] + 0.3 * jax.random.normal(jax.random.fold_in(key, 2),
                                                                    (D_IN, D_SAE))
    model.steps_since_fired[...] = jnp.where(jnp.arange(D_SAE) < dead, 10, 0)
    return model


def _loss_and_grads(model, x):
    graphdef, params, stats = nnx.split(model, nnx.Param, SAEStat)

    def loss_of(params, x):
        return nnx.merge(graphdef, params, stats, copy=True).loss(x)

    return jax.jit(jax.value_and_grad(loss_of, has_aux=True))(params, x)


def test_decode_gradients_equal_dense_in_float64():
    """The primitive alone, in float64: value and every gradient equal the dense expression."""
    tokens, d_in, d_sae, k = 67, 9, 50, 5  # 67 tokens: not a multiple of the backward chunk
    keys = jax.random.split(jax.random.key(0), 5)
    f64 = np.float64
    with jax.enable_x64(True):
        x = jnp.asarray(np.asarray(jax.random.normal(keys[0], (tokens, d_in))), f64)
        params = {"b_dec": 0.1 * jax.random.normal(keys[1], (d_in,), f64),
                  "w_enc": jax.random.normal(keys[2], (d_in, d_sae), f64),
                  "b_enc": 0.3 * jax.random.normal(keys[3], (d_sae,), f64) - 4.0,
                  "w_dec": jax.random.normal(keys[4], (d_sae, d_in), f64)}

        def pre(p, x):
            return (x - p["b_dec"]) @ p["w_enc"] + p["b_enc"]

        def dense(p, x):
            return jnp.sum((topk_codes(pre(p, x), k) @ p["w_dec"] - 0.5 * x) ** 3)

        def sparse(p, x):
            values, indices = jax.lax.top_k(jax.lax.stop_gradient(pre(p, x)), k)
            out = sparse_topk_decode(x, p["b_dec"], p["w_enc"], p["b_enc"], p["w_dec"], values,
                                     indices)
            return jnp.sum((out - 0.5 * x) ** 3)

        (ld, gd), (ls, gs) = (jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, x)
                              for f in (dense, sparse))
        assert bool(jnp.any(jax.lax.top_k(pre(params, x), k)[0] < 0))  # ReLU'd slots covered
        np.testing.assert_allclose(ls, ld, rtol=1e-12)
        for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(gd)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dead", [0, 30], ids=["no-dead", "auxk-active"])
def test_model_loss_metrics_and_gradients_equal_dense(dead):
    x = _data(200)
    (ld, md), gd = _loss_and_grads(_model(False, dead), x)
    (ls, ms), gs = _loss_and_grads(_model(True, dead), x)
    assert (float(md["auxk_loss"]) > 0) == (dead > 0)
    np.testing.assert_allclose(ls, ld, rtol=1e-6)
    for name in md:
        np.testing.assert_allclose(ms[name], md[name], rtol=1e-5, atol=1e-7, err_msg=name)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        scale = float(jnp.max(jnp.abs(gd[name][...])))
        np.testing.assert_allclose(gs[name][...], gd[name][...], atol=2e-6 * scale, err_msg=name)


def test_code_activity_of_sparse_codes_equals_dense():
    model = _model(True)
    pre = model.pre_activation(_data(50))
    pre = pre.at[:, 7].set(-1.0).at[0, 7].set(100.0).at[:, 3].set(-jnp.inf)
    values, indices = jax.lax.top_k(pre, K)
    fired, l0 = model.code_activity(TopKCodes(values, indices))
    fired_dense, l0_dense = model.code_activity(topk_codes(pre, K))
    np.testing.assert_array_equal(fired, fired_dense)
    assert bool(fired[7]) and not bool(fired[3])
    np.testing.assert_allclose(l0, l0_dense)


def test_training_steps_match_dense_and_compile_once():
    """A few optimizer steps (decoder projection, clip, Adam, renormalisation; AuxK switches on
    after 5 steps) land on the same parameters and dead-latent counters."""
    batches = [_data(96, seed=s) for s in range(9)]
    states = {}
    for sparse in (False, True):
        model = _model(sparse)
        model.b_enc[...] = model.b_enc[...].at[:20].set(-50.0)  # these die, AuxK engages
        state, _, step = make_train_step(model, sae_optimizer(1e-3))
        for b in batches:
            state, metrics = step(state, b)
        assert step._cache_size() == 1
        assert float(metrics["auxk_loss"]) > 0
        states[sparse] = state
    for a, b in zip(jax.tree.leaves(states[False].params), jax.tree.leaves(states[True].params)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(states[True].stats["steps_since_fired"][...],
                                  states[False].stats["steps_since_fired"][...])


def test_sparse_path_trains_in_scan():
    model = _model(True)
    history = train_on_array(model, _data(1024), sae_optimizer(3e-3), steps=60, batch_size=64)
    assert float(history["mse"][-10:].mean()) < 0.7 * float(history["mse"][:5].mean())
    np.testing.assert_allclose(history["l0"], K)
    np.testing.assert_allclose(jnp.linalg.norm(model.W_dec[...], axis=-1), 1.0, atol=1e-5)


def test_default_rule_and_bad_arguments():
    wide = TopKSAE(8, 8 * SPARSE_MIN_RATIO, rngs=nnx.Rngs(0), k=8)
    narrow = TopKSAE(8, 8 * SPARSE_MIN_RATIO - 1, rngs=nnx.Rngs(0), k=8)
    assert wide.uses_sparse_training() == (jax.default_backend() == "cpu")
    assert not narrow.uses_sparse_training()
    assert TopKSAE(8, 16, rngs=nnx.Rngs(0), k=8, sparse_training=True).uses_sparse_training()
    assert not BatchTopKSAE(8, 640, rngs=nnx.Rngs(0), k=2).uses_sparse_training()
    with pytest.raises(TypeError, match="sparse_training"):
        TopKSAE(8, 16, rngs=nnx.Rngs(0), k=2, sparse_training="yes")
    with pytest.raises(ValueError, match="sparse_training"):
        BatchTopKSAE(8, 16, rngs=nnx.Rngs(0), k=2, sparse_training=True)


def test_decode_rejects_bad_shapes():
    x, w_enc, w_dec = jnp.ones((6, 4)), jnp.ones((4, 10)), jnp.ones((10, 4))
    values, indices = jax.lax.top_k(x @ w_enc, 3)
    args = (x, jnp.zeros(4), w_enc, jnp.zeros(10), w_dec, values, indices)
    assert sparse_topk_decode(*args).shape == (6, 4)
    with pytest.raises(ValueError, match="w_enc: expected shape"):
        sparse_topk_decode(*args[:2], w_enc.T, *args[3:])
    with pytest.raises(ValueError, match="indices: expected shape"):
        sparse_topk_decode(*args[:6], indices[:, :2])
    with pytest.raises(ValueError, match="x: expected a 2-d"):
        sparse_topk_decode(x[0], *args[1:])
    with pytest.raises(TypeError, match="indices: expected an integer"):
        sparse_topk_decode(*args[:6], values)
