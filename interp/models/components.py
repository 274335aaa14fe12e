"""Transformer components shared by the GPT and MiniLM families, with named capture points.

Weights use TransformerLens's layout so analyses read them directly: ``W_Q/W_K/W_V``
``[d_model, n_heads, d_head]``, ``W_O`` ``[n_heads, d_head, d_model]``, ``W_in``
``[d_model, d_mlp]``, ``W_out`` ``[d_mlp, d_model]`` (row-vector convention, ``x @ W``). Every
parameter carries logical axis names (``core.mesh.LOGICAL_AXIS_RULES``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from interp.capture import Hooks

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _normal(rngs: nnx.Rngs, shape, std: float) -> jax.Array:
    return std * jax.random.normal(rngs.params(), shape, jnp.float32)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis (scale ``w``, shift ``b``)."""

    def __init__(self, d: int, eps: float):
        self.eps = eps
        self.w = nnx.Param(jnp.ones((d,), jnp.float32), out_sharding=("norm",))
        self.b = nnx.Param(jnp.zeros((d,), jnp.float32), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.w[...] + self.b[...]


class Attention(nnx.Module):
    """Multi-head softmax attention with biases; ``mask`` [batch|1, 1, q, k] is True where allowed.

    Capture points (under ``prefix``): ``attn.hook_q/k/v``, ``attn.hook_attn_scores`` (scaled,
    masked logits), ``attn.hook_pattern``, ``attn.hook_z``.
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int, out_std: float, rngs: nnx.Rngs):
        self.n_heads, self.d_head = n_heads, d_head
        qkv_names = ("embed", "heads", "head_dim")
        for name in ("W_Q", "W_K", "W_V"):
            setattr(self, name, nnx.Param(
                _normal(rngs, (d_model, n_heads, d_head), 0.02), out_sharding=qkv_names))
        for name in ("b_Q", "b_K", "b_V"):
            setattr(self, name, nnx.Param(
                jnp.zeros((n_heads, d_head), jnp.float32), out_sharding=("heads", "head_dim")))
        self.W_O = nnx.Param(
            _normal(rngs, (n_heads, d_head, d_model), out_std),
            out_sharding=("heads", "head_dim", "embed"))
        self.b_O = nnx.Param(jnp.zeros((d_model,), jnp.float32), out_sharding=("embed",))

    def __call__(self, x: jax.Array, mask: jax.Array, hooks: Hooks, prefix: str) -> jax.Array:
        p = prefix + "attn."
        q = hooks(p + "hook_q", jnp.einsum("bpd,dhe->bphe", x, self.W_Q[...]) + self.b_Q[...], 2)
        k = hooks(p + "hook_k", jnp.einsum("bpd,dhe->bphe", x, self.W_K[...]) + self.b_K[...], 2)
        v = hooks(p + "hook_v", jnp.einsum("bpd,dhe->bphe", x, self.W_V[...]) + self.b_V[...], 2)
        scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / jnp.sqrt(jnp.float32(self.d_head))
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        scores = hooks(p + "hook_attn_scores", scores)  # no head ablation: it would unmask
        pattern = hooks(p + "hook_pattern", jax.nn.softmax(scores, axis=-1), 1)
        z = hooks(p + "hook_z", jnp.einsum("bhqk,bkhe->bqhe", pattern, v), 2)
        return jnp.einsum("bqhe,hed->bqd", z, self.W_O[...]) + self.b_O[...]


class MLP(nnx.Module):
    """Two-layer MLP; capture points ``mlp.hook_pre`` (pre-activation) and ``mlp.hook_post``."""

    def __init__(self, d_model: int, d_mlp: int, act: str, out_std: float, rngs: nnx.Rngs):
        if act not in ACTIVATIONS:
            raise ValueError(f"act={act!r}: expected one of {sorted(ACTIVATIONS)}")
        self.act = act
        self.W_in = nnx.Param(_normal(rngs, (d_model, d_mlp), 0.02), out_sharding=("embed", "mlp"))
        self.b_in = nnx.Param(jnp.zeros((d_mlp,), jnp.float32), out_sharding=("mlp",))
        self.W_out = nnx.Param(
            _normal(rngs, (d_mlp, d_model), out_std), out_sharding=("mlp", "embed"))
        self.b_out = nnx.Param(jnp.zeros((d_model,), jnp.float32), out_sharding=("embed",))

    def __call__(self, x: jax.Array, hooks: Hooks, prefix: str) -> jax.Array:
        pre = hooks(prefix + "mlp.hook_pre", x @ self.W_in[...] + self.b_in[...])
        post = hooks(prefix + "mlp.hook_post", ACTIVATIONS[self.act](pre))
        return post @ self.W_out[...] + self.b_out[...]


def block_hook_names(layer: int) -> tuple[str, ...]:
    """The capture points of transformer block ``layer`` (same names in both families)."""
    p = f"blocks.{layer}."
    return (
        p + "hook_resid_pre",
        p + "attn.hook_q",
        p + "attn.hook_k",
        p + "attn.hook_v",
        p + "attn.hook_attn_scores",
        p + "attn.hook_pattern",
        p + "attn.hook_z",
        p + "hook_attn_out",
        p + "hook_resid_mid",
        p + "mlp.hook_pre",
        p + "mlp.hook_post",
        p + "hook_mlp_out",
        p + "hook_resid_post",
    )


def check_stop_at_layer(stop_at_layer: int | None, n_layers: int) -> int:
    """Number of blocks to run; ``stop_at_layer=l`` runs blocks ``0..l-1`` (TransformerLens)."""
    if stop_at_layer is None:
        return n_layers
    if not isinstance(stop_at_layer, int) or not 0 <= stop_at_layer <= n_layers:
        raise ValueError(
            f"stop_at_layer={stop_at_layer!r}: expected an int in [0, {n_layers}] or None"
        )
    return stop_at_layer
