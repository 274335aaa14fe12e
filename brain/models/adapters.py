"""P02 See Through Their Minds: Learning Transferable Neural Representation from Cross-Subject fMRI.

Implemented: shallow subject-specific adapters (``Linear(V_s, unified) -> LayerNorm -> GELU``)
map each subject's voxels into one unified representation; a shared deeper decoder (residual
MLP + linear head) maps it to the frozen-embedding target. Loss: a global contrastive term
(symmetric InfoNCE with a learnable temperature, CLIP-style, initial 0.07) plus a fine-grained
regression term (MSE of the L2-normalised prediction, weight ``mse_mult``). New subjects get a
new adapter only (:func:`new_adapter_trainable` freezes the shared decoder and the temperature).

Deviations: the simulator has one CLIP stand-in target, so the paper's vision-language pair of
contrastive losses (image tokens and text) becomes one contrastive + one regression term on it;
the pixel-reconstruction pipeline is not built; sizes configurable; functional dropout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from brain.losses import LearnableTemperature, l2_normalize, symmetric_infonce
from brain.models.blocks import (
    LayerNorm,
    ResidualMLP,
    check_subject_input,
    check_voxel_counts,
    dropout,
    split_key,
    subject_trainable,
)
from core.classifier import Dense

FRONT_END = ("adapters",)  # the per-subject modules, new for a new subject


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    voxels: tuple[int, ...]
    out_dim: int
    unified: int = 1024
    n_blocks: int = 4
    dropout: float = 0.15
    adapter_dropout: float = 0.5
    temperature: float = 0.07

    def __post_init__(self):
        check_voxel_counts(self.voxels)


class SubjectAdapter(nnx.Module):
    def __init__(self, n_voxels: int, unified: int, rate: float, rngs: nnx.Rngs):
        self.linear = Dense(n_voxels, unified, ("voxels", "embed"), rngs)
        self.norm = LayerNorm(unified, "embed")
        self.rate = rate

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return dropout(jax.nn.gelu(self.norm(self.linear(x)), approximate=False), self.rate, key)


class AdapterDecoder(nnx.Module):
    """Subject adapters + shared decoder: ``model(voxels, subject)`` predicts the target."""

    def __init__(self, config: AdapterConfig, rngs: nnx.Rngs):
        self.config = config
        self.adapters = nnx.List([SubjectAdapter(v, config.unified, config.adapter_dropout, rngs)
                                  for v in config.voxels])
        self.decoder = ResidualMLP(config.unified, config.n_blocks, config.dropout, rngs)
        self.head = Dense(config.unified, config.out_dim, ("embed", None), rngs)
        self.temperature = LearnableTemperature(config.temperature)

    def unified(self, voxels: jax.Array, subject: int, key: jax.Array | None = None) -> jax.Array:
        check_subject_input(self.config.voxels, voxels, subject)
        return self.adapters[subject](voxels, key)

    def __call__(self, voxels: jax.Array, subject: int, key: jax.Array | None = None) -> jax.Array:
        k_adapter, k_decoder = split_key(key, 2)
        return self.head(self.decoder(self.unified(voxels, subject, k_adapter), k_decoder))


def new_adapter_trainable(target: int):
    """``params -> bool tree``: True only for ``adapters[target]``."""
    return subject_trainable(target, FRONT_END, shared=False)


def adapter_loss(model: AdapterDecoder, batch: dict, key: jax.Array, subjects: tuple[int, ...], *,
                 mse_mult: float = 10.0):
    """Symmetric InfoNCE (learnable temperature) + ``mse_mult`` MSE on normalised predictions,
    averaged over the subject columns of ``batch`` (see :func:`brain.models.mindbridge.mindbridge_loss`)."""
    nce, mse = 0.0, 0.0
    for j, (s, k) in enumerate(zip(subjects, split_key(key, len(subjects)))):
        pred = model(batch["voxels"][:, j, : model.config.voxels[s]], s, k)
        target = batch["target"][:, j]
        nce += symmetric_infonce(pred, target, model.temperature())
        mse += jnp.mean((l2_normalize(pred) - l2_normalize(target)) ** 2)
    n = len(subjects)
    return nce / n + mse_mult * mse / n, {"infonce": nce / n, "mse": mse / n,
                                           "scale": model.temperature()}
