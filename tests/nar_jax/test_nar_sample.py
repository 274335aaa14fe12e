"""Static-shape decoding of NAR, raster-AR and PAR-kX: KV cache, CFG, seeds, compile-once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nar_jax import loss, model, order, sample

head_logits = nnx.jit(loss.nar_head_logits, static_argnums=(3,))
plan_logits = nnx.jit(loss.plan_head_logits, static_argnums=(3,))


def tiny(**kw):
    return model.Transformer(
        model.preset("tiny", zero_init_output=False, **kw), rngs=nnx.Rngs(0)
    )


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 3, 3)])
def test_nar_kv_cached_teacher_forcing_equals_full_forward(shape):
    n = int(np.prod(shape))
    kw = {} if len(shape) == 2 else dict(out_heads=3, position="learned", max_positions=2 + n)
    m = tiny(**kw)
    toks = jax.random.randint(jax.random.key(0), (2, n), 0, 64)
    labels = jnp.array([1, 8])
    full = loss.assemble_nar_logits(head_logits(m, toks, labels, shape), shape)
    got = sample.Sampler(m, order.nar_plan(shape)).teacher_forced_logits(m, labels, toks)
    np.testing.assert_allclose(got, full, atol=3e-6)


@pytest.mark.parametrize("kind, shape, k", [("raster", (3, 4), None), ("par", (4, 4), 4)])
def test_baseline_kv_cached_teacher_forcing_equals_full_forward(kind, shape, k):
    plan = order.make_plan(kind, shape, k=k)
    m = tiny(out_heads=1, num_transition=plan.num_transition)
    toks = jax.random.randint(jax.random.key(0), (2, plan.num_tokens), 0, 64)
    labels = jnp.array([1, 8])
    logits = plan_logits(m, toks, labels, plan)[0]
    target = loss.plan_targets(plan)
    pos = np.nonzero(target >= 0)[0]
    full = np.zeros((2, plan.num_tokens, 64), np.float32)
    full[:, target[pos]] = np.asarray(logits[:, pos])
    got = sample.Sampler(m, plan).teacher_forced_logits(m, labels, toks)
    np.testing.assert_allclose(got, full, atol=3e-6)


def test_bucketed_nar_plan_gives_the_same_decoding():
    shape = (4, 5)
    m = tiny()
    flat, narrow = order.nar_plan(shape), order.nar_plan(shape, bucket=2)
    assert len(narrow.phases) > 1 and narrow.num_steps == flat.num_steps == 8
    toks = jax.random.randint(jax.random.key(2), (2, 20), 0, 64)
    labels = jnp.array([3, 4])
    a = sample.Sampler(m, flat).teacher_forced_logits(m, labels, toks)
    b = sample.Sampler(m, narrow).teacher_forced_logits(m, labels, toks)
    np.testing.assert_allclose(a, b, atol=3e-6)
    greedy = [sample.Sampler(m, p, temperature=0.0)(m, labels, jax.random.key(0))
              for p in (flat, narrow)]
    np.testing.assert_array_equal(*greedy)


def test_greedy_samples_are_in_raster_order():
    """Greedy tokens equal the argmax of the teacher-forced logits fed with those tokens."""
    shape = (3, 4)
    m = tiny()
    s = sample.Sampler(m, order.nar_plan(shape), temperature=0.0)
    labels = jnp.array([0, 4, 7])
    toks = s(m, labels, jax.random.key(0))
    full = loss.assemble_nar_logits(head_logits(m, toks, labels, shape), shape)
    np.testing.assert_array_equal(toks, jnp.argmax(full, -1))


def test_cfg_scale_one_equals_conditional_only():
    shape = (3, 3)
    m = tiny()
    plan = order.nar_plan(shape)
    labels = jnp.array([2, 5])
    toks = jax.random.randint(jax.random.key(1), (2, 9), 0, 64)
    guided = sample.Sampler(m, plan, cfg=True)
    plain = sample.Sampler(m, plan)
    np.testing.assert_allclose(
        guided.teacher_forced_logits(m, labels, toks, 1.0),
        plain.teacher_forced_logits(m, labels, toks), atol=1e-5)
    np.testing.assert_array_equal(guided(m, labels, jax.random.key(3), 1.0),
                                  plain(m, labels, jax.random.key(3)))
    # the guidance formula u + s (c - u) after the head merge, checked against both branches
    uncond = plain.teacher_forced_logits(m, jnp.full(2, m.config.num_classes), toks)
    cond = plain.teacher_forced_logits(m, labels, toks)
    np.testing.assert_allclose(guided.teacher_forced_logits(m, labels, toks, 3.0),
                               uncond + 3.0 * (cond - uncond), atol=1e-4)


def test_fixed_seed_identical_and_seeds_differ():
    m = tiny()
    s = sample.Sampler(m, order.nar_plan((4, 4)), cfg=True, top_k=20, top_p=0.9)
    labels = jnp.array([1, 2])
    a = s(m, labels, jax.random.key(7), 2.0)
    b = s(m, labels, jax.random.key(7), 2.0)
    c = s(m, labels, jax.random.key(8), 2.0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 16) and not np.array_equal(a, c)


def test_decode_loop_compiles_once():
    m = tiny()
    plan = order.nar_plan((4, 4))
    chex.clear_trace_counter()
    decode = jax.jit(chex.assert_max_traces(
        sample.make_decode_fn(nnx.graphdef(m), plan, cfg=True), n=1))
    state = nnx.state(m)
    for seed, scale in [(0, 1.5), (1, 2.0), (2, 4.0)]:
        labels = jnp.array([seed, seed + 1])
        decode(state, labels, jax.random.key(seed), jnp.float32(scale))
    s = sample.Sampler(m, plan, cfg=True)
    for seed in range(3):
        s(m, jnp.array([seed, 0]), jax.random.key(seed), 1.0 + seed)
    assert s.compiled_count == 1


def test_baseline_samplers_run_and_fill_grid():
    for kind, k in [("raster", None), ("par", 4)]:
        plan = order.make_plan(kind, (4, 4), k=k)
        m = tiny(out_heads=1, num_transition=plan.num_transition)
        toks = sample.Sampler(m, plan, cfg=True, temperature=0.0)(
            m, jnp.array([1, 2]), jax.random.key(0), 2.0)
        assert toks.shape == (2, 16) and int(toks.min()) >= 0 and int(toks.max()) < 64


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keep_k = sample.filter_logits(logits, top_k=2) > -1e30
    assert keep_k.tolist() == [[True, True, False, False]]
    keep_p = sample.filter_logits(logits, top_p=0.7) > -1e30  # 0.5 < 0.7 -> keep the 2nd too
    assert keep_p.tolist() == [[True, True, False, False]]
    keep_p = sample.filter_logits(logits, top_p=0.4) > -1e30
    assert keep_p.tolist() == [[True, False, False, False]]
    draws = sample.sample_logits(jax.random.key(0), jnp.tile(logits, (4000, 1)), top_k=2)
    freq = np.bincount(np.asarray(draws), minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.03)


def test_bad_input_raises():
    m = tiny()
    plan = order.nar_plan((3, 3))
    with pytest.raises(ValueError, match="out_heads"):
        sample.Sampler(m, order.raster_plan((3, 3)))
    with pytest.raises(ValueError, match="num_transition"):
        sample.Sampler(tiny(out_heads=1), order.par_plan((4, 4), 4))
    with pytest.raises(ValueError, match="top_p"):
        sample.Sampler(m, plan, top_p=0.0)
    s = sample.Sampler(m, plan)
    with pytest.raises(ValueError, match="labels"):
        s(m, jnp.zeros((2, 2), jnp.int32), jax.random.key(0))
    with pytest.raises(ValueError, match="null class"):
        s(m, jnp.array([0, 11]), jax.random.key(0))
    with pytest.raises(ValueError, match="cfg_scale"):
        s(m, jnp.zeros(2, jnp.int32), jax.random.key(0), 2.0)
    with pytest.raises(ValueError, match="tokens"):
        s.teacher_forced_logits(m, jnp.zeros(2, jnp.int32), jnp.zeros((2, 8), jnp.int32))
