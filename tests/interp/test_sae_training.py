"""SAE training tricks: decoder constraint, input-scale folding, b_dec init, dead latents,
BatchTopK threshold, JumpReLU straight-through gradients, sharded step == one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
import core.mesh
from interp.sae import (BatchTopKSAE, GatedSAE, JumpReLUSAE, MatchingPursuitSAE, ReLUSAE,
                        TopKSAE)
from interp.sae.synthetic import randomize_parameters
from interp.sae.jumprelu import heaviside_step, jumprelu
from interp.sae.training import (estimate_input_scale, geometric_median, init_b_dec,
                                 make_train_step, remove_decoder_parallel_grad, sae_loss_fn,
                                 sae_optimizer, train_on_array)

ALL = [(ReLUSAE, {}), (TopKSAE, {"k": 3}), (BatchTopKSAE, {"k": 3}), (JumpReLUSAE, {}),
       (GatedSAE, {}), (MatchingPursuitSAE, {"k": 3})]
IDS = [c.__name__ for c, _ in ALL]


def _data(n=512, d=16, seed=0):
    return 3.0 * jax.random.normal(jax.random.key(seed), (n, d)) + 1.0


def test_parallel_gradient_removed_and_rows_stay_unit():
    w = jax.random.normal(jax.random.key(0), (8, 5))
    w = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    g = jax.random.normal(jax.random.key(1), (8, 5))
    params = {"W_dec": w, "b_dec": jnp.zeros(5)}
    out, _ = remove_decoder_parallel_grad().update({"W_dec": g, "b_dec": jnp.ones(5)}, None,
                                                   params)
    np.testing.assert_allclose(jnp.sum(out["W_dec"] * w, -1), 0.0, atol=1e-6)
    np.testing.assert_allclose(out["b_dec"], 1.0)
    model = TopKSAE(16, 32, rngs=nnx.Rngs(0), k=3)
    train_on_array(model, _data(), sae_optimizer(1e-2), steps=20, batch_size=64)
    np.testing.assert_allclose(jnp.linalg.norm(model.W_dec[...], axis=-1), 1.0, atol=1e-5)


def test_encoder_initialised_from_decoder_transpose():
    model = ReLUSAE(6, 10, rngs=nnx.Rngs(3))
    np.testing.assert_allclose(model.W_enc[...], model.W_dec[...].T)
    np.testing.assert_allclose(jnp.linalg.norm(model.W_dec[...], axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs", ALL, ids=IDS)
def test_fold_input_scale_maps_raw_inputs_like_scaled(cls, kwargs):
    x = _data()
    scale = float(estimate_input_scale(x))
    np.testing.assert_allclose(jnp.mean(jnp.linalg.norm(x * scale, axis=-1)), 4.0, rtol=1e-5)
    model = cls(16, 32, rngs=nnx.Rngs(0), **kwargs)
    randomize_parameters(model, jax.random.key(7))
    codes_scaled, recon_scaled = model.encode(x * scale), model(x * scale)
    model.fold_input_scale(scale)
    factor = 1 / scale if cls is MatchingPursuitSAE else 1.0  # MP keeps unit atoms
    np.testing.assert_allclose(model.encode(x), codes_scaled * factor, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model(x), recon_scaled / scale, rtol=1e-4, atol=1e-4)


def test_geometric_median_and_b_dec_init():
    # collinear points: the geometric median is the 1-D median, robust to the outlier
    t = jnp.array([0.0, 1.0, 2.0, 3.0, 100.0])
    direction = jnp.array([0.6, 0.8, 0.0])
    points = t[:, None] * direction + jnp.array([1.0, -1.0, 2.0])
    np.testing.assert_allclose(geometric_median(points, n_iter=500),
                               2.0 * direction + jnp.array([1.0, -1.0, 2.0]), atol=1e-3)
    model = TopKSAE(3, 6, rngs=nnx.Rngs(0), k=1)
    init_b_dec(model, points, "mean")
    np.testing.assert_allclose(model.b_dec[...], points.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="method"):
        init_b_dec(model, points, "mode")


def test_dead_latents_tracked_and_auxk_active():
    model = TopKSAE(16, 64, rngs=nnx.Rngs(0), k=2, dead_steps=5)
    model.b_enc[...] = model.b_enc[...].at[:32].set(-1e3)  # latents 0..31 can never fire
    history = train_on_array(model, _data(), sae_optimizer(1e-3), steps=12, batch_size=32)
    assert bool(jnp.all(model.steps_since_fired[...][:32] == 12))
    assert bool(jnp.all(model.dead_mask()[:32]))
    assert int(model.step[...]) == 12
    assert float(history["dead_fraction"][-1]) >= 0.5
    assert float(history["auxk_loss"][3]) == 0.0 and float(history["auxk_loss"][-1]) > 0.0


def test_batchtopk_threshold_is_used_at_inference():
    model = BatchTopKSAE(16, 64, rngs=nnx.Rngs(0), k=4)
    x = _data(2048)
    train_on_array(model, x, sae_optimizer(3e-3), steps=300, batch_size=128)
    theta = float(model.threshold[...])
    assert theta > 0
    pre = model.pre_activation(x)
    np.testing.assert_allclose(model.encode(x), jnp.where(pre > theta, pre, 0.0), atol=1e-6)
    l0 = float(jnp.mean(jnp.sum(model.encode(x) != 0, -1)))
    assert 2.0 < l0 < 8.0  # the threshold reproduces about k active latents per token


def test_jumprelu_straight_through_gradients():
    x = jnp.array([[0.2, 0.48, 0.52, 1.0]])
    theta, eps = jnp.full((4,), 0.5), 0.1
    out, vjp = jax.vjp(lambda a, t: jumprelu(a, t, eps), x, theta)
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.52, 1.0]])
    dx, dt = vjp(jnp.ones_like(x))
    np.testing.assert_allclose(dx, [[0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(dt, [0.0, -5.0, -5.0, 0.0], rtol=1e-6)  # -(theta/eps) rect
    dt_step = jax.grad(lambda t: heaviside_step(x, t, eps).sum())(theta)
    np.testing.assert_allclose(dt_step, [0.0, -10.0, -10.0, 0.0], rtol=1e-6)  # -(1/eps) rect


def test_loss_fn_works_with_nnx_value_and_grad():
    model = JumpReLUSAE(16, 32, rngs=nnx.Rngs(0))
    grad_fn = nnx.value_and_grad(lambda m, b: sae_loss_fn(m, b, None), has_aux=True)
    (loss, metrics), grads = grad_fn(model, _data(64))
    assert np.isfinite(float(loss)) and set(metrics) >= {"mse", "l0", "fvu", "l0_loss"}
    assert "log_threshold" in grads and int(model.step[...]) == 1
    optimizer = nnx.Optimizer(model, sae_optimizer(0.1), wrt=nnx.Param)
    before = model.W_dec[...]
    optimizer.update(model, grads)
    assert float(jnp.max(jnp.abs(model.W_dec[...] - before))) > 1e-3
    np.testing.assert_allclose(jnp.linalg.norm(model.W_dec[...], axis=-1), 1.0, atol=1e-5)


def test_bad_batch_raises():
    model = TopKSAE(16, 32, rngs=nnx.Rngs(0), k=3)
    with pytest.raises(ValueError, match="d_in=16"):
        model.loss(jnp.ones((4, 15)))
    with pytest.raises(ValueError, match="NaN"):
        model.loss(jnp.full((4, 16), jnp.nan))
    with pytest.raises(TypeError, match="floating"):
        model.loss(jnp.ones((4, 16), jnp.int32))
    with pytest.raises(ValueError, match="k="):
        TopKSAE(16, 32, rngs=nnx.Rngs(0), k=40)


@pytest.mark.parametrize("cls,kwargs", [(TopKSAE, {"k": 3}),
                                        (TopKSAE, {"k": 3, "sparse_training": True}),
                                        (MatchingPursuitSAE, {"k": 3})],
                         ids=["TopKSAE", "TopKSAE-sparse", "MatchingPursuitSAE"])
def test_sharded_train_step_equals_one_device(cls, kwargs):
    mesh = core.mesh.make_mesh(core.mesh.MeshConfig(data=2, fsdp=1, tensor=4))
    tx = sae_optimizer(1e-2)
    batches = [_data(64, seed=s) for s in range(3)]

    def run(model, put):
        state, _, step = make_train_step(model, tx)
        for b in batches:
            state, metrics = step(state, put(b))
        assert step._cache_size() == 1  # compiled once for all steps
        return state, metrics

    single_state, single_metrics = run(cls(16, 32, rngs=nnx.Rngs(0), **kwargs), lambda b: b)
    sharded_model = core.mesh.create_sharded(lambda: cls(16, 32, rngs=nnx.Rngs(0), **kwargs),
                                             mesh)
    assert sharded_model.W_dec[...].sharding.spec[0] == "tensor"
    with jax.set_mesh(mesh):
        state, metrics = run(sharded_model, lambda b: jax.device_put(
            b, core.mesh.batch_sharding(mesh)))
    assert state.params["W_dec"][...].sharding.spec[0] == "tensor"
    for a, b in zip(jax.tree.leaves(single_state.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(single_metrics["loss"], metrics["loss"], rtol=1e-5)
