"""NAR training-target assembly, label dropout, baselines' losses and the AdamW builder."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from nar_jax import loss, model, optimizer, order

head_logits = nnx.jit(loss.nar_head_logits, static_argnums=(3,))
plan_logits = nnx.jit(loss.plan_head_logits, static_argnums=(3,))


def planted_head_logits(shape, n_heads, vocab=1):
    """Head d at sequence slot s (0 = last condition, 1 + r = raster r) outputs 10 * s + d."""
    n = int(np.prod(shape))
    slots = np.arange(n + 1, dtype=np.float32)
    vals = 10.0 * slots[None, :] + np.arange(n_heads, dtype=np.float32)[:, None]
    return jnp.asarray(np.broadcast_to(vals[:, None, :, None], (n_heads, 1, n + 1, vocab)))


def test_assembly_edges_known_answer():
    shape = (3, 4)
    got = np.asarray(loss.assemble_nar_logits(planted_head_logits(shape, 2), shape))[0, :, 0]
    w = 4
    slot = lambda i, j: 1 + i * w + j  # noqa: E731
    expected = np.empty(12)
    expected[0] = (0 + 1) / 2  # (0, 0): mean of both heads at the last condition position
    for j in range(1, 4):  # row 0: right head (0) of the left neighbour only
        expected[j] = 10 * slot(0, j - 1)
    for i in range(1, 3):  # column 0: down head (1) of the upper neighbour only
        expected[i * w] = 10 * slot(i - 1, 0) + 1
    for i in range(1, 3):
        for j in range(1, 4):
            expected[i * w + j] = (10 * slot(i, j - 1) + 10 * slot(i - 1, j) + 1) / 2
    np.testing.assert_allclose(got, expected)


def _plan_merge(head_logits, plan):
    """Inference merge from the decode tables, applied to a ring-major teacher-forced pass."""
    out = np.zeros((head_logits.shape[1], plan.num_tokens + 1, head_logits.shape[-1]))
    out[:, plan.prefill_target] = np.asarray(head_logits[:, :, plan.cond_len - 1]).mean(0)
    for ph in plan.phases:
        for s in range(ph.steps):
            for t, r in enumerate(ph.target_raster[s]):
                srcs = [(d, ph.offset[s] + k) for d, k in enumerate(ph.source[s, t]) if k >= 0]
                if srcs:
                    out[:, r] = np.mean([np.asarray(head_logits[d, :, p]) for d, p in srcs], 0)
    return out[:, : plan.num_tokens]


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 2), (2, 3, 3)])
def test_inference_merge_equals_training_assembly(shape):
    n_heads = len(shape)
    cfg = dict(zero_init_output=False, out_heads=n_heads)
    n = int(np.prod(shape))
    if len(shape) == 3:
        cfg.update(position="learned", max_positions=2 + n)
    m = model.Transformer(model.preset("tiny", **cfg), rngs=nnx.Rngs(0))
    toks = jax.random.randint(jax.random.key(0), (2, n), 0, 64)
    labels = jnp.array([3, 9])
    train = loss.assemble_nar_logits(head_logits(m, toks, labels, shape), shape)
    plan = order.nar_plan(shape)
    if len(shape) == 2:  # ring-major layout + decode tables' merge
        merged = _plan_merge(plan_logits(m, toks, labels, plan), plan)
        np.testing.assert_allclose(merged, train, atol=2e-6)
    planted = planted_head_logits(shape, n_heads)
    # same planted per-slot values seen through the ring-major layout
    ring_planted = np.asarray(planted)[:, :, np.concatenate([[0], 1 + plan.feed_raster[1:]])]
    np.testing.assert_allclose(
        _plan_merge(jnp.asarray(ring_planted), plan),
        loss.assemble_nar_logits(planted, shape), atol=1e-5,
    )


def test_nar_loss_is_cross_entropy_of_assembled_logits():
    m = model.Transformer(model.preset("tiny", zero_init_output=False), rngs=nnx.Rngs(0))
    shape = (2, 3)
    toks = jax.random.randint(jax.random.key(0), (3, 6), 0, 64)
    labels = jnp.array([0, 1, 2])
    logits = loss.assemble_nar_logits(head_logits(m, toks, labels, shape), shape)
    logp = jax.nn.log_softmax(logits)
    manual = -np.mean(np.take_along_axis(np.asarray(logp), np.asarray(toks)[..., None], -1))
    got = nnx.jit(loss.nar_loss, static_argnums=(3,))(m, toks, labels, shape)
    np.testing.assert_allclose(got, manual, rtol=1e-6)


def test_raster_loss_equals_shifted_next_token_ce():
    m = model.Transformer(
        model.preset("tiny", zero_init_output=False, out_heads=1), rngs=nnx.Rngs(0)
    )
    plan = order.raster_plan((2, 3))
    toks = jax.random.randint(jax.random.key(0), (2, 6), 0, 64)
    labels = jnp.array([4, 5])
    logits = plan_logits(m, toks, labels, plan)[0]
    manual = optax.softmax_cross_entropy_with_integer_labels(logits[:, :6], toks).mean()
    got = nnx.jit(loss.loss, static_argnums=(3,))(m, toks, labels, plan)
    np.testing.assert_allclose(got, manual, rtol=1e-6)


def test_par_targets_cover_every_token_once():
    plan = order.par_plan((4, 8), 4)
    targets = loss.plan_targets(plan)
    assert np.array_equal(np.sort(targets[targets >= 0]), np.arange(32))


def test_label_dropout_rate_and_null_class():
    labels = jnp.zeros(20000, jnp.int32) + 3
    out = loss.drop_labels(labels, jax.random.key(0), 0.1, 1000)
    assert set(np.unique(out).tolist()) == {3, 1000}
    assert abs(float((out == 1000).mean()) - 0.1) < 0.01
    with pytest.raises(ValueError):
        loss.drop_labels(labels, jax.random.key(0), 1.5, 1000)


def test_optimizer_decays_only_matrices():
    params = {"w": jnp.ones((2, 2)), "norm": jnp.ones(2)}
    tx = optimizer.make_optimizer(learning_rate=0.1)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.05 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["norm"], 0.0)
    big = {"w": jnp.full((2, 2), 100.0), "norm": jnp.zeros(2)}
    u, _ = optimizer.make_optimizer(learning_rate=1.0, weight_decay=0.0).update(
        big, tx.init(params), params)
    np.testing.assert_allclose(jnp.abs(u["w"]), 1.0, rtol=1e-3)  # Adam step after clipping


@pytest.mark.parametrize(
    "call",
    [
        lambda m: loss.nar_head_logits(m, jnp.zeros((2, 5), int), jnp.zeros(2, int), (2, 3)),
        lambda m: loss.nar_head_logits(m, jnp.zeros((2, 6), int), jnp.zeros(3, int), (2, 3)),
        lambda m: loss.assemble_nar_logits(jnp.zeros((2, 1, 5, 4)), (2, 3)),
        lambda m: loss.plan_targets(order.nar_plan((2, 2))),
        lambda m: optimizer.make_optimizer(learning_rate=-1.0),
    ],
)
def test_bad_input_raises(call):
    m = model.Transformer(model.preset("tiny"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        call(m)
