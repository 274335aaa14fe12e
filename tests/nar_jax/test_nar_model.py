"""The NAR transformer: preset sizes, 2D RoPE layout invariance, causality, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core.mesh
from nar_jax import loss, model, order, sample

TINY = dict(zero_init_output=False)
head_logits = nnx.jit(loss.nar_head_logits, static_argnums=(3,))
plan_logits = nnx.jit(loss.plan_head_logits, static_argnums=(3,))
assemble = jax.jit(loss.assemble_nar_logits, static_argnums=(1,))


def tiny(**kw):
    return model.Transformer(model.preset("tiny", **{**TINY, **kw}), rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "name, published, tol",
    [("B", 130e6, 0.01), ("L", 372e6, 0.01), ("XL", 816e6, 0.01), ("XXL", 1.46e9, 0.01),
     # NAR-M counts 295.5M with the official GPT_M config (18 x 1024); the paper prints 290M.
     ("M", 290e6, 0.02)],
)
def test_preset_parameter_counts(name, published, tol):
    n = model.count_params(model.preset(name))
    assert abs(n - published) / published < tol


def test_count_matches_closed_form():
    c = model.preset("B")
    block = 4 * c.dim * c.dim + 3 * c.dim * c.ffn_dim + 2 * c.dim
    expected = (
        (c.n_layer + 1) * block + c.vocab_size * c.dim * 3 + (c.num_classes + 1) * c.dim
        + 2 * c.dim
    )
    assert c.ffn_dim == 2048
    assert model.count_params(c) == expected


def test_every_param_has_logical_names():
    m = tiny(position="learned", max_positions=20, num_transition=3, out_heads=3)
    state = nnx.state(m, nnx.Param)
    leaves = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    known = dict(core.mesh.LOGICAL_AXIS_RULES)
    for leaf in leaves:
        names = leaf.get_metadata()["out_sharding"]
        assert len(names) == leaf.get_value().ndim and all(n in known for n in names)


def test_rope_identity_for_condition_and_pair_layout():
    cos, sin = model.rope_2d(np.array([[-1, -1], [2, 3]]), head_dim=16)
    assert np.allclose(cos[0], 1) and np.allclose(sin[0], 0)
    # first head_dim/4 angles follow the row, the next head_dim/4 the column
    freqs = 1.0 / 10000 ** (np.arange(0, 8, 2) / 8)
    assert np.allclose(np.arccos(np.clip(cos[1], -1, 1))[:1], 2 * freqs[:1])
    assert np.allclose(sin[1], np.sin(np.concatenate([2 * freqs, 3 * freqs])), atol=1e-6)


def test_official_zero_condition_rope():
    cos, sin = model.rope_2d(np.array([[-1, -1], [2, 3]]), 16, zero_unplaced=True)
    assert np.allclose(cos[0], 0) and np.allclose(sin[0], 0) and np.abs(cos[1]).sum() > 0
    m = tiny(zero_cond_rope=True)
    toks = jax.random.randint(jax.random.key(0), (2, 12), 0, 64)
    a = head_logits(m, toks, jnp.array([0, 5]), (3, 4))
    b = head_logits(tiny(), toks, jnp.array([0, 5]), (3, 4))
    assert np.isfinite(a).all() and np.abs(a - b).max() > 1e-4


def test_ring_major_layout_equals_raster_layout():
    """With RoPE on true (row, col), permuting to ring-major order does not change outputs."""
    shape = (3, 4)
    m = tiny()
    toks = jax.random.randint(jax.random.key(0), (2, 12), 0, 64)
    labels = jnp.array([0, 5])
    raster = head_logits(m, toks, labels, shape)[:, :, 1:]
    plan = order.nar_plan(shape)
    ring = plan_logits(m, toks, labels, plan)[:, :, 1:]
    inv = order.inverse_permutation(plan.feed_raster[1:])
    np.testing.assert_allclose(ring[:, :, inv], raster, atol=2e-6)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5)])
def test_causality_probe(shape):
    """Changing tokens of rings > d leaves merged logits of targets in rings <= d + 1 unchanged."""
    m = tiny()
    n = int(np.prod(shape))
    rings = order.ring_index(shape)
    toks = jax.random.randint(jax.random.key(1), (2, n), 0, 64)
    labels = jnp.array([2, 7])
    d = 2
    other = jnp.where(rings > d, (toks + 1 + jnp.arange(n)) % 64, toks)
    merged = lambda t: assemble(head_logits(m, t, labels, shape), shape)  # noqa: E731
    a, b = merged(toks), merged(other)
    safe = rings <= d + 1
    np.testing.assert_allclose(a[:, safe], b[:, safe], atol=1e-6)
    assert np.abs(a[:, rings == d + 2] - b[:, rings == d + 2]).max() > 1e-4


def test_dropout_active_only_with_key():
    m = tiny()
    toks = jnp.zeros((2, 4), jnp.int32)
    labels = jnp.array([0, 1])
    a = head_logits(m, toks, labels, (2, 2))
    b = head_logits(m, toks, labels, (2, 2))
    c = head_logits(m, toks, labels, (2, 2), jax.random.key(3))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_sharded_forward_matches_one_device():
    mesh = core.mesh.make_mesh(core.mesh.MeshConfig(data=2, fsdp=2, tensor=2))
    cfg = model.preset("tiny", **TINY)
    ctor = lambda: model.Transformer(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    single = ctor()
    sharded = core.mesh.create_sharded(ctor, mesh)
    wq = sharded.layers[0].wq[...]
    assert wq.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    shape = (4, 4)
    toks = jax.random.randint(jax.random.key(0), (8, 16), 0, 64)
    labels = jnp.arange(8) % 10
    want = head_logits(single, toks, labels, shape)
    with jax.set_mesh(mesh):
        t = jax.device_put(toks, core.mesh.batch_sharding(mesh))
        y = jax.device_put(labels, core.mesh.batch_sharding(mesh))
        got = head_logits(sharded, t, y, shape)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_sharded_sampling_matches_one_device():
    mesh = core.mesh.make_mesh(core.mesh.MeshConfig(data=2, fsdp=2, tensor=2))
    ctor = lambda: model.Transformer(model.preset("tiny", **TINY), rngs=nnx.Rngs(0))  # noqa: E731
    single, sharded = ctor(), core.mesh.create_sharded(ctor, mesh)
    plan = order.nar_plan((4, 4))
    labels = jnp.arange(8) % 10
    with jax.set_mesh(mesh):
        got = sample.Sampler(sharded, plan, cfg=True)(sharded, labels, jax.random.key(9), 2.0)
    want = sample.Sampler(single, plan, cfg=True)(single, labels, jax.random.key(9), 2.0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "kw",
    [dict(dim=30, n_head=4), dict(position="sinusoid"), dict(position="learned"),
     dict(n_layer=0)],
)
def test_bad_config_raises(kw):
    with pytest.raises(ValueError):
        model.preset("tiny", **kw)


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="preset"):
        model.preset("XXXL")


def test_for_plan_fits_heads_positions_and_transitions():
    video = model.for_plan("tiny", order.nar_plan((2, 3, 3)))
    assert (video.out_heads, video.position, video.max_positions) == (3, "learned", 1 + 18)
    par = model.for_plan("tiny", order.par_plan((4, 4), 4))
    assert (par.out_heads, par.num_transition, par.position) == (1, 3, "rope2d")
    with pytest.raises(ValueError, match="rope2d"):
        model.check_compatible(model.preset("tiny", out_heads=3), (2, 3, 3), 3)
    with pytest.raises(ValueError, match="max_positions"):
        model.check_compatible(video, (2, 3, 4), 3, max_position=24)
