"""Trial-level preprocessing shared by the data formats and the simulator.

- :func:`zscore_per_session`: each session's voxels are z-scored with the mean and standard
  deviation of that session's *training* trials only, then applied to every trial of the session
  (test trials included), so no test statistic leaks into training (MindEye's per-session
  normalisation of NSD betas, restricted to train statistics).
- :func:`zscore_with_train_stats`: one mean/std from the training rows applied to all arrays
  (Brain-Diffuser's normalisation of repeat-averaged betas).
- :func:`average_repeats`: mean response per unique stimulus (test sets average the 3 repeats).
"""

from __future__ import annotations

import numpy as np


def _as_2d(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (trials, voxels) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: expected finite values, found NaN or Inf")
    return x


def zscore_per_session(betas, session, is_train, eps: float = 1e-8) -> np.ndarray:
    """Z-score ``betas`` (trials, voxels) per session with that session's train-trial statistics."""
    betas = _as_2d("betas", betas).astype(np.float32)
    session, is_train = np.asarray(session), np.asarray(is_train, bool)
    if session.shape != (len(betas),) or is_train.shape != (len(betas),):
        raise ValueError(
            f"session {session.shape} and is_train {is_train.shape}: expected one entry per trial ({len(betas)})"
        )
    out = np.empty_like(betas)
    for s in np.unique(session):
        rows = session == s
        train_rows = rows & is_train
        if train_rows.sum() < 2:
            raise ValueError(f"session {s}: expected at least 2 training trials to estimate statistics")
        mean = betas[train_rows].mean(0)
        std = betas[train_rows].std(0)
        out[rows] = (betas[rows] - mean) / np.maximum(std, eps)
    return out


def zscore_with_train_stats(train, *others, ddof: int = 0, eps: float = 1e-8) -> tuple[np.ndarray, ...]:
    """Z-score ``train`` and each of ``others`` with the per-voxel mean/std (``ddof``) of ``train``."""
    train = _as_2d("train", train).astype(np.float32)
    mean, std = train.mean(0), np.maximum(train.std(0, ddof=ddof), eps)
    outs = [(train - mean) / std]
    for i, o in enumerate(others):
        o = _as_2d(f"others[{i}]", o)
        if o.shape[1] != train.shape[1]:
            raise ValueError(f"others[{i}] has {o.shape[1]} voxels but train has {train.shape[1]}")
        outs.append((o.astype(np.float32) - mean) / std)
    return tuple(outs)


def average_repeats(responses, stimulus) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``responses`` (trials, ...) per unique ``stimulus`` id: returns (ids, means)."""
    responses, stimulus = np.asarray(responses), np.asarray(stimulus)
    if stimulus.shape != (len(responses),):
        raise ValueError(f"stimulus: expected shape ({len(responses)},), got {stimulus.shape}")
    ids, inverse = np.unique(stimulus, return_inverse=True)
    sums = np.zeros((len(ids),) + responses.shape[1:], np.float64)
    np.add.at(sums, inverse, responses)
    counts = np.bincount(inverse, minlength=len(ids)).reshape((-1,) + (1,) * (responses.ndim - 1))
    return ids, (sums / counts).astype(responses.dtype if responses.dtype.kind == "f" else np.float32)
