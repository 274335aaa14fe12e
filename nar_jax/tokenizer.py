"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — a small VQ image
tokenizer, so the whole image -> tokens -> NAR -> image path runs offline.

NAR (like LlamaGen, PAR) models the discrete codes of a VQ tokenizer (LlamaGen's VQ-16: 16x
downsampling, 16384 codes of dimension 8). This module is a compact VQ-VAE in that spirit:

* encoder: ``conv_in`` 3x3, per resolution level ``res_blocks`` residual blocks (GroupNorm, SiLU,
  3x3 convs) then a stride-2 3x3 conv (all levels but the last), a middle residual block,
  GroupNorm + SiLU + 3x3 conv to ``code_dim``;
* quantizer: nearest code in squared Euclidean distance, straight-through gradient to the encoder;
  the codebook learns either by an exponential moving average of the assigned encoder outputs
  (``quantizer="ema"``, the default; van den Oord et al. 2017 App. A.1 / Razavi et al. 2019, with
  Laplace smoothing of the counts) or by gradient with the codebook loss ``|sg(z) - e|^2``
  (``"straight_through"``, as LlamaGen). Both add ``commitment * |z - sg(e)|^2``;
* decoder: the mirror image with nearest-neighbour x2 upsampling followed by a 3x3 conv.

EMA mode keeps the codebook and its statistics in :class:`CodebookStat` variables (not
``nnx.Param``): :func:`tokenizer_loss` writes the updated statistics into the module, and
``core.train.train`` carries them to the next step in the state's ``rest``. In EMA mode the
codebook is initialised from the first training batch's encoder outputs, and with
``dead_code_threshold > 0`` a code whose EMA count falls below the threshold is restarted at a
random encoder output of the current batch (count reset to the threshold). The default EMA decay
is 0.95 (short CPU runs; the VQ-VAE paper uses 0.99, as the ``vq16`` preset). In straight-through
mode the codebook is an ``nnx.Param`` drawn from N(0, 1), with neither data init nor restarts.

