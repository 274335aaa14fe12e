"""MindEye2-style shared-subject model (the strongest public NSD baseline; MedARC-AI/MindEyeV2).

Implemented: a per-subject *linear* map ``V_s -> hidden`` into a shared-subject latent (MindEye2's
``RidgeRegression`` layer), a shared residual-MLP backbone (blocks ``Linear + LN + GELU +
Dropout``) with a linear output to the target width, and a retrieval head (MindEye2's
``clip_proj``: ``LN -> GELU -> Linear`` three times) trained contrastively against the frozen
embedding target: BiMixCo (voxel mixup with ``Beta(0.15, 0.15)``, temperature 0.006) for the
first ``mixco_fraction`` (1/3) of training, then SoftCLIP (temperature 0.125 here; MindEye2
anneals it), plus an MSE of the backbone output to the target standing in for the diffusion
prior's objective. The training-step counter that switches the two losses lives in the model as
a non-parameter variable, so it is checkpointed and resumed with it.

New subject: MindEye2 adds a fresh linear map for the new subject and fine-tunes all parameters
on its trials (:func:`full_finetune_trainable`; the other subjects' maps stay fixed);
:func:`new_linear_trainable` freezes everything but the new map ("new-linear-only").

Deviations: no diffusion prior (its MSE stand-in above) and no low-level/blurry branch; one
output token of the target width instead of 256 x 1664 OpenCLIP bigG tokens; sizes configurable
(paper: hidden 4096, 4 blocks); functional dropout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from brain.losses import l2_normalize, mixco, mixco_nce, soft_clip_loss
from brain.models.blocks import (
    LayerNorm,
    ResidualMLP,
    check_subject_input,
    check_voxel_counts,
    split_key,
    subject_trainable,
)
from core.classifier import Dense

FRONT_END = ("linears",)  # the per-subject modules, new for a new subject


@dataclasses.dataclass(frozen=True)
class MindEye2Config:
    voxels: tuple[int, ...]
    out_dim: int
    hidden: int = 4096
    n_blocks: int = 4
    dropout: float = 0.15

    def __post_init__(self):
        check_voxel_counts(self.voxels)


class StepCounter(nnx.Variable):
    """Training steps seen (a non-parameter variable, carried in the training state)."""


class RetrievalHead(nnx.Module):
    def __init__(self, dim: int, out_dim: int, rngs: nnx.Rngs):
        self.norms = nnx.List([LayerNorm(dim, "embed") for _ in range(2)] + [LayerNorm(out_dim, None)])
        self.linears = nnx.List([Dense(dim, dim, ("embed", "mlp"), rngs), Dense(dim, out_dim, ("mlp", None), rngs),
                                 Dense(out_dim, out_dim, (None, None), rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.gelu(self.norms[0](x), approximate=False)
        x = self.linears[0](x)
        x = self.linears[1](jax.nn.gelu(self.norms[1](x), approximate=False))
        return self.linears[2](jax.nn.gelu(self.norms[2](x), approximate=False))


class MindEye2(nnx.Module):
    """``model(voxels, subject)`` -> retrieval embedding; :meth:`backbone` -> (latent, output)."""

    def __init__(self, config: MindEye2Config, rngs: nnx.Rngs):
        self.config = config
        self.linears = nnx.List([Dense(v, config.hidden, ("voxels", "embed"), rngs) for v in config.voxels])
        self.blocks = ResidualMLP(config.hidden, config.n_blocks, config.dropout, rngs)
        self.output = Dense(config.hidden, config.out_dim, ("embed", None), rngs)
        self.retrieval = RetrievalHead(config.hidden, config.out_dim, rngs)
        self.steps_seen = StepCounter(jnp.int32(0))

    def shared_latent(self, voxels: jax.Array, subject: int) -> jax.Array:
        check_subject_input(self.config.voxels, voxels, subject)
        return self.linears[subject](voxels)

    def backbone(self, voxels, subject, key=None) -> tuple[jax.Array, jax.Array]:
        h = self.blocks(self.shared_latent(voxels, subject), key)
        return h, self.output(h)

    def __call__(self, voxels: jax.Array, subject: int, key: jax.Array | None = None) -> jax.Array:
        return self.retrieval(self.backbone(voxels, subject, key)[0])


def new_linear_trainable(target: int):
    """``params -> bool tree``: True only for ``linears[target]``."""
    return subject_trainable(target, FRONT_END, shared=False)


def full_finetune_trainable(target: int):
    """``params -> bool tree``: True for ``linears[target]`` and every shared parameter."""
    return subject_trainable(target, FRONT_END, shared=True)


def mindeye2_terms(model: MindEye2, subject: int, voxels, mixed, perm, betas, target, key, use_mixco,
                   *, mixco_temperature: float = 0.006, softclip_temperature: float = 0.125):
    """One subject's ``(contrastive, mse)``: BiMixCo on the ``mixed`` voxels when ``use_mixco``
    (a traced bool), else SoftCLIP, on the L2-normalised retrieval embedding against the
    L2-normalised target; and the MSE of the normalised backbone output to it."""
    n = voxels.shape[0]
    target = l2_normalize(target)
    h, out = model.backbone(jnp.concatenate([voxels, mixed]), subject, key)  # one pass for both
    embedding = model.retrieval(h)
    mix_loss = mixco_nce(l2_normalize(embedding[n:]), target, perm, betas,
                         temperature=mixco_temperature, bidirectional=True)
    soft_loss = soft_clip_loss(l2_normalize(embedding[:n]), target, softclip_temperature)
    out = out[:n]
    return jnp.where(use_mixco, mix_loss, soft_loss), jnp.mean((l2_normalize(out) - target) ** 2)


def mindeye2_loss(model: MindEye2, batch: dict, key: jax.Array, subjects: tuple[int, ...], *,
                  total_steps: int, mixco_fraction: float = 1 / 3, mse_mult: float = 1.0):
    """Contrastive retrieval loss (BiMixCo for the first ``mixco_fraction`` of ``total_steps``,
    then SoftCLIP) + ``mse_mult`` MSE of the backbone output, averaged over the subject columns
    of ``batch`` (layout of :func:`brain.models.mindbridge.mindbridge_loss`). One mixup draw
    (permutation and Beta weights) serves all columns."""
    use_mixco = model.steps_seen[...] < int(mixco_fraction * total_steps)
    k_mix, key = jax.random.split(key)
    mixed, perm, betas = mixco(k_mix, batch["voxels"])
    clip, mse = 0.0, 0.0
    for j, (s, k) in enumerate(zip(subjects, split_key(key, len(subjects)))):
        v = model.config.voxels[s]
        c, m = mindeye2_terms(model, s, batch["voxels"][:, j, :v], mixed[:, j, :v], perm, betas,
                              batch["target"][:, j], k, use_mixco)
        clip, mse = clip + c, mse + m
    n = len(subjects)
    model.steps_seen[...] = model.steps_seen[...] + 1
    return clip / n + mse_mult * mse / n, {"contrastive": clip / n, "mse": mse / n,
                                            "mixco": use_mixco.astype(jnp.float32)}
