"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — the transformer.

The LlamaGen backbone (pre-norm blocks, RMSNorm eps 1e-5, SwiGLU with hidden
``find_multiple(int(8 * dim / 3), 256)``, no biases, class embedding with ``num_classes + 1`` rows,
the last being the null class for classifier-free guidance) with NAR's dimension-oriented heads:
head 0 = norm + output layer on the backbone's last block (images: "right", predicts (i, j+1));
head d > 0 = d extra blocks + its own norm + output layer (images: d=1 "down" (i+1, j); video:
d=1 next row, d=2 next frame). One head gives the raster-AR / PAR model on the same backbone.

Positions: ``rope2d`` = LlamaGen's 2D RoPE on the true (row, col) of each token (head_dim/4
frequencies from the row, head_dim/4 from the column, interleaved pairs, base 10000);
``learned`` = a learned absolute table over raster positions (video, as NAR-videos).

The forward takes explicit embeddings, positions and an attention mask, and optionally a KV
cache (per block ``(k, v)`` of static shape ``[B, L_cache, heads, head_dim]``) written at
``write_index`` with ``dynamic_update_slice``, so NAR, raster and PAR share the code.

Deviations: condition tokens (and PAR transition tokens) get the identity rotation by default;
the official code zeroes their queries and keys (cos = sin = 0), available as
``zero_cond_rope=True`` for weight compatibility; dropout is functional (an explicit
key per call) and drop-path is not implemented (its official rate is 0); q/k/v are separate
matrices instead of one fused ``wqkv`` (same parameter count).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

import core  # noqa: F401  (turns eager sharding off before any model is built)


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone + heads. ``out_heads``: 2 for NAR images, 3 for NAR video, 1 for raster/PAR."""

    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    vocab_size: int = 16384
    num_classes: int = 1000
    cond_len: int = 1
    out_heads: int = 2
    position: str = "rope2d"
    max_positions: int = 0  # rows of the learned position table (``learned`` only)
    num_transition: int = 0  # PAR-kX: k - 1 learned transition tokens
    rope_base: float = 10000.0
    zero_cond_rope: bool = False  # official: cos = sin = 0 at condition positions (q, k -> 0)
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    token_dropout: float = 0.1
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    class_dropout: float = 0.1
    zero_init_output: bool = True  # official: head 0's output layer starts at zero
    dtype: str = "float32"  # compute dtype; parameters stay float32

    def __post_init__(self):
        for name in ("dim", "n_layer", "n_head", "vocab_size", "num_classes", "cond_len",
                     "out_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a positive integer")
        if self.dim % self.n_head or (self.dim // self.n_head) % 4:
            raise ValueError(
                f"dim={self.dim}, n_head={self.n_head}: head_dim must be an integer multiple of 4"
            )
        if self.position not in ("rope2d", "learned"):
            raise ValueError(f"position={self.position!r}: expected 'rope2d' or 'learned'")
        if self.position == "learned" and self.max_positions <= 0:
            raise ValueError("max_positions: expected > 0 with position='learned'")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def ffn_dim(self) -> int:
        return find_multiple(int(8 * self.dim / 3), 256)


# Paper sizes (official GPT_B ... GPT_XXL). NAR counts: B 130.6M, M 295.5M, L 372.5M,
# XL 816.0M, XXL 1.464B; the paper prints 130M/290M/372M/816M/1.46B (M is 1.9% off there).
PRESETS = {
    "tiny": dict(dim=64, n_layer=2, n_head=4, vocab_size=64, num_classes=10),
    "B": dict(dim=768, n_layer=12, n_head=12),
    "M": dict(dim=1024, n_layer=18, n_head=16),
    "L": dict(dim=1024, n_layer=24, n_head=16),
    "XL": dict(dim=1280, n_layer=36, n_head=20),
    "XXL": dict(dim=1536, n_layer=48, n_head=24),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"preset={name!r}: expected one of {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def for_plan(name: str, plan, **overrides) -> ModelConfig:
    """Preset ``name`` fitted to a decode plan: heads, PAR transition tokens, positions.

    Video grids (3-D) get learned absolute positions (as NAR-videos), image grids 2D RoPE.
    """
    fitted = dict(out_heads=plan.num_heads, num_transition=plan.num_transition)
    if len(plan.shape) == 3:
        fitted.update(position="learned", max_positions=int(plan.abs_pos.max()) + 1)
    return preset(name, **{**fitted, **overrides})


def check_compatible(config: ModelConfig, shape, num_heads: int | None = None,
                     num_transition: int = 0, max_position: int | None = None) -> None:
    """Raise ``ValueError`` when a model cannot run a grid / plan."""
    if num_heads is not None and config.out_heads != num_heads:
        raise ValueError(
            f"model: out_heads={config.out_heads}, but grid {tuple(shape)} with this order "
            f"merges {num_heads} heads"
        )
    if config.out_heads > len(shape):
        raise ValueError(f"model: out_heads={config.out_heads} exceeds the grid's {len(shape)} axes")
    if num_transition > config.num_transition:
        raise ValueError(
            f"model: num_transition={config.num_transition}, the plan needs {num_transition} "
            "(PAR-kX needs k - 1)"
        )
    if config.position == "rope2d" and len(shape) != 2:
        raise ValueError(f"model: position='rope2d' needs an image grid (h, w), got {tuple(shape)}")
    if config.position == "learned" and max_position is not None and (
            max_position >= config.max_positions):
        raise ValueError(
            f"model: max_positions={config.max_positions}, the sequence needs "
            f"{max_position + 1} learned positions"
        )


def _param(key, shape, std, names):
    value = std * jax.random.normal(key, shape, jnp.float32) if std else jnp.zeros(shape)
    return nnx.Param(value, out_sharding=names)


def dropout(x, rate: float, key):
    """Inverted dropout; identity when ``key`` is None or ``rate`` is 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def rms_norm(x, weight, eps):
    xf = x.astype(jnp.float32)
    out = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return out.astype(x.dtype) * weight.astype(x.dtype)


