"""Per-subject models, the baseline of cross-subject decoding: one independent MindEye2-style
network (linear map -> residual MLP -> retrieval head, :class:`brain.models.mindeye2.MindEye2`)
per subject, sharing nothing. They are held in one module so that one run of the training loop
trains all of them side by side on the same multi-subject batches; their parameters are disjoint,
so each one's gradient (and Adam update) is exactly what training it alone would give.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from brain.losses import mixco
from brain.models.blocks import check_subject_input, split_key
from brain.models.mindeye2 import MindEye2, MindEye2Config, mindeye2_terms


class PerSubjectModels(nnx.Module):
    """``model(voxels, subject)`` runs subject ``subject``'s own network."""

    def __init__(self, config: MindEye2Config, rngs: nnx.Rngs):
        self.config = config
        self.models = nnx.List([MindEye2(dataclasses.replace(config, voxels=(v,)), rngs) for v in config.voxels])

    def __call__(self, voxels: jax.Array, subject: int, key: jax.Array | None = None) -> jax.Array:
        check_subject_input(self.config.voxels, voxels, subject)
        return self.models[subject](voxels, 0, key)


def per_subject_loss(model: PerSubjectModels, batch: dict, key: jax.Array, subjects: tuple[int, ...], *,
                     total_steps: int, mixco_fraction: float = 1 / 3, mse_mult: float = 1.0):
    """Sum over subjects of each network's own MindEye2-style loss on its column of ``batch``
    (:func:`brain.models.mindeye2.mindeye2_terms`; a sum keeps each network's gradient that of
    training it alone)."""
    k_mix, key = jax.random.split(key)
    mixed, perm, betas = mixco(k_mix, batch["voxels"])
    total, clip, mse = 0.0, 0.0, 0.0
    for j, (s, k) in enumerate(zip(subjects, split_key(key, len(subjects)))):
        net, v = model.models[s], model.config.voxels[s]
        use_mixco = net.steps_seen[...] < int(mixco_fraction * total_steps)
        c, m = mindeye2_terms(net, 0, batch["voxels"][:, j, :v], mixed[:, j, :v], perm, betas,
                              batch["target"][:, j], k, use_mixco)
        net.steps_seen[...] = net.steps_seen[...] + 1
        total, clip, mse = total + c + mse_mult * m, clip + c, mse + m
    n = len(subjects)
    return total, {"contrastive": clip / n, "mse": mse / n}
