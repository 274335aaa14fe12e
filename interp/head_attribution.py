"""P12 Interpreting Attention Layer Outputs with Sparse Autoencoders (Kissane et al.): head
attribution of the features of an SAE trained on the concatenated ``hook_z`` of a layer.

The SAE input is ``x = concat_h z_h`` (``blocks.{l}.attn.hook_z`` ``[batch, pos, head, d_head]``
flattened head-major to ``[heads * d_head]``, as :mod:`interp.activation_store` stores it; train
it with :mod:`interp.sae_experiment`, preset ``tiny_attn``).

- :func:`head_weight_attribution`: weight-based head attribution, ``a[f, h] = ||W[f, h]|| /
  sum_h' ||W[f, h']||`` with ``W[f]`` reshaped to ``[heads, d_head]``; the paper uses the decoder
  rows (default), ``which="encoder"`` uses the encoder columns (what the feature reads).
- :func:`direct_feature_attribution`: exact decomposition of a feature's pre-activation
  ``pre_f = (x - b_dec) W_enc[:, f] + b_enc[f]``. Since ``z_h[q] = sum_k A_h[q, k] v_h[k]``,
  ``pre_f[q] = sum_h sum_k A_h[q, k] <v_h[k], W_enc[h, :, f]> + (b_enc[f] - <b_dec, W_enc[:, f]>)``;
  the per-(head, source position) terms and the constant are returned, and they sum exactly
  (to float rounding) to the pre-activation. Summing over source positions gives the paper's
  per-head direct feature attribution.
- :func:`model_direct_feature_attribution`: captures ``hook_pattern`` and ``hook_v`` of a layer
  of a model with capture points and applies the decomposition.

Deviation: the paper attributes the feature *activation* for active features; we decompose the
pre-activation (equal to the activation wherever a ReLU/TopK feature is active, for JumpReLU
above its threshold; for Gated SAEs the magnitude path differs and is not covered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from interp.capture import run_with_hooks
from interp.sae.autoencoder import SparseAutoencoder


def _check_float(name: str, a, rank: int) -> jax.Array:
    if not hasattr(a, "shape") or not jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got {type(a).__name__}")
    a = jnp.asarray(a)
    if a.ndim != rank:
        raise ValueError(f"{name}: expected rank {rank}, got shape {a.shape}")
    return a


def head_weight_attribution(weights: jax.Array, n_heads: int) -> jax.Array:
    """``a [d_sae, n_heads]``: each feature's norm share per head block of ``weights [d_sae,
    n_heads * d_head]`` (decoder rows, or encoder columns transposed). Rows sum to 1."""
    weights = _check_float("weights", weights, 2)
    if not isinstance(n_heads, int) or n_heads <= 0 or weights.shape[1] % n_heads:
        raise ValueError(f"n_heads={n_heads!r}: expected a positive divisor of the input width "
                         f"{weights.shape[1]}")
    norms = jnp.linalg.norm(weights.reshape(weights.shape[0], n_heads, -1), axis=-1)
    return norms / jnp.maximum(norms.sum(-1, keepdims=True), jnp.finfo(norms.dtype).tiny)


def sae_head_attribution(sae: SparseAutoencoder, n_heads: int,
                         which: Literal["decoder", "encoder"] = "decoder") -> jax.Array:
    """:func:`head_weight_attribution` of an SAE's decoder rows (paper) or encoder columns."""
    if which == "decoder":
        return head_weight_attribution(sae.W_dec[...], n_heads)
    if which == "encoder":
        if not sae.has_encoder:
            raise ValueError(f"which='encoder': {type(sae).__name__} has no encoder matrix")
        return head_weight_attribution(sae.W_enc[...].T, n_heads)
    raise ValueError(f"which={which!r}: expected 'decoder' or 'encoder'")


