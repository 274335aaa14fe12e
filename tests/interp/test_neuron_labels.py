"""P15: neurons whose weights are planted along a token's unembedding direction are labelled
with that token, and clamping them raises that token's logit (GPT and tied-embedding MiniLM)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
from interp.models.gpt import GPT, preset
from interp.models.minilm import MiniLM, MiniLMConfig
from interp.neuron_labels import (clamp_neuron, decode_tokens, label_model_neurons,
                                  label_neurons, project_directions, unembedding)

TOKEN, READ_TOKEN, NEURON, READ_NEURON = 17, 40, 5, 9


def _planted(model, w_u_cols):
    """Make tokens TOKEN/READ_TOKEN stand out in ``w_u_cols`` and plant layer-1 neurons."""
    mlp = model.blocks[1].mlp
    direction = w_u_cols[:, TOKEN] / jnp.linalg.norm(w_u_cols[:, TOKEN])
    mlp.W_out[...] = mlp.W_out[...].at[NEURON].set(3.0 * direction)
    mlp.W_in[...] = mlp.W_in[...].at[:, READ_NEURON].set(w_u_cols[:, READ_TOKEN])
    return model


@pytest.fixture(scope="module")
def gpt():
    model = GPT(preset("tiny", vocab_size=64, d_model=16, d_mlp=32, n_ctx=16), nnx.Rngs(0))
    model.W_U[...] = model.W_U[...].at[:, jnp.array([TOKEN, READ_TOKEN])].multiply(4.0)
    return _planted(model, model.W_U[...])


@pytest.fixture(scope="module")
def minilm():
    config = MiniLMConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32,
                          n_ctx=16)
    model = MiniLM(config, nnx.Rngs(0))
    model.W_E[...] = model.W_E[...].at[jnp.array([TOKEN, READ_TOKEN])].multiply(4.0)
    return _planted(model, model.W_E[...].T)


@pytest.mark.parametrize("name", ["gpt", "minilm"])
def test_planted_neurons_are_labelled_with_their_token(name, request):
    model = request.getfixturevalue(name)
    labels = label_model_neurons(model, top_k=5)
    assert set(labels) == {0, 1}
    assert labels[1].write_top_ids.shape == (32, 5)
    assert int(labels[1].write_top_ids[NEURON, 0]) == TOKEN
    assert int(labels[1].read_top_ids[READ_NEURON, 0]) == READ_TOKEN
    assert float(labels[1].write_top_probs[NEURON, 0]) > 1 / 64
    _, description = unembedding(model)
    assert ("tied" in description) == (name == "minilm")
    # the same projection, by hand
    w_u, _ = unembedding(model)
    logits = model.blocks[1].mlp.W_out[...] @ w_u
    np.testing.assert_array_equal(labels[1].write_top_ids, jax.lax.top_k(logits, 5)[1])
    np.testing.assert_array_equal(labels[1].write_bottom_ids, jax.lax.top_k(-logits, 5)[1])
    np.testing.assert_allclose(labels[1].write_top_probs,
                               jax.lax.top_k(jax.nn.softmax(logits, -1), 5)[0], rtol=1e-5)


def test_clamping_promotes_the_label_token_gpt(gpt):
    tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, 64)
    out = clamp_neuron(gpt, (tokens,), 1, NEURON, 20.0, [TOKEN, 3])
    assert float(out["delta_logit"][0]) > 1.0
    assert int(jnp.argmax(out["delta_logit_all"])) == TOKEN
    assert float(out["p_clamped"][0]) > float(out["p_clean"][0])
    # clamping to the value it already has changes nothing
    from interp.capture import run_with_hooks
    _, cache = run_with_hooks(gpt, tokens, capture=("blocks.1.mlp.hook_post",))
    same = clamp_neuron(gpt, (tokens[:1, :1],), 1, NEURON,
                        float(cache["blocks.1.mlp.hook_post"][0, 0, NEURON]), [TOKEN])
    np.testing.assert_allclose(same["delta_logit_all"], 0.0, atol=1e-5)


def test_clamping_promotes_the_label_token_minilm(minilm):
    ids = jax.random.randint(jax.random.key(2), (2, 8), 0, 64)
    mask = jnp.ones((2, 8), jnp.int32).at[1, 6:].set(0)
    out = clamp_neuron(minilm, (ids, mask), 1, NEURON, 20.0, [TOKEN])
    assert float(out["delta_logit"][0]) > 0
    assert int(jnp.argmax(out["delta_logit_all"])) == TOKEN


def test_decode_and_validation(gpt):
    from tokenizers import Tokenizer, models

    tokenizer = Tokenizer(models.WordLevel({"dog": 0, "cat": 1, "[UNK]": 2}, unk_token="[UNK]"))
    assert decode_tokens(tokenizer, np.array([[0, 1], [1, 7]])) == [["dog", "cat"],
                                                                     ["cat", "<7>"]]
    w_u, _ = unembedding(gpt)
    with pytest.raises(ValueError, match="w_in"):
        label_neurons(jnp.ones((8, 4)), jnp.ones((4, 8)), w_u)
    with pytest.raises(ValueError, match="w_out"):
        label_neurons(jnp.ones((16, 4)), jnp.ones((4, 8)), w_u)
    with pytest.raises(ValueError, match="top_k"):
        project_directions(jnp.ones((2, 16)), w_u, top_k=0)
    with pytest.raises(ValueError, match="NaN"):
        project_directions(jnp.full((2, 16), jnp.nan), w_u)
    with pytest.raises(ValueError, match="neuron"):
        clamp_neuron(gpt, (jnp.zeros((1, 4), jnp.int32),), 1, 99, 1.0, [0])
    with pytest.raises(ValueError, match="layers"):
        label_model_neurons(gpt, layers=[2])
