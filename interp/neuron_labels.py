"""P15 Decoding specialised feature neurons in LLMs with the final projection layer: label every
MLP neuron by projecting its weights through the unembedding, and check a label by clamping.

For MLP neuron ``i`` of a block (TransformerLens layout, ``W_in [d_model, d_mlp]``, ``W_out
[d_mlp, d_model]``) the read-in direction is the column ``W_in[:, i]`` and the write-out
direction the row ``W_out[i]``. Each is projected through the unembedding, ``logits = w W_U``,
``p = softmax(logits)``; the top tokens (largest logits) label what the neuron reads / promotes,
the bottom tokens what it suppresses. All neurons of all layers are a few matmuls
(:func:`label_neurons`, chunked over neurons so the ``[d_mlp, vocab]`` logits never sit in memory
at once). :func:`clamp_neuron` is the paper's validation: set the neuron's post-activation
(``blocks.{l}.mlp.hook_post``) to a value at every position and measure how the output logits and
probabilities of chosen tokens change against the clean run.

Unembedding per model family (:func:`unembedding`):
- causal LM (:class:`interp.models.gpt.GPT`): ``W_U`` with the final LayerNorm's scale folded in
  (``diag(ln_final.w) W_U``) by default; the LayerNorm's centring/normalisation and its bias
  (and ``b_U``) are left out, as a direction has no position-dependent scale.
- MiniLM (BERT encoder, no language-model head shipped): the **tied word embeddings** ``W_E^T``
  stand in for the unembedding (BERT ties its MLM decoder to ``W_E``; the MLM head's dense +
  LayerNorm transform is not in the package, so it is skipped). The clamping check then reads
  logits as ``hidden W_E^T`` of the last layer.

Deviations from the paper: the paper decodes Llama's gated up-projection (and reports the gate
separately); our models have a plain (non-gated) MLP, so the read-in is ``W_in``. Labels are
token ids plus strings from the model's tokenizer (``tokenizers.Tokenizer.id_to_token``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from interp.capture import Intervention, run_with_hooks


@dataclasses.dataclass(frozen=True)
class NeuronLabels:
    """Per-neuron top/bottom tokens: ``*_ids`` int ``[d_mlp, top_k]``, ``*_probs`` the softmax
    probabilities of the top tokens, ``*_logits`` their logits (``read`` = W_in column,
    ``write`` = W_out row)."""

    read_top_ids: jax.Array
    read_top_probs: jax.Array
    read_bottom_ids: jax.Array
    write_top_ids: jax.Array
    write_top_probs: jax.Array
    write_top_logits: jax.Array
    write_bottom_ids: jax.Array
    write_bottom_logits: jax.Array


def _check_matrix(name: str, a, rows: int | None = None) -> jax.Array:
    if not hasattr(a, "shape") or not jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got {type(a).__name__}")
    a = jnp.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a matrix, got shape {a.shape}")
    if rows is not None and a.shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} rows (d_model), got shape {a.shape}")
    if not isinstance(a, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(a))):
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


def project_directions(directions: jax.Array, w_u: jax.Array, top_k: int = 10,
                       chunk: int = 256) -> dict[str, jax.Array]:
    """Top/bottom ``top_k`` tokens of ``directions [n, d_model] @ w_u [d_model, vocab]``.

    Returns ``top_ids``, ``top_logits``, ``top_probs`` (softmax over the vocabulary),
    ``bottom_ids``, ``bottom_logits``, each ``[n, top_k]``; computed ``chunk`` rows at a time.
    """
    w_u = _check_matrix("w_u", w_u)
    directions = _check_matrix("directions", directions)
    if directions.shape[1] != w_u.shape[0]:
        raise ValueError(f"directions {directions.shape} and w_u {w_u.shape}: expected "
                         "[n, d_model] and [d_model, vocab]")
    if not isinstance(top_k, int) or not 0 < top_k <= w_u.shape[1]:
        raise ValueError(f"top_k={top_k!r}: expected an int in [1, vocab={w_u.shape[1]}]")

    def one(w):
        logits = w @ w_u
        top, top_ids = jax.lax.top_k(logits, top_k)
        neg, bottom_ids = jax.lax.top_k(-logits, top_k)
        probs = jnp.exp(top - jax.nn.logsumexp(logits))
        return top_ids, top, probs, bottom_ids, -neg

    out = jax.lax.map(one, directions, batch_size=min(chunk, directions.shape[0]))
    return dict(zip(("top_ids", "top_logits", "top_probs", "bottom_ids", "bottom_logits"), out))


def label_neurons(w_in: jax.Array, w_out: jax.Array, w_u: jax.Array,
                  top_k: int = 10) -> NeuronLabels:
    """Label the neurons of one MLP (``w_in [d_model, d_mlp]``, ``w_out [d_mlp, d_model]``)
    through the unembedding ``w_u [d_model, vocab]``."""
    w_u = _check_matrix("w_u", w_u)
    w_in = _check_matrix("w_in", w_in, rows=w_u.shape[0])
    w_out = _check_matrix("w_out", w_out)
    if w_out.shape != w_in.shape[::-1]:
        raise ValueError(f"w_out {w_out.shape}: expected [d_mlp, d_model] = {w_in.shape[::-1]}")
    read = project_directions(w_in.T, w_u, top_k)
    write = project_directions(w_out, w_u, top_k)
    return NeuronLabels(
        read_top_ids=read["top_ids"], read_top_probs=read["top_probs"],
        read_bottom_ids=read["bottom_ids"], write_top_ids=write["top_ids"],
        write_top_probs=write["top_probs"], write_top_logits=write["top_logits"],
        write_bottom_ids=write["bottom_ids"], write_bottom_logits=write["bottom_logits"])


def unembedding(model, fold_final_norm: bool = True) -> tuple[jax.Array, str]:
    """``(W_U [d_model, vocab], description)`` of a model: the causal LM's ``W_U`` (with the
    final LayerNorm scale folded in), or the tied word embeddings ``W_E^T`` for an encoder
    without an unembedding (MiniLM)."""
    if hasattr(model, "W_U"):
        w_u = model.W_U[...]
        if fold_final_norm and hasattr(model, "ln_final"):
            return model.ln_final.w[...][:, None] * w_u, "W_U with ln_final.w folded in"
        return w_u, "W_U"
    if hasattr(model, "W_E"):
        return model.W_E[...].T, "tied word embeddings W_E^T (the model has no unembedding)"
    raise TypeError(f"model: {type(model).__name__} has neither W_U nor W_E")


def label_model_neurons(model, top_k: int = 10, layers=None,
                        fold_final_norm: bool = True) -> dict[int, NeuronLabels]:
    """:func:`label_neurons` for every MLP layer of ``model`` (or the listed ``layers``)."""
    w_u, _ = unembedding(model, fold_final_norm)
    n_layers = len(model.blocks)
    layers = range(n_layers) if layers is None else layers
    out = {}
    for layer in layers:
        if not isinstance(layer, int) or not 0 <= layer < n_layers:
            raise ValueError(f"layers: {layer!r} is not a layer index in [0, {n_layers})")
        mlp = model.blocks[layer].mlp
        out[layer] = label_neurons(mlp.W_in[...], mlp.W_out[...], w_u, top_k)
    return out


def decode_tokens(tokenizer: Any, ids) -> list[list[str]]:
    """Token strings for an int array ``ids [n, k]`` (``tokenizer.id_to_token``; ``<id>`` for an
    id the tokenizer does not know)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids: expected an int array [n, k], got {ids.dtype} {ids.shape}")
    if not hasattr(tokenizer, "id_to_token"):
        raise TypeError(f"tokenizer: expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
    return [[tokenizer.id_to_token(int(i)) or f"<{int(i)}>" for i in row] for row in ids]


def _output_logits(model, out: jax.Array) -> jax.Array:
    return out if hasattr(model, "W_U") else out @ model.W_E[...].T


def clamp_neuron(model, inputs: tuple, layer: int, neuron: int, value: float,
                 token_ids) -> dict[str, jax.Array]:
    """The clamping check: run ``model`` on ``inputs`` (``(tokens,)`` for the LM, ``(ids, mask)``
    for MiniLM) clean and with neuron ``neuron`` of ``blocks.{layer}.mlp.hook_post`` set to
    ``value`` at every position. Returns, for ``token_ids [n]``, the mean over positions of the
    logit change ``delta_logit [n]``, the clean/clamped probabilities ``p_clean``/``p_clamped``
    ``[n]``, and ``delta_logit_all [vocab]`` (the mean change of every token's logit)."""
    if not isinstance(inputs, tuple) or not inputs:
        raise TypeError("inputs: expected a tuple of model inputs, e.g. (tokens,)")
    n_layers = len(model.blocks)
    if not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer={layer!r}: expected an int in [0, {n_layers})")
    d_mlp = model.blocks[layer].mlp.W_in.shape[1]
    if not isinstance(neuron, int) or not 0 <= neuron < d_mlp:
        raise ValueError(f"neuron={neuron!r}: expected an int in [0, {d_mlp})")
    token_ids = jnp.atleast_1d(jnp.asarray(token_ids))
    if not jnp.issubdtype(token_ids.dtype, jnp.integer):
        raise TypeError(f"token_ids: expected integer ids, got dtype {token_ids.dtype}")
    name = f"blocks.{layer}.mlp.hook_post"
    out, cache = run_with_hooks(model, *inputs, capture=(name,))
    clamped_post = cache[name].at[..., neuron].set(value)
    out_clamped, _ = run_with_hooks(model, *inputs,
                                    interventions={name: Intervention.replace(clamped_post)})
    clean, clamped = _output_logits(model, out), _output_logits(model, out_clamped)
    if len(inputs) > 1:  # average over the real positions only
        weights = jnp.asarray(inputs[1], jnp.float32)[..., None]
    else:
        weights = jnp.ones((*clean.shape[:-1], 1), jnp.float32)

    def mean(a):
        return (a * weights).reshape(-1, a.shape[-1]).sum(0) / weights.sum()

    delta = mean(clamped - clean)
    p_clean = mean(jax.nn.softmax(clean, -1))
    p_clamped = mean(jax.nn.softmax(clamped, -1))
    return {"delta_logit": delta[token_ids], "p_clean": p_clean[token_ids],
            "p_clamped": p_clamped[token_ids], "delta_logit_all": delta}