def rope_2d(positions, head_dim: int, base: float = 10000.0, zero_unplaced: bool = False):
    """(cos, sin) ``[S, head_dim/2]`` for (row, col) ``positions [S, 2]``.

    Rows at (-1, -1) (condition / transition tokens) get the identity rotation, or with
    ``zero_unplaced`` cos = sin = 0 as the official code (their queries and keys vanish).
    """
    positions = jnp.asarray(positions)
    quarter = head_dim // 4
    freqs = 1.0 / (base ** (jnp.arange(0, 2 * quarter, 2)[:quarter] / (2 * quarter)))
    pos = jnp.maximum(positions, 0).astype(jnp.float32)
    angles = jnp.concatenate([pos[:, :1] * freqs, pos[:, 1:2] * freqs], axis=-1)
    unplaced = positions[:, :1] < 0
    angles = jnp.where(unplaced, 0.0, angles)
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    if zero_unplaced:
        cos, sin = jnp.where(unplaced, 0.0, cos), jnp.where(unplaced, 0.0, sin)
    return cos, sin


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs of ``x [B, S, H, D]`` by angles ``[S, D/2]``."""
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = jnp.stack([xf[..., 0] * c - xf[..., 1] * s, xf[..., 1] * c + xf[..., 0] * s], -1)
    return out.reshape(x.shape).astype(x.dtype)


class Block(nnx.Module):
    """Pre-norm attention + SwiGLU block of LlamaGen."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c, std = config, config.initializer_range
        self.config = config
        h, d, e, f = c.n_head, c.head_dim, c.dim, c.ffn_dim
        self.attention_norm = nnx.Param(jnp.ones(e), out_sharding=("norm",))
        self.wq = _param(rngs.params(), (e, h, d), std, ("embed", "heads", "head_dim"))
        self.wk = _param(rngs.params(), (e, h, d), std, ("embed", "kv_heads", "head_dim"))
        self.wv = _param(rngs.params(), (e, h, d), std, ("embed", "kv_heads", "head_dim"))
        self.wo = _param(rngs.params(), (h, d, e), std, ("heads", "head_dim", "embed"))
        self.ffn_norm = nnx.Param(jnp.ones(e), out_sharding=("norm",))
        self.w1 = _param(rngs.params(), (e, f), std, ("embed", "mlp"))
        self.w3 = _param(rngs.params(), (e, f), std, ("embed", "mlp"))
        self.w2 = _param(rngs.params(), (f, e), std, ("mlp", "embed"))

    def __call__(self, x, rope, mask, kv=None, write_index=None, keys=(None, None)):
        c = self.config
        dt = x.dtype
        y = rms_norm(x, self.attention_norm[...], c.norm_eps)
        q = jnp.einsum("bse,ehd->bshd", y, self.wq[...].astype(dt))
        k = jnp.einsum("bse,ehd->bshd", y, self.wk[...].astype(dt))
        v = jnp.einsum("bse,ehd->bshd", y, self.wv[...].astype(dt))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is not None:
            k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, write_index, 0, 0))
            v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, write_index, 0, 0))
            kv = (k, v)
        scores = jnp.einsum("bshd,bthd->bhst", q, k.astype(dt)).astype(jnp.float32)
        scores = scores / math.sqrt(c.head_dim)
        mask = jnp.asarray(mask)
        mask = mask[None, None] if mask.ndim == 2 else mask[:, None]
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(dt)
        attn = jnp.einsum("bhst,bthd->bshd", probs, v.astype(dt))
        out = jnp.einsum("bshd,hde->bse", attn, self.wo[...].astype(dt))
        x = x + dropout(out, c.resid_dropout, keys[0])
        y = rms_norm(x, self.ffn_norm[...], c.norm_eps)
        gate = jax.nn.silu(y @ self.w1[...].astype(dt)) * (y @ self.w3[...].astype(dt))
        x = x + dropout(gate @ self.w2[...].astype(dt), c.ffn_dropout, keys[1])
        return x, kv


