"""Capture and intervention: identities that must hold exactly, compile-once, clear errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from interp.capture import Hooks, Intervention, _run_split, as_interventions, run_with_hooks
from interp.models.gpt import GPT, preset

CONFIG = preset("tiny", n_layers=3, vocab_size=97, n_ctx=16)


@pytest.fixture(scope="module")
def model():
    return GPT(CONFIG, nnx.Rngs(0))


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(1), (2, 12), 0, CONFIG.vocab_size)


def test_hook_shapes_follow_transformerlens(model, tokens):
    names = ("hook_embed", "blocks.1.attn.hook_q", "blocks.1.attn.hook_z",
             "blocks.1.attn.hook_pattern", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post",
             "ln_final.hook_normalized")
    logits, cache = run_with_hooks(model, tokens, capture=names)
    b, p, c = 2, 12, CONFIG
    assert logits.shape == (b, p, c.vocab_size)
    assert cache["hook_embed"].shape == (b, p, c.d_model)
    assert cache["blocks.1.attn.hook_q"].shape == (b, p, c.n_heads, c.d_head)
    assert cache["blocks.1.attn.hook_z"].shape == (b, p, c.n_heads, c.d_head)
    assert cache["blocks.1.attn.hook_pattern"].shape == (b, c.n_heads, p, p)
    assert cache["blocks.1.mlp.hook_post"].shape == (b, p, c.d_mlp)
    pattern = cache["blocks.1.attn.hook_pattern"]
    np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.triu(pattern, k=1).max()) == 0.0  # causal
    assert set(cache) == set(names)


def test_residual_bookkeeping(model, tokens):
    names = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid",
             "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post")
    _, c = run_with_hooks(model, tokens, capture=names)
    np.testing.assert_array_equal(c["blocks.0.hook_resid_post"], c["blocks.1.hook_resid_pre"])
    np.testing.assert_allclose(
        c["blocks.1.hook_resid_mid"], c["blocks.1.hook_resid_pre"] + c["blocks.1.hook_attn_out"],
        atol=1e-6)
    np.testing.assert_allclose(
        c["blocks.1.hook_resid_post"], c["blocks.1.hook_resid_mid"] + c["blocks.1.hook_mlp_out"],
        atol=1e-6)


@pytest.mark.parametrize("name", ["blocks.1.hook_resid_mid", "blocks.0.attn.hook_z",
                                  "blocks.2.mlp.hook_post"])
def test_add_zero_and_scale_one_change_nothing(model, tokens, name):
    clean, _ = run_with_hooks(model, tokens)
    added, _ = run_with_hooks(model, tokens, interventions={name: Intervention.add(0.0)})
    scaled, _ = run_with_hooks(model, tokens, interventions={name: Intervention.scale(1.0)})
    np.testing.assert_array_equal(added, clean)
    np.testing.assert_array_equal(scaled, clean)
    doubled, _ = run_with_hooks(model, tokens, interventions={name: Intervention.scale(2.0)})
    assert float(jnp.abs(doubled - clean).max()) > 1e-4  # the point is live


def test_replace_resid_post_with_itself_is_identity(model, tokens):
    name = "blocks.1.hook_resid_post"
    clean, cache = run_with_hooks(model, tokens, capture=(name,))
    patched, _ = run_with_hooks(
        model, tokens, interventions={name: Intervention.replace(cache[name])})
    np.testing.assert_array_equal(patched, clean)
    other, _ = run_with_hooks(
        model, tokens, interventions={name: Intervention.replace(jnp.zeros_like(cache[name]))})
    assert float(jnp.abs(other - clean).max()) > 1e-3


def test_ablate_head_equals_zeroing_its_z_slice_by_hand(model, tokens):
    layer, head = 1, 2
    z_name, out_name = f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"
    clean, cache = run_with_hooks(model, tokens, capture=(z_name, out_name))
    ablated, ab_cache = run_with_hooks(
        model, tokens, capture=(z_name, out_name),
        interventions={z_name: Intervention.ablate_head(head)})
    z_by_hand = cache[z_name].at[:, :, head].set(0.0)
    np.testing.assert_array_equal(ab_cache[z_name], z_by_hand)
    by_hand, _ = run_with_hooks(
        model, tokens, interventions={z_name: Intervention.replace(z_by_hand)})
    np.testing.assert_array_equal(ablated, by_hand)
    # the attention output loses exactly that head's write: z_h @ W_O[h]
    w_o = model.blocks[layer].attn.W_O[...]
    expected = cache[out_name] - jnp.einsum("bpe,ed->bpd", cache[z_name][:, :, head], w_o[head])
    np.testing.assert_allclose(ab_cache[out_name], expected, atol=1e-6)
    assert float(jnp.abs(ablated - clean).max()) > 1e-4


def test_ablate_several_heads_and_pattern_axis(model, tokens):
    name = "blocks.0.attn.hook_pattern"
    _, cache = run_with_hooks(model, tokens, capture=(name,),
                              interventions={name: ("ablate_head", [0, 3])})
    pattern = cache[name]
    assert float(jnp.abs(pattern[:, [0, 3]]).max()) == 0.0
    np.testing.assert_allclose(pattern[:, [1, 2]].sum(-1), 1.0, atol=1e-5)


def test_steering_vector_broadcasts(model, tokens):
    name = "blocks.0.hook_resid_post"
    vector = jnp.arange(CONFIG.d_model, dtype=jnp.float32) / CONFIG.d_model
    _, clean = run_with_hooks(model, tokens, capture=(name,))
    _, steered = run_with_hooks(model, tokens, capture=(name,),
                                interventions={name: Intervention.add(vector)})
    np.testing.assert_allclose(steered[name] - clean[name],
                               jnp.broadcast_to(vector, clean[name].shape), atol=1e-6)


def test_stop_at_layer_matches_full_pass(model, tokens):
    names = ("hook_embed", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post",
             "blocks.1.mlp.hook_pre")
    full_names = names + ("blocks.2.hook_resid_pre",)
    _, full = run_with_hooks(model, tokens, capture=full_names)
    resid, early = run_with_hooks(model, tokens, capture=names, stop_at_layer=2)
    for name in names:
        np.testing.assert_array_equal(early[name], full[name])
    np.testing.assert_array_equal(resid, full["blocks.2.hook_resid_pre"])
    with pytest.raises(ValueError, match="never reached"):
        run_with_hooks(model, tokens, capture=("blocks.2.hook_resid_pre",), stop_at_layer=2)
    with pytest.raises(ValueError, match="stop_at_layer"):
        run_with_hooks(model, tokens, stop_at_layer=CONFIG.n_layers + 1)


def test_compiles_once_for_fixed_names(model, tokens):
    names = ("blocks.1.attn.hook_z", "blocks.2.hook_resid_post")
    graphdef, state = nnx.split(model)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(state, tokens, interventions):
        return nnx.merge(graphdef, state).run(tokens, capture=names, interventions=interventions)

    z = "blocks.1.attn.hook_z"
    results = [forward(state, tokens, {z: Intervention.ablate_head(h)}) for h in range(4)]
    assert not np.array_equal(results[0][0], results[1][0])
    before = _run_split._cache_size()
    for scale in (0.5, 1.0, 3.0):
        run_with_hooks(model, tokens + 1, capture=names,
                       interventions={z: Intervention.scale(jnp.float32(scale))})
    assert _run_split._cache_size() - before == 1


def test_bad_requests_raise_clear_errors(model, tokens):
    with pytest.raises(ValueError, match="unknown capture point"):
        run_with_hooks(model, tokens, capture=("blocks.9.hook_resid_post",))
    with pytest.raises(ValueError, match="unknown capture point"):
        run_with_hooks(model, tokens, interventions={"blocks.0.hook_z": Intervention.add(0.0)})
    with pytest.raises(ValueError, match="head axis"):
        run_with_hooks(model, tokens, interventions={"blocks.0.hook_resid_pre": ("ablate_head", 1)})
    with pytest.raises(ValueError, match="does not broadcast"):
        run_with_hooks(model, tokens,
                       interventions={"blocks.0.hook_resid_pre": Intervention.add(jnp.ones(5))})
    with pytest.raises(ValueError, match="kind"):
        Intervention("multiply", 2.0)
    with pytest.raises(TypeError, match="interventions"):
        as_interventions({"hook_embed": 3.0})
    with pytest.raises(TypeError, match="capture"):
        Hooks(("hook_embed",), capture="hook_embed")
    with pytest.raises(ValueError, match="tokens"):
        model.run(jnp.zeros((3,), jnp.int32))


def test_head_ablation_sweep_vmaps(model, tokens):
    z = "blocks.0.attn.hook_z"
    graphdef, state = nnx.split(model)

    @jax.jit
    def sweep(state, tokens):
        def one(head):
            run = nnx.merge(graphdef, state).run
            return run(tokens, interventions={z: Intervention.ablate_head(head)})[0]

        return jax.vmap(one)(jnp.arange(CONFIG.n_heads))

    swept = sweep(state, tokens)
    for head in (0, CONFIG.n_heads - 1):
        single, _ = run_with_hooks(model, tokens, interventions={z: ("ablate_head", head)})
        np.testing.assert_allclose(swept[head], single, atol=1e-5)