def direct_feature_attribution(pattern: jax.Array, v: jax.Array, w_enc: jax.Array,
                               b_enc: jax.Array, b_dec: jax.Array
                               ) -> tuple[jax.Array, jax.Array]:
    """Split feature pre-activations into per-head, per-source-position terms.

    ``pattern [batch, head, q, k]`` (``hook_pattern``), ``v [batch, k, head, d_head]``
    (``hook_v``), ``w_enc [head * d_head, n_features]`` (columns of the features of interest),
    ``b_enc [n_features]``, ``b_dec [head * d_head]``. Returns ``(terms [batch, q, head, k,
    n_features], constant [n_features])`` with ``terms.sum((2, 3)) + constant`` equal to the
    pre-activations of ``z = pattern @ v`` flattened head-major.
    """
    pattern = _check_float("pattern", pattern, 4)
    v = _check_float("v", v, 4)
    w_enc = _check_float("w_enc", w_enc, 2)
    b_enc, b_dec = _check_float("b_enc", b_enc, 1), _check_float("b_dec", b_dec, 1)
    batch, heads, _, k = pattern.shape
    if v.shape[:3] != (batch, k, heads):
        raise ValueError(f"v {v.shape}: expected [batch={batch}, k={k}, head={heads}, d_head] "
                         f"to match pattern {pattern.shape}")
    d = heads * v.shape[3]
    if w_enc.shape[0] != d or b_dec.shape != (d,) or b_enc.shape != (w_enc.shape[1],):
        raise ValueError(f"w_enc {w_enc.shape}, b_enc {b_enc.shape}, b_dec {b_dec.shape}: "
                         f"expected [{d}, n], [n], [{d}] for heads * d_head = {d}")
    w = w_enc.reshape(heads, v.shape[3], -1)
    value_scores = jnp.einsum("bkhe,hef->bkhf", v, w)          # <v_h[k], W_enc[h, :, f]>
    terms = jnp.einsum("bhqk,bkhf->bqhkf", pattern, value_scores)
    return terms, b_enc - b_dec @ w_enc


def model_direct_feature_attribution(model, tokens: jax.Array, layer: int,
                                     sae: SparseAutoencoder,
                                     features: Sequence[int] | jax.Array | None = None,
                                     attention_mask: jax.Array | None = None
                                     ) -> dict[str, jax.Array]:
    """Per-head, per-source attribution of ``features`` of an SAE on ``blocks.{layer}.attn.
    hook_z`` for ``tokens`` (``attention_mask`` is passed on for encoders such as MiniLM).

    Returns ``terms [batch, q, head, k, n]``, ``per_head [batch, q, head, n]``, ``constant
    [n]`` and the SAE's ``pre_activation [batch, q, n]`` computed from the captured ``hook_z``.
    """
    if not sae.has_encoder:
        raise ValueError(f"sae: {type(sae).__name__} has no linear encoder to attribute through")
    p = f"blocks.{layer}.attn."
    names = (p + "hook_pattern", p + "hook_v", p + "hook_z")
    inputs = (tokens,) if attention_mask is None else (tokens, attention_mask)
    _, cache = run_with_hooks(model, *inputs, capture=names,
                              stop_at_layer=layer + 1)
    z = cache[p + "hook_z"]
    flat_z = z.reshape(*z.shape[:2], -1)
    if flat_z.shape[-1] != sae.d_in:
        raise ValueError(f"sae: d_in={sae.d_in}, but hook_z of layer {layer} has "
                         f"{flat_z.shape[-1]} = heads * d_head entries")
    index = jnp.arange(sae.d_sae) if features is None else jnp.asarray(features, jnp.int32)
    if index.ndim != 1 or index.size == 0:
        raise ValueError(f"features: expected a non-empty 1-D list of latent indices, got "
                         f"{features!r}")
    terms, constant = direct_feature_attribution(
        cache[p + "hook_pattern"], cache[p + "hook_v"], sae.W_enc[...][:, index],
        sae.b_enc[...][index], sae.b_dec[...])
    return {"terms": terms, "per_head": terms.sum(3), "constant": constant,
            "pre_activation": sae.pre_activation(flat_z)[..., index]}
