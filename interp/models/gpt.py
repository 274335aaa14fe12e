"""A GPT-style causal language model (pre-LayerNorm, learned positions) with capture points.

GPT-2's architecture in NNX with TransformerLens's weight layout and hook names:
``hook_embed``, ``hook_pos_embed``, per block ``hook_resid_pre``, ``ln1.hook_normalized``,
``attn.hook_q/k/v/attn_scores/pattern/z``, ``hook_attn_out``, ``hook_resid_mid``,
``ln2.hook_normalized``, ``mlp.hook_pre/post``, ``hook_mlp_out``, ``hook_resid_post``, and
``ln_final.hook_normalized``. Presets: ``tiny`` (0.17M parameters; on the stdlib docstring
corpus of :mod:`interp.text` with a 512-token BPE, 600 AdamW steps of 32 x 64 tokens take about
two minutes on two CPU cores and reach a held-out loss of 3.4 nats against a unigram entropy of
5.3) and ``small`` (5.3M parameters, 4096-token BPE). Deviations from GPT-2: the unembedding
``W_U`` is a separate matrix (not tied to ``W_E``), no dropout, exact (erf) GELU by default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import core  # noqa: F401  (turns Flax's eager sharding off before models are built)
from interp.capture import Hooks
from interp.models.components import (
    MLP,
    Attention,
    LayerNorm,
    block_hook_names,
    check_stop_at_layer,
)


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 512
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    n_ctx: int = 64
    act: str = "gelu"
    ln_eps: float = 1e-5

    def __post_init__(self):
        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "d_head", "d_mlp", "n_ctx"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{field}={value!r}: expected a positive int")


PRESETS = {
    "tiny": GPTConfig(),
    "small": GPTConfig(
        vocab_size=4096, d_model=256, n_layers=4, n_heads=8, d_head=32, d_mlp=1024, n_ctx=256
    ),
}


def preset(name: str, **overrides) -> GPTConfig:
    """A named configuration (``tiny`` or ``small``), with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset name={name!r}: expected one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


class GPTBlock(nnx.Module):
    def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
        out_std = 0.02 / math.sqrt(2 * config.n_layers)
        self.ln1 = LayerNorm(config.d_model, config.ln_eps)
        self.attn = Attention(config.d_model, config.n_heads, config.d_head, out_std, rngs)
        self.ln2 = LayerNorm(config.d_model, config.ln_eps)
        self.mlp = MLP(config.d_model, config.d_mlp, config.act, out_std, rngs)

    def __call__(self, resid, mask, hooks: Hooks, layer: int):
        p = f"blocks.{layer}."
        resid = hooks(p + "hook_resid_pre", resid)
        x = hooks(p + "ln1.hook_normalized", self.ln1(resid))
        attn_out = hooks(p + "hook_attn_out", self.attn(x, mask, hooks, p))
        resid = hooks(p + "hook_resid_mid", resid + attn_out)
        x = hooks(p + "ln2.hook_normalized", self.ln2(resid))
        mlp_out = hooks(p + "hook_mlp_out", self.mlp(x, hooks, p))
        return hooks(p + "hook_resid_post", resid + mlp_out)


class GPT(nnx.Module):
    """Causal LM: ``model(tokens) -> logits``; ``model.run(...)`` adds capture/intervention."""

    def __init__(self, config: GPTConfig, rngs: nnx.Rngs):
        self.config = config
        self.W_E = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (config.vocab_size, config.d_model)),
            out_sharding=("vocab", "embed"))
        self.W_pos = nnx.Param(
            0.01 * jax.random.normal(rngs.params(), (config.n_ctx, config.d_model)),
            out_sharding=("length", "embed"))
        self.blocks = nnx.List([GPTBlock(config, rngs) for _ in range(config.n_layers)])
        self.ln_final = LayerNorm(config.d_model, config.ln_eps)
        self.W_U = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (config.d_model, config.vocab_size)),
            out_sharding=("embed", "vocab"))
        self.b_U = nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32), out_sharding=("vocab",))

    def hook_names(self) -> tuple[str, ...]:
        names = ["hook_embed", "hook_pos_embed"]
        for layer in range(self.config.n_layers):
            p = f"blocks.{layer}."
            block = list(block_hook_names(layer))
            block.insert(1, p + "ln1.hook_normalized")
            block.insert(block.index(p + "mlp.hook_pre"), p + "ln2.hook_normalized")
            names += block
        return (*names, "ln_final.hook_normalized")

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.run(tokens)[0]

    def run(
        self,
        tokens: jax.Array,
        capture: tuple[str, ...] = (),
        interventions: Mapping[str, Any] | None = None,
        stop_at_layer: int | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Forward pass with captures: ``(logits [batch, pos, vocab], {name: activation})``.

        With ``stop_at_layer=l`` only blocks ``0..l-1`` run and the output is the residual
        stream after them, before ``ln_final`` and the unembedding (TransformerLens's convention).
        """
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"tokens: expected an integer array [batch, pos], got {tokens.dtype} "
                f"shape {tokens.shape}"
            )
        if tokens.shape[1] > self.config.n_ctx:
            raise ValueError(
                f"tokens: {tokens.shape[1]} positions exceed the context n_ctx="
                f"{self.config.n_ctx}"
            )
        n_run = check_stop_at_layer(stop_at_layer, self.config.n_layers)
        hooks = Hooks(self.hook_names(), capture, interventions)
        length = tokens.shape[1]
        embed = hooks("hook_embed", jnp.take(self.W_E[...], tokens, axis=0))
        pos = hooks("hook_pos_embed", self.W_pos[:length][None])
        resid = embed + pos
        mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        for layer in range(n_run):
            resid = self.blocks[layer](resid, mask, hooks, layer)
        if stop_at_layer is not None:
            return resid, hooks.finish(stopped_at=n_run)
        x = hooks("ln_final.hook_normalized", self.ln_final(resid))
        logits = x @ self.W_U[...] + self.b_U[...]
        return logits, hooks.finish()


def next_token_loss(model: GPT, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict]:
    """Mean next-token cross entropy over ``batch["tokens"]`` [batch, pos + 1].

    Optional ``batch["mask"]`` [batch, pos + 1] (1 = real token) weights the targets. Returns
    ``(loss, {"loss", "accuracy", "tokens"})`` for the training loop.
    """
    if not isinstance(batch, Mapping) or "tokens" not in batch:
        raise ValueError("batch: expected a mapping with an integer 'tokens' array [batch, pos]")
    tokens = jnp.asarray(batch["tokens"])
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(
            f"batch['tokens']: expected [batch, pos] with pos >= 2, got shape {tokens.shape}"
        )
    logits = model(tokens[:, :-1])
    targets = tokens[:, 1:]
    weights = jnp.ones(targets.shape, jnp.float32)
    if "mask" in batch:
        mask = jnp.asarray(batch["mask"])
        if mask.shape != tokens.shape:
            raise ValueError(
                f"batch['mask']: expected shape {tokens.shape} (as tokens), got {mask.shape}"
            )
        weights = mask[:, 1:].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    n = jnp.maximum(weights.sum(), 1.0)
    loss = (ce * weights).sum() / n
    accuracy = ((logits.argmax(-1) == targets) * weights).sum() / n
    return loss, {"loss": loss, "accuracy": accuracy, "tokens": weights.sum()}
