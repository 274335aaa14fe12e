"""P09 MindBridge: A Cross-Subject Brain Decoding Framework.

Implemented as in the paper and its code (littlepure2333/MindBridge ``src/models.py``,
``scripts/*.sh``): each subject's voxels are adaptively max-pooled to a common length
(:func:`brain.pooling.adaptive_pool`; ``avg``/``resize`` as options); per subject an *embedder*
``Adapter(bottleneck 128, zero-init up, residual) -> Linear(pooled, hidden) -> LayerNorm -> GELU
-> Dropout 0.5`` and a *builder* ``Linear(hidden, pooled) -> LayerNorm -> GELU -> Adapter``; a
shared *translator* (residual MLP, blocks ``Linear + LN + GELU + Dropout 0.15``) and a head to
the frozen-embedding target. The loss (:func:`mindbridge_loss`) is SoftCLIP + ``mse_mult`` MSE on
L2-normalised predictions (the reference's 1e4 on 257 x 768 image tokens, by default rescaled to the
target's width: :func:`reference_mse_mult`) + ``rec_mult`` MSE(x, builder_s(embedder_s(x))) +
``cyc_mult`` MSE(e_a, embedder_b(builder_b(e_a))) for a random subject pair (a, b) each step,
every batch holding an equal chunk of every subject (the reference's chunked batches).

Reset-tuning for a new subject (:func:`reset_subject`, :func:`reset_tuning_trainable`): the new
subject's embedder and builder are re-initialised; they and the shared translator and head are
tuned, while the source subjects' embedders/builders stay fixed; the batches hold source and
target chunks and the cycle always runs from a random source into the target (the reference's
``adapting`` mode: source semantics rendered as pseudo target fMRI).

Deviations: one head to one target (the simulator's CLIP stand-in has no 257 x 768 image tokens
or 77 x 768 text tokens; ``out_dim`` is its width), so the MSE weight is rescaled to keep the
reference's balance against SoftCLIP (1e4 x D / 197376, 3.2 for D = 64; the unscaled 1e4 made the
MSE ~3000x heavier than in the reference and cost reset-tuning 0.06-0.09 2-way on the simulator,
quick adaptation form, n_target 750); sizes are configurable (paper: pooled 8192, hidden 2048,
4 blocks; at small scale the pooled length and the embedder's dropout 0.5 cost most, see
``benchmarks/brain_cross_subject.py``); dropout is functional (a key per call) and off inside the
cycle pass (the reference runs the target embedder there in training mode); in reset-tuning the
source subjects' embedders/builders are frozen so the pretrained subjects stay bitwise intact (not
checked against the reference's ``--adapting`` optimiser setup).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from brain.losses import l2_normalize, soft_clip_loss
from brain.models.blocks import (
    BottleneckAdapter,
    LayerNorm,
    ResidualMLP,
    check_subject_input,
    check_voxel_counts,
    dropout,
    reset_subject_modules,
    split_key,
    subject_trainable,
)
from brain.pooling import PoolKind, adaptive_pool
from core.classifier import Dense

FRONT_END = ("embedders", "builders")  # the per-subject modules, reset for a new subject
REFERENCE_MSE_MULT = 1e4  # scripts/*.sh ``mse_mult``
REFERENCE_TARGET_SIZE = 257 * 768  # CLIP ViT-L/14 image tokens, the reference's MSE is a mean over them


@dataclasses.dataclass(frozen=True)
class MindBridgeConfig:
    voxels: tuple[int, ...]
    out_dim: int
    pooled: int = 8192
    hidden: int = 2048
    n_blocks: int = 4
    bottleneck: int = 128
    pool_kind: PoolKind = "max"
    embedder_dropout: float = 0.5
    translator_dropout: float = 0.15

    def __post_init__(self):
        check_voxel_counts(self.voxels)
        for name in ("embedder_dropout", "translator_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a drop probability in [0, 1)")


class Embedder(nnx.Module):
    def __init__(self, c: MindBridgeConfig, rngs: nnx.Rngs):
        self.adapter = BottleneckAdapter(c.pooled, c.bottleneck, "voxels", rngs)
        self.linear = Dense(c.pooled, c.hidden, ("voxels", "embed"), rngs)
        self.norm = LayerNorm(c.hidden, "embed")
        self.rate = c.embedder_dropout

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return dropout(jax.nn.gelu(self.norm(self.linear(self.adapter(x))), approximate=False), self.rate, key)


class Builder(nnx.Module):
    def __init__(self, c: MindBridgeConfig, rngs: nnx.Rngs):
        self.linear = Dense(c.hidden, c.pooled, ("embed", "voxels"), rngs)
        self.norm = LayerNorm(c.pooled, "voxels")
        self.adapter = BottleneckAdapter(c.pooled, c.bottleneck, "voxels", rngs)

    def __call__(self, e: jax.Array) -> jax.Array:
        return self.adapter(jax.nn.gelu(self.norm(self.linear(e)), approximate=False))


class MindBridge(nnx.Module):
    """One model for all subjects: ``model(voxels, subject)`` predicts the target embedding."""

    def __init__(self, config: MindBridgeConfig, rngs: nnx.Rngs):
        self.config = config
        self.embedders = nnx.List([Embedder(config, rngs) for _ in config.voxels])
        self.builders = nnx.List([Builder(config, rngs) for _ in config.voxels])
        self.translator = ResidualMLP(config.hidden, config.n_blocks, config.translator_dropout, rngs)
        self.head = Dense(config.hidden, config.out_dim, ("embed", None), rngs)

    def pool(self, voxels: jax.Array, subject: int) -> jax.Array:
        """Check ``voxels`` against the subject's voxel count and pool to ``config.pooled``."""
        check_subject_input(self.config.voxels, voxels, subject)
        return adaptive_pool(voxels, self.config.pooled, self.config.pool_kind)

    def decode(self, embedding: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return self.head(self.translator(embedding, key))

    def __call__(self, voxels: jax.Array, subject: int, key: jax.Array | None = None) -> jax.Array:
        k_embed, k_decode = split_key(key, 2)
        pooled = self.pool(voxels, subject)
        return self.decode(self.embedders[subject](pooled, k_embed), k_decode)


def reset_subject(model: MindBridge, subject: int, rngs: nnx.Rngs) -> None:
    """Re-initialise ``subject``'s embedder and builder in place (the "reset" of reset-tuning)."""
    check_subject_input(model.config.voxels, jnp.zeros((1, model.config.voxels[subject])), subject)
    reset_subject_modules(model, subject, FRONT_END, rngs)


def reset_tuning_trainable(target: int):
    """``params -> bool tree``: True for the target subject's embedder/builder and the shared
    translator and head, False for other subjects' embedders/builders."""
    return subject_trainable(target, FRONT_END, shared=True)


def reference_mse_mult(target_size: int) -> float:
    """The MSE weight that gives a ``target_size``-element target the reference's balance against
    SoftCLIP. The MSE of L2-normalised vectors is a mean over elements, ``|p - t|^2 / size``, so the
    reference's weight per unit of squared distance is 1e4 / (257 x 768); this keeps that."""
    return REFERENCE_MSE_MULT * target_size / REFERENCE_TARGET_SIZE


def mindbridge_loss(
    model: MindBridge,
    batch: dict,
    key: jax.Array,
    subjects: tuple[int, ...],
    *,
    mse_mult: float | None = None,
    rec_mult: float = 1.0,
    cyc_mult: float = 1.0,
    temperature: float = 0.125,
    cycle_target: int | None = None,
):
    """MindBridge's training loss on a multi-subject batch.

    ``batch["voxels"]`` is ``(B, len(subjects), max_voxels)`` (subject ``subjects[j]`` in column
    ``j``, zero-padded past its voxel count), ``batch["target"]`` is ``(B, len(subjects), D)``.
    With ``cycle_target`` (reset-tuning) the cycle runs from a random other subject into it;
    otherwise from a random subject ``a`` into a random ``b != a``. ``mse_mult=None`` is
    :func:`reference_mse_mult` of the target width ``D``.
    """
    if len(subjects) < 2 and cyc_mult:
        raise ValueError(f"subjects={subjects}: the cycle loss needs at least two subjects")
    k_pair, k_shift, key = jax.random.split(key, 3)
    voxel_counts = model.config.voxels
    embeddings, clip, mse, rec = [], 0.0, 0.0, 0.0
    for j, (s, k) in enumerate(zip(subjects, split_key(key, len(subjects)))):
        k_embed, k_decode = jax.random.split(k)
        x = model.pool(batch["voxels"][:, j, : voxel_counts[s]], s)
        e = model.embedders[s](x, k_embed)
        embeddings.append(e)
        pred = l2_normalize(model.decode(e, k_decode))
        target = l2_normalize(batch["target"][:, j])
        clip += soft_clip_loss(pred, target, temperature)
        mse += jnp.mean((pred - target) ** 2)
        rec += jnp.mean((x - model.builders[s](e)) ** 2)
    n = len(subjects)
    clip, mse, rec = clip / n, mse / n, rec / n
    if mse_mult is None:
        mse_mult = reference_mse_mult(batch["target"].shape[-1])
    loss = clip + mse_mult * mse + rec_mult * rec
    metrics = {"soft_clip": clip, "mse": mse, "rec": rec}
    if cyc_mult:
        stacked = jnp.stack(embeddings)
        if cycle_target is None:
            a = jax.random.randint(k_pair, (), 0, n)
            b = (a + jax.random.randint(k_shift, (), 1, n)) % n
        else:
            b = subjects.index(cycle_target)
            a = (b + jax.random.randint(k_shift, (), 1, n)) % n
        e_a = stacked[a]

        def through(s):
            return lambda e: model.embedders[s](model.builders[s](e))

        cycled = jax.lax.switch(b, [through(s) for s in subjects], e_a)
        cyc = jnp.mean((e_a - cycled) ** 2)
        loss = loss + cyc_mult * cyc
        metrics["cyc"] = cyc
    return loss, metrics