Images are float ``[B, H, W, C]`` in [-1, 1] (LlamaGen's normalisation); tokens are int32
``[B, H / f, W / f]`` with ``f = 2 ** (len(channels) - 1)``.

Deviations from LlamaGen's VQ-16: mean-squared reconstruction loss only (no perceptual or
adversarial loss), no attention blocks in the middle, no l2-normalised codebook, small presets
(``vq16`` has LlamaGen's channel widths and 16x downsampling but is not weight-compatible).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import core  # noqa: F401  (turns eager sharding off before any model is built)


class CodebookStat(nnx.Variable):
    """Codebook state updated outside the optimizer (EMA codebook, counts, init flag)."""


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """``channels[i]``: width at resolution level ``i`` (downsampling ``2 ** (len - 1)``)."""

    image_channels: int = 3
    channels: tuple[int, ...] = (32, 64)
    res_blocks: int = 1
    codebook_size: int = 128
    code_dim: int = 8
    quantizer: Literal["ema", "straight_through"] = "ema"
    commitment: float = 0.25
    ema_decay: float = 0.95
    ema_eps: float = 1e-5
    dead_code_threshold: float = 1.0  # EMA count below which a code restarts (0: never)
    norm_groups: int = 8

    def __post_init__(self):
        for name in ("image_channels", "res_blocks", "codebook_size", "code_dim", "norm_groups"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a positive integer")
        if not self.channels or any(not isinstance(c, int) or c <= 0 for c in self.channels):
            raise ValueError(f"channels={self.channels!r}: expected a non-empty tuple of positive ints")
        if self.quantizer not in ("ema", "straight_through"):
            raise ValueError(f"quantizer={self.quantizer!r}: expected 'ema' or 'straight_through'")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay={self.ema_decay}: expected a value in [0, 1)")
        if self.commitment < 0 or self.ema_eps <= 0 or self.dead_code_threshold < 0:
            raise ValueError(
                f"commitment={self.commitment}, ema_eps={self.ema_eps}, dead_code_threshold="
                f"{self.dead_code_threshold}: expected commitment >= 0, eps > 0, threshold >= 0"
            )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)


PRESETS: dict[str, TokenizerConfig] = {
    # 32x32 -> 16x16 tokens; trains on 2 CPU cores in about a minute (``train_tokenizer``).
    "tiny": TokenizerConfig(channels=(16, 32), codebook_size=128, code_dim=8),
    # 64x64 -> 16x16 tokens.
    "small": TokenizerConfig(channels=(64, 128, 128), res_blocks=2, codebook_size=1024, code_dim=8),
    # LlamaGen VQ-16 widths (128 x (1, 1, 2, 2, 4)), 16384 codes of dim 8: 256x256 -> 16x16.
    "vq16": TokenizerConfig(
        channels=(128, 128, 256, 256, 512), res_blocks=2, codebook_size=16384, code_dim=8,
        ema_decay=0.99, norm_groups=32,
    ),
}


def _normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal ``shape`` drawn as a power-of-two-long vector: eager construction then
    compiles one random kernel per size bucket instead of one per parameter shape."""
    n = math.prod(shape)
    return jax.random.normal(key, (1 << max(n - 1, 0).bit_length(),))[:n].reshape(shape)


class Conv(nnx.Module):
    """2D convolution, NHWC, 'SAME' padding, kernel ``[k, k, in, out]`` (conv_in, conv_out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, rngs: nnx.Rngs, stride: int = 1):
        self.stride = stride
        shape = (kernel, kernel, c_in, c_out)
        self.kernel = nnx.Param(
            _normal(rngs.params(), shape) / math.sqrt(kernel * kernel * c_in),  # LeCun normal
            out_sharding=(None, None, "conv_in", "conv_out"),
        )
        self.bias = nnx.Param(jnp.zeros((c_out,)), out_sharding=("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...].astype(x.dtype), (self.stride, self.stride), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + self.bias[...].astype(x.dtype)


class GroupNorm(nnx.Module):
    """GroupNorm (eps 1e-6) over ``groups`` channel groups, the largest divisor <= requested."""

    def __init__(self, channels: int, groups: int):
        self.groups = max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)
        self.scale = nnx.Param(jnp.ones((channels,)), out_sharding=("norm",))
        self.bias = nnx.Param(jnp.zeros((channels,)), out_sharding=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        g = x.reshape(b, h, w, self.groups, c // self.groups).astype(jnp.float32)
        mean = g.mean(axis=(1, 2, 4), keepdims=True)
        var = g.var(axis=(1, 2, 4), keepdims=True)
        g = ((g - mean) * jax.lax.rsqrt(var + 1e-6)).reshape(b, h, w, c).astype(x.dtype)
        return g * self.scale[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


class ResBlock(nnx.Module):
    def __init__(self, c_in: int, c_out: int, groups: int, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(c_in, groups)
        self.conv1 = Conv(c_in, c_out, 3, rngs)
        self.norm2 = GroupNorm(c_out, groups)
        self.conv2 = Conv(c_out, c_out, 3, rngs)
        self.skip = Conv(c_in, c_out, 1, rngs) if c_in != c_out else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class Encoder(nnx.Module):
    def __init__(self, config: TokenizerConfig, rngs: nnx.Rngs):
        ch, g = config.channels, config.norm_groups
        self.conv_in = Conv(config.image_channels, ch[0], 3, rngs)
        blocks, downs = [], []
        c_prev = ch[0]
        for level, c in enumerate(ch):
            for _ in range(config.res_blocks):
                blocks.append(ResBlock(c_prev, c, g, rngs))
                c_prev = c
            if level < len(ch) - 1:
                downs.append(Conv(c, ch[level + 1], 3, rngs, stride=2))
                c_prev = ch[level + 1]
        self.blocks, self.downs = nnx.List(blocks), nnx.List(downs)
        self.res_blocks = config.res_blocks
        self.mid = ResBlock(ch[-1], ch[-1], g, rngs)
        self.norm_out = GroupNorm(ch[-1], g)
        self.conv_out = Conv(ch[-1], config.code_dim, 3, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x)
        for i, block in enumerate(self.blocks):
            h = block(h)
            level = i // self.res_blocks
            if (i + 1) % self.res_blocks == 0 and level < len(self.downs):
                h = self.downs[level](h)
        h = self.mid(h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


class Decoder(nnx.Module):
    def __init__(self, config: TokenizerConfig, rngs: nnx.Rngs):
        ch, g = config.channels[::-1], config.norm_groups
        self.conv_in = Conv(config.code_dim, ch[0], 3, rngs)
        self.mid = ResBlock(ch[0], ch[0], g, rngs)
        blocks, ups = [], []
        c_prev = ch[0]
        for level, c in enumerate(ch):
            for _ in range(config.res_blocks):
                blocks.append(ResBlock(c_prev, c, g, rngs))
                c_prev = c
            if level < len(ch) - 1:
                ups.append(Conv(c, ch[level + 1], 3, rngs))
                c_prev = ch[level + 1]
        self.blocks, self.ups = nnx.List(blocks), nnx.List(ups)
        self.res_blocks = config.res_blocks
        self.norm_out = GroupNorm(ch[-1], g)
        self.conv_out = Conv(ch[-1], config.image_channels, 3, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = self.mid(self.conv_in(z))
        for i, block in enumerate(self.blocks):
            h = block(h)
            level = i // self.res_blocks
            if (i + 1) % self.res_blocks == 0 and level < len(self.ups):
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = self.ups[level](h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the nearest code (squared Euclidean) for each row of ``z [M, D]``."""
    dist = (
        jnp.sum(z * z, axis=-1, keepdims=True)
        - 2.0 * z @ codebook.T
        + jnp.sum(codebook * codebook, axis=-1)[None, :]
    )
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def ema_codebook_update(cluster_size, embed_sum, z, indices, decay: float, eps: float):
    """One EMA step of the codebook statistics from encoder outputs ``z [M, D]`` assigned to
    ``indices [M]``: returns ``(cluster_size, embed_sum, codebook)``.

    ``N_k <- decay N_k + (1 - decay) n_k``, ``m_k <- decay m_k + (1 - decay) sum_{i: k} z_i``,
    ``e_k = m_k / N~_k`` with Laplace-smoothed counts ``N~_k = (N_k + eps) / (N + K eps) N``.
    """
    k = cluster_size.shape[0]
    counts = jax.ops.segment_sum(jnp.ones(indices.shape, z.dtype), indices, num_segments=k)
    sums = jax.ops.segment_sum(z, indices, num_segments=k)
    cluster_size = decay * cluster_size + (1.0 - decay) * counts
    embed_sum = decay * embed_sum + (1.0 - decay) * sums
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + k * eps) * total
    return cluster_size, embed_sum, embed_sum / smoothed[:, None]


def restart_dead_codes(codebook, cluster_size, embed_sum, z, threshold: float, key):
    """Move every code with ``cluster_size < threshold`` onto a random row of ``z`` (count reset
    to ``threshold``, running sum to ``threshold * code``): ``(codebook, cluster_size, embed_sum)``."""
    dead = cluster_size < threshold
    picks = z[jax.random.randint(key, (codebook.shape[0],), 0, z.shape[0])]
    codebook = jnp.where(dead[:, None], picks, codebook)
    cluster_size = jnp.where(dead, threshold, cluster_size)
    embed_sum = jnp.where(dead[:, None], picks * threshold, embed_sum)
    return codebook, cluster_size, embed_sum


def _check_images(images, channels: int, factor: int, name: str = "images") -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError(f"{name}: expected [B, H, W, {channels}] images, got shape {images.shape}")
    if images.shape[1] % factor or images.shape[2] % factor:
        raise ValueError(
            f"{name}: height and width must be multiples of the downsampling {factor}, got "
            f"{images.shape[1]}x{images.shape[2]}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"{name}: expected floating-point images in [-1, 1], got {images.dtype}")
    if not isinstance(images, jax.core.Tracer) and not bool(jnp.isfinite(images).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return images


class VQTokenizer(nnx.Module):
    """Encoder, codebook and decoder. ``encode`` gives int tokens, ``decode`` images."""

    def __init__(self, config: TokenizerConfig, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs)
        self.decoder = Decoder(config, rngs)
        shape, names = (config.codebook_size, config.code_dim), ("vocab", "embed")
        codes = _normal(rngs.params(), shape)
        if config.quantizer == "ema":
            self.codebook = CodebookStat(codes, out_sharding=names)
            self.cluster_size = CodebookStat(jnp.ones(shape[:1]), out_sharding=names[:1])
            self.embed_sum = CodebookStat(codes, out_sharding=names)
            self.initialized = CodebookStat(jnp.zeros((), jnp.bool_), out_sharding=())
        else:
            self.codebook = nnx.Param(codes, out_sharding=names)

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        f = self.config.downsample
        return height // f, width // f

    def encode_continuous(self, images: jax.Array) -> jax.Array:
        """Encoder outputs before quantization, ``[B, h, w, code_dim]``."""
        images = _check_images(images, self.config.image_channels, self.config.downsample)
        return self.encoder(images)

    def encode(self, images: jax.Array) -> jax.Array:
        """Token ids ``int32 [B, h, w]`` of images ``[B, H, W, C]`` in [-1, 1]."""
        z = self.encode_continuous(images)
        b, h, w, d = z.shape
        return nearest_code(z.reshape(-1, d), self.codebook[...].astype(z.dtype)).reshape(b, h, w)

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 3 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens: expected integer ids of shape [B, h, w], got {tokens.dtype} {tokens.shape}")
        return self.codebook[...][tokens]

    def decode(self, tokens: jax.Array) -> jax.Array:
        """Images ``[B, H, W, C]`` from token ids ``[B, h, w]``."""
        return self.decoder(self.embed_tokens(tokens))

    def __call__(self, images: jax.Array) -> jax.Array:
        """Reconstruction ``decode(encode(images))``."""
        return self.decode(self.encode(images))

    def quantize_train(self, z: jax.Array, key: jax.Array):
        """Training quantization of ``z [B, h, w, D]``: ``(z_q, indices, aux losses/stats)``.

        EMA mode updates the codebook statistics in place (after choosing the codes)."""
        c = self.config
        b, h, w, d = z.shape
        flat = z.reshape(-1, d)
        target = jax.lax.stop_gradient(flat).astype(jnp.float32)
        codebook = self.codebook[...]
        if c.quantizer == "ema":
            init_key, restart_key = jax.random.split(key)
            first = ~self.initialized[...]
            picks = target[jax.random.randint(init_key, (c.codebook_size,), 0, target.shape[0])]
            codebook = jnp.where(first, picks, codebook)
            cluster = jnp.where(first, jnp.ones_like(self.cluster_size[...]), self.cluster_size[...])
            embed_sum = jnp.where(first, picks, self.embed_sum[...])
        codebook = jax.lax.stop_gradient(codebook) if c.quantizer == "ema" else codebook
        indices = nearest_code(target, jax.lax.stop_gradient(codebook))
        chosen = codebook[indices]
        commit = jnp.mean((flat.astype(jnp.float32) - jax.lax.stop_gradient(chosen)) ** 2)
        aux = {"commitment": commit}
        if c.quantizer == "ema":
            cluster, embed_sum, new_codebook = ema_codebook_update(
                cluster, embed_sum, target, indices, c.ema_decay, c.ema_eps
            )
            if c.dead_code_threshold > 0:
                aux["dead_codes"] = jnp.mean(cluster < c.dead_code_threshold)
                new_codebook, cluster, embed_sum = restart_dead_codes(
                    new_codebook, cluster, embed_sum, target, c.dead_code_threshold, restart_key
                )
            # New variables (same metadata) rather than in-place writes: core.train merges the
            # statistics outside the gradient trace, where NNX forbids mutating them.
            self.codebook = self.codebook.replace(new_codebook)
            self.cluster_size = self.cluster_size.replace(cluster)
            self.embed_sum = self.embed_sum.replace(embed_sum)
            self.initialized = self.initialized.replace(jnp.ones((), jnp.bool_))
        else:
            aux["codebook_loss"] = jnp.mean((target - chosen) ** 2)
        z_q = flat + jax.lax.stop_gradient(chosen.astype(flat.dtype) - flat)
        return z_q.reshape(b, h, w, d), indices.reshape(b, h, w), aux


def codebook_usage(indices: jax.Array, codebook_size: int) -> dict[str, jax.Array]:
    """Fraction of codes used and perplexity ``exp(H(p))`` of the code histogram of ``indices``."""
    counts = jnp.zeros((codebook_size,), jnp.float32).at[indices.reshape(-1)].add(1.0)
    p = counts / jnp.maximum(counts.sum(), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {"usage": jnp.mean(counts > 0), "perplexity": jnp.exp(entropy)}


def tokenizer_loss(model: VQTokenizer, batch: dict, key: jax.Array):
    """``loss_fn(model, batch, key) -> (loss, metrics)`` for ``core.train.train``.

    ``batch['image']`` float ``[B, H, W, C]`` in [-1, 1]. Loss = reconstruction MSE +
    ``commitment`` x commitment loss (+ codebook loss in straight-through mode). Metrics:
    ``recon_mse``, ``commitment``, ``usage`` and ``perplexity`` of the batch's codes (and
    ``dead_codes``, the fraction restarted, in EMA mode with a threshold).
    """
    c = model.config
    images = _check_images(batch["image"], c.image_channels, c.downsample, "batch['image']")
    z = model.encoder(images)
    z_q, indices, aux = model.quantize_train(z, key)
    recon = model.decoder(z_q)
    mse = jnp.mean((recon.astype(jnp.float32) - images.astype(jnp.float32)) ** 2)
    loss = mse + c.commitment * aux["commitment"] + aux.get("codebook_loss", 0.0)
    return loss, {"recon_mse": mse, **aux, **codebook_usage(indices, c.codebook_size)}


def train_tokenizer(
    config: TokenizerConfig,
    source,
    train_config,
    mesh=None,
    learning_rate: float = 2e-3,
):
    """Train a tokenizer on an image source (``{'image': [H, W, C]}`` examples) through
    ``core.train.train`` with Adam (betas 0.9, 0.95 as LlamaGen's VQ) and a cosine decay.
    Returns the ``TrainResult`` (``.model`` is the trained tokenizer)."""
    from core import data as data_lib
    from core import mesh as mesh_lib
    from core.train import train

    mesh = mesh_lib.make_mesh() if mesh is None else mesh
    schedule = optax.cosine_decay_schedule(learning_rate, max(train_config.steps, 1), alpha=0.05)
    optimizer = optax.adam(schedule, b1=0.9, b2=0.95)
    iterator = data_lib.batches(source, train_config.batch_size, seed=train_config.seed)
    return train(
        lambda: VQTokenizer(config, nnx.Rngs(train_config.seed)),
        tokenizer_loss,
        optimizer,
        iterator,
        train_config,
        mesh,
    )
