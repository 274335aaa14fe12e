"""The GPT causal LM: it learns (loss falls under plain optax), and sharding changes no numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

pytest.importorskip("tokenizers")

import core.mesh  # noqa: E402
from interp import text  # noqa: E402
from interp.models.gpt import GPT, GPTConfig, next_token_loss, preset  # noqa: E402


@pytest.fixture(scope="module")
def batch():
    _, rows = text.stdlib_lm_rows(vocab_size=384, length=33, max_files=25)
    return {"tokens": jnp.asarray(rows[:16])}


def test_loss_decreases_with_plain_optax(batch):
    config = preset("tiny", vocab_size=384, n_ctx=32)
    model = GPT(config, nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(params):
            return next_token_loss(nnx.merge(graphdef, params), batch)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    losses = []
    for _ in range(25):
        params, opt_state, metrics = step(params, opt_state)
        losses.append(float(metrics["loss"]))
    assert abs(losses[0] - np.log(384)) < 0.3  # starts near uniform
    assert losses[-1] < losses[0] - 1.5, losses
    assert metrics["tokens"] == 16 * 32


def test_loss_mask_and_shape_checks(batch):
    model = GPT(preset("tiny", vocab_size=384, n_ctx=32), nnx.Rngs(1))
    loss = nnx.jit(next_token_loss)
    tokens = batch["tokens"][:2]
    full, _ = loss(model, {"tokens": tokens})
    mask = jnp.ones_like(tokens).at[:, 17:].set(0)
    half, metrics = loss(model, {"tokens": tokens, "mask": mask})
    prefix, _ = loss(model, {"tokens": tokens[:, :17]})  # causal: same positions
    np.testing.assert_allclose(half, prefix, rtol=1e-5)
    assert metrics["tokens"] == 2 * 16 and not np.isclose(full, half)
    with pytest.raises(ValueError, match="tokens"):
        next_token_loss(model, {"ids": tokens})
    with pytest.raises(ValueError, match="mask"):
        next_token_loss(model, {"tokens": tokens, "mask": mask[:, :5]})
    with pytest.raises(ValueError, match="n_ctx"):
        model(jnp.zeros((1, 40), jnp.int32))
    with pytest.raises(ValueError, match="preset"):
        preset("huge")
    with pytest.raises(ValueError, match="d_model"):
        GPTConfig(d_model=0)


def test_sharded_forward_equals_one_device():
    config = preset("tiny", vocab_size=128, n_ctx=16, n_layers=1)
    mesh = core.mesh.make_mesh(core.mesh.MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = core.mesh.create_sharded(lambda: GPT(config, nnx.Rngs(0)), mesh)
    single = GPT(config, nnx.Rngs(0))
    w_in = sharded.blocks[0].mlp.W_in[...]
    assert w_in.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(w_in.addressable_shards) == 8
    tokens = jax.random.randint(jax.random.key(2), (8, 16), 0, config.vocab_size)
    names = ("blocks.0.attn.hook_z", "blocks.0.hook_resid_post")

    @nnx.jit
    def forward(model, tokens):
        return model.run(tokens, capture=names), next_token_loss(model, {"tokens": tokens})[0]

    with jax.set_mesh(mesh):
        (logits, cache), loss = forward(
            sharded, jax.device_put(tokens, core.mesh.batch_sharding(mesh)))
    (ref_logits, ref_cache), ref_loss = forward(single, tokens)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    for name in names:
        np.testing.assert_allclose(cache[name], ref_cache[name], atol=1e-5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)


def test_every_parameter_has_logical_names():
    model = nnx.eval_shape(lambda: GPT(preset("tiny"), nnx.Rngs(0)))
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = variable.get_metadata().get("out_sharding")
        assert names is not None and len(names) == variable.get_value().ndim, path


@pytest.mark.slow
def test_tiny_preset_learns_the_stdlib_corpus():
    """The tiny preset on the whole corpus: 600 AdamW steps of 32 x 64 tokens (about two minutes
    on two CPU cores) bring the held-out loss well below the unigram entropy."""
    config = preset("tiny")
    _, rows = text.stdlib_lm_rows(config.vocab_size, config.n_ctx + 1)
    np.random.default_rng(0).shuffle(rows)
    held_out, train = jnp.asarray(rows[:256]), rows[256:]
    counts = np.bincount(train.reshape(-1), minlength=config.vocab_size) / train.size
    unigram_entropy = -(counts[counts > 0] * np.log(counts[counts > 0])).sum()
    graphdef, params = nnx.split(GPT(config, nnx.Rngs(0)))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-3, 30, 600)
    optimizer = optax.adamw(schedule, weight_decay=0.01)
    opt_state = optimizer.init(params)

    def loss_fn(params, tokens):
        return next_token_loss(nnx.merge(graphdef, params), {"tokens": tokens})[0]

    @jax.jit
    def step(params, opt_state, tokens):
        grads = jax.grad(loss_fn)(params, tokens)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for i in range(600):
        start = (i * 32) % (len(train) - 32)
        params, opt_state = step(params, opt_state, train[start : start + 32])
    held_out_loss = float(jax.jit(loss_fn)(params, held_out))
    assert held_out_loss < unigram_entropy - 1.5, (held_out_loss, unigram_entropy)