class Transformer(nnx.Module):
    """LlamaGen backbone + ``out_heads`` dimension-oriented heads (see module docstring)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        c, std = config, config.initializer_range
        self.config = config
        self.tok_embeddings = _param(rngs.params(), (c.vocab_size, c.dim), std, ("vocab", "embed"))
        self.cls_embedding = _param(
            rngs.params(), (c.num_classes + 1, c.dim), std, ("classes", "embed")
        )
        if c.position == "learned":
            self.abs_pe = _param(rngs.params(), (c.max_positions, c.dim), std, ("length", "embed"))
        if c.num_transition:
            self.transition = _param(
                rngs.params(), (c.num_transition, c.dim), std, ("length", "embed")
            )
        self.layers = nnx.List(
            [Block(c, rngs=rngs) for _ in range(c.n_layer + c.out_heads - 1)]
        )
        self.norms = nnx.List(
            [nnx.Param(jnp.ones(c.dim), out_sharding=("norm",)) for _ in range(c.out_heads)]
        )
        self.outputs = nnx.List(
            [
                _param(rngs.params(), (c.dim, c.vocab_size),
                       0.0 if (d == 0 and c.zero_init_output) else std, ("embed", "vocab"))
                for d in range(c.out_heads)
            ]
        )

    @property
    def compute_dtype(self):
        return jnp.dtype(self.config.dtype)

    def embed_labels(self, labels):
        """Class (or null-class ``num_classes``) embedding: ``[B] -> [B, cond_len, dim]``."""
        e = jnp.take(self.cls_embedding[...], labels, axis=0)[:, None]
        return jnp.repeat(e, self.config.cond_len, axis=1).astype(self.compute_dtype)

    def embed_tokens(self, tokens, transition_index=None):
        """Token embeddings ``[B, S, dim]``; slots with ``transition_index >= 0`` get PAR's."""
        e = jnp.take(self.tok_embeddings[...], tokens, axis=0)
        if transition_index is not None and self.config.num_transition:
            t = jnp.take(self.transition[...], jnp.maximum(transition_index, 0), axis=0)
            e = jnp.where((transition_index >= 0)[..., None], t, e)
        return e.astype(self.compute_dtype)

    def init_cache(self, batch: int, length: int):
        c = self.config
        shape = (batch, length, c.n_head, c.head_dim)
        zeros = jnp.zeros(shape, self.compute_dtype)
        return tuple((zeros, zeros) for _ in range(len(self.layers)))

    def __call__(self, x, positions, mask, *, cache=None, write_index=0, dropout_key=None):
        """Logits ``[out_heads, B, S, V]`` (float32) of embedded inputs ``x [B, S, dim]``.

        ``positions``: ``[S, 2]`` (row, col) for ``rope2d``, ``[S]`` table rows for ``learned``.
        ``mask``: bool ``[S, L]`` or ``[B, S, L]``, ``L`` = S without a cache, else the cache
        length. With ``cache`` the new keys/values are written at ``write_index``; returns
        ``(logits, new_cache)``.
        """
        c = self.config
        n_blocks = len(self.layers)
        keys = (
            jax.random.split(dropout_key, 2 * n_blocks + 1)
            if dropout_key is not None else [None] * (2 * n_blocks + 1)
        )
        h = dropout(x.astype(self.compute_dtype), c.token_dropout, keys[0])
        rope = None
        if c.position == "rope2d":
            rope = rope_2d(positions, c.head_dim, c.rope_base, c.zero_cond_rope)
        else:
            h = h + jnp.take(self.abs_pe[...], positions, axis=0).astype(h.dtype)[None]
        logits, new_cache = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else cache[i]
            h, kv = layer(h, rope, mask, kv, write_index, (keys[1 + 2 * i], keys[2 + 2 * i]))
            new_cache.append(kv)
            d = i - (c.n_layer - 1)
            if d >= 0:
                y = rms_norm(h, self.norms[d][...], c.norm_eps)
                out = y @ self.outputs[d][...].astype(y.dtype)
                logits.append(out.astype(jnp.float32))
        return jnp.stack(logits), (tuple(new_cache) if cache is not None else None)


def count_params(config: ModelConfig) -> int:
    """Number of parameters, counted abstractly (nothing is allocated)."""
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
