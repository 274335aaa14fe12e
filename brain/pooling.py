"""P09 MindBridge: adaptive pooling of a subject's voxels to a fixed length.

MindBridge maps every subject's ``V_s`` nsdgeneral voxels (in their spatially ordered index) to
8192 values with PyTorch's ``AdaptiveMaxPool1d`` (``avg`` and linear ``resize`` are its options).
Output bin ``i`` covers input indices ``[floor(i * V / P), ceil((i + 1) * V / P))``, exactly as
PyTorch's adaptive pooling; ``resize`` is ``F.interpolate(mode='linear', align_corners=False)``.
The windows are built once per ``(V, P)`` as static index tables, so the pooling jits and vmaps.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from brain.input_checks import check_positive_int

PoolKind = Literal["max", "avg", "resize"]


def adaptive_windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch adaptive-pooling windows: (start, stop) index arrays of length ``n_out``."""
    i = np.arange(n_out)
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def adaptive_pool(voxels: jax.Array, n_out: int, kind: PoolKind = "max") -> jax.Array:
    """Pool the last axis of ``voxels`` (..., V) to (..., n_out)."""
    n_out = check_positive_int("n_out", n_out)
    voxels = jnp.asarray(voxels)
    if voxels.ndim < 1 or voxels.shape[-1] < 1:
        raise ValueError(f"voxels: expected a non-empty last (voxel) axis, got shape {voxels.shape}")
    n_in = voxels.shape[-1]
    if kind == "resize":
        scale = n_in / n_out
        pos = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = jnp.asarray(pos - lo, voxels.dtype if jnp.issubdtype(voxels.dtype, jnp.floating) else jnp.float32)
        return voxels[..., lo] * (1 - w) + voxels[..., hi] * w
    if kind not in ("max", "avg"):
        raise ValueError(f"kind={kind!r}: expected 'max', 'avg' or 'resize'")
    start, stop = adaptive_windows(n_in, n_out)
    width = int((stop - start).max())
    idx = np.minimum(start[:, None] + np.arange(width)[None, :], stop[:, None] - 1)  # repeat last index
    windows = voxels[..., idx]  # (..., n_out, width)
    if kind == "max":
        return windows.max(-1)
    valid = jnp.asarray(start[:, None] + np.arange(width)[None, :] < stop[:, None])
    return jnp.where(valid, windows, 0).sum(-1) / jnp.asarray(stop - start, windows.dtype)
