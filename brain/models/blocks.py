"""Layers shared by the cross-subject decoders: layer norm, functional dropout, the residual MLP
(MindBridge's translator, MindEye2's backbone) and the bottleneck adapter (MindBridge's
``Adapter_Layer``). Every parameter carries logical axis names; dense layers are
:class:`core.classifier.Dense`.

Dropout is functional: modules take ``key`` (``None`` = deterministic evaluation), so training
needs no RNG state and the same key gives the same mask on any mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from core.classifier import Dense


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout with drop probability ``rate``; identity when ``key`` is None."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def split_key(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


class LayerNorm(nnx.Module):
    """Layer norm over the last axis (eps 1e-5, as ``torch.nn.LayerNorm``)."""

    def __init__(self, dim: int, name: str):
        self.scale = nnx.Param(jnp.ones((dim,)), out_sharding=(name,))
        self.bias = nnx.Param(jnp.zeros((dim,)), out_sharding=(name,))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * self.scale[...] + self.bias[...]


class ResidualMLP(nnx.Module):
    """``n_blocks`` of ``x + Dropout(GELU(LN(Linear(x))))`` (MindBridge ``ResMLP``, MindEye2 backbone)."""

    def __init__(self, dim: int, n_blocks: int, rate: float, rngs: nnx.Rngs):
        self.rate = rate
        self.linears = nnx.List([Dense(dim, dim, ("embed", "mlp"), rngs) for _ in range(n_blocks)])
        self.norms = nnx.List([LayerNorm(dim, "mlp") for _ in range(n_blocks)])

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        for linear, norm, k in zip(self.linears, self.norms, split_key(key, len(self.linears))):
            x = x + dropout(jax.nn.gelu(norm(linear(x)), approximate=False), self.rate, k)
        return x


class BottleneckAdapter(nnx.Module):
    """``x + up(ReLU(down(x)))`` with ``up`` zero-initialised (MindBridge's LoRA-style init), so
    a fresh adapter is the identity."""

    def __init__(self, dim: int, bottleneck: int, name: str, rngs: nnx.Rngs):
        self.down = Dense(dim, bottleneck, (name, "mlp"), rngs)
        self.up = Dense(bottleneck, dim, ("mlp", name), rngs)
        self.up.w[...] = jnp.zeros_like(self.up.w[...])

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.up(jax.nn.relu(self.down(x)))


def check_voxel_counts(voxels: tuple[int, ...]) -> None:
    """A model config's ``voxels``: one positive voxel count per subject."""
    if len(voxels) < 1 or any(v < 1 for v in voxels):
        raise ValueError(f"voxels={voxels}: expected one positive voxel count per subject")


def check_subject_input(voxel_counts: tuple[int, ...], voxels: jax.Array, subject) -> int:
    """The subject index as an int, after checking it is known and ``voxels`` is ``(batch,
    voxel_counts[subject])``; raises a clear ``ValueError`` otherwise."""
    if isinstance(subject, bool) or not isinstance(subject, int) or not 0 <= subject < len(voxel_counts):
        raise ValueError(f"subject={subject!r}: unknown subject, expected an int in [0, {len(voxel_counts)})")
    if voxels.ndim != 2 or voxels.shape[1] != voxel_counts[subject]:
        raise ValueError(
            f"voxels: subject {subject} expects shape (batch, {voxel_counts[subject]}), got {tuple(voxels.shape)}"
        )
    return subject


def reset_subject_modules(model: nnx.Module, subject: int, names: tuple[str, ...], rngs: nnx.Rngs) -> None:
    """Re-initialise, in place, ``getattr(model, name)[subject]`` for each name, from a freshly
    constructed ``type(model)(model.config, rngs)``; every other parameter is left untouched."""
    fresh = type(model)(model.config, rngs)
    for name in names:
        nnx.update(getattr(model, name)[subject], nnx.state(getattr(fresh, name)[subject]))


def subject_trainable(target: int, front_end: tuple[str, ...], *, shared: bool):
    """``params -> bool tree``: True for ``target``'s per-subject modules (``front_end``), the
    other subjects' modules False (they stay bitwise unchanged; plain AdamW would still decay
    them), every shared parameter ``shared``."""

    def label(path, _):
        keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
        if keys and keys[0] in front_end:
            return keys[1] == target
        return shared

    return lambda params: jax.tree_util.tree_map_with_path(label, params)
