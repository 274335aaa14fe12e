"""Closed-form ridge regression in JAX (the linear stage of P30 Brain-Diffuser and P37 Brain
Captioning, MindEye2's new-subject ridge, and the simulator's decoding oracle).

Minimises ``||Y - X W - b||^2 + alpha ||W||^2`` per target column, as scikit-learn's ``Ridge``
(the intercept is not penalised: X and Y are centred when ``fit_intercept``). Solvers:

- ``primal``: ``W = (Xc^T Xc + alpha I)^-1 Xc^T Yc`` (Cholesky, features x features),
- ``dual``: ``W = Xc^T (Xc Xc^T + alpha I)^-1 Yc`` (Cholesky, samples x samples; for voxels >>
  trials, e.g. 15724 voxels and 750 trials),
- ``svd``: ``W = V diag(s / (s^2 + alpha_t)) U^T Yc``, which also serves one alpha per target.

:func:`fit_ridge_cv` selects alpha from a grid by k-fold cross-validation (contiguous folds, as
scikit-learn's ``KFold`` without shuffling) with one SVD per fold for the whole grid; the score is
R^2 (scikit-learn's default scorer: ``RidgeCV(cv=KFold(k))`` picks the alpha with the best mean
over folds of the target-averaged R^2) or negative MSE, chosen once for all targets (``shared``)
or per target. Targets can be sharded over a device mesh axis: each target column is independent,
so sharding changes layout, never the result.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from brain.input_checks import as_matrix, check_pair, check_positive_int

Solver = Literal["auto", "primal", "dual", "svd"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RidgeModel:
    """A fitted ridge map: ``predict(X) = X @ coef + intercept``; ``alpha`` per target."""

    coef: jax.Array  # (features, targets)
    intercept: jax.Array  # (targets,)
    alpha: jax.Array  # (targets,)

    def predict(self, x) -> jax.Array:
        x = as_matrix("x", x)
        if x.shape[1] != self.coef.shape[0]:
            raise ValueError(f"x has {x.shape[1]} features but the model was fitted on {self.coef.shape[0]}")
        return x @ self.coef + self.intercept


def _as_targets(y) -> jax.Array:
    if not hasattr(y, "shape"):
        raise TypeError(f"y: expected an array, got {type(y).__name__}")
    y = jnp.asarray(y)
    return as_matrix("y", y[:, None] if y.ndim == 1 else y)


def _alpha_vector(alpha, n_targets: int, dtype) -> jax.Array:
    a = jnp.asarray(alpha, dtype)
    if a.ndim == 0:
        a = jnp.full((n_targets,), a)
    if a.shape != (n_targets,):
        raise ValueError(f"alpha: expected a scalar or shape ({n_targets},) (one per target), got {a.shape}")
    if bool(jnp.any(~jnp.isfinite(a) | (a <= 0))):
        raise ValueError("alpha: expected finite positive values")
    return a


def _center(x, y, fit_intercept: bool):
    if not fit_intercept:
        return x, y, jnp.zeros(x.shape[1], x.dtype), jnp.zeros(y.shape[1], y.dtype)
    xm, ym = x.mean(0), y.mean(0)
    return x - xm, y - ym, xm, ym


def _solve_primal(xc, yc, alpha):
    gram = xc.T @ xc + alpha * jnp.eye(xc.shape[1], dtype=xc.dtype)
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), xc.T @ yc)


def _solve_dual(xc, yc, alpha):
    kernel = xc @ xc.T + alpha * jnp.eye(xc.shape[0], dtype=xc.dtype)
    return xc.T @ jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(kernel), yc)


def _solve_svd(xc, yc, alphas):
    u, s, vt = jnp.linalg.svd(xc, full_matrices=False)
    shrink = s[:, None] / (s[:, None] ** 2 + alphas[None, :])
    return vt.T @ (shrink * (u.T @ yc))


@functools.partial(jax.jit, static_argnames=("solver", "fit_intercept"))
def _fit(x, y, alphas, solver, fit_intercept):
    xc, yc, xm, ym = _center(x, y, fit_intercept)
    if solver == "primal":
        coef = _solve_primal(xc, yc, alphas[0])
    elif solver == "dual":
        coef = _solve_dual(xc, yc, alphas[0])
    else:
        coef = _solve_svd(xc, yc, alphas)
    return RidgeModel(coef, ym - xm @ coef, alphas)


def _resolve_solver(solver: Solver, x, per_target_alpha: bool) -> str:
    if solver not in ("auto", "primal", "dual", "svd"):
        raise ValueError(f"solver={solver!r}: expected 'auto', 'primal', 'dual' or 'svd'")
    if per_target_alpha and solver in ("primal", "dual"):
        raise ValueError(f"solver={solver!r} needs one shared alpha; use 'svd' for one alpha per target")
    if solver == "auto":
        return "svd" if per_target_alpha else ("primal" if x.shape[0] >= x.shape[1] else "dual")
    return solver


def _shard_targets(y, mesh: Mesh | None, axis: str):
    """Pad the target axis to a multiple of the mesh axis and place it sharded; returns (y, T)."""
    n_targets = y.shape[1]
    if mesh is None:
        return y, n_targets
    if axis not in mesh.shape:
        raise ValueError(f"target_axis={axis!r} is not an axis of the mesh {dict(mesh.shape)}")
    pad = -n_targets % mesh.shape[axis]
    y = jnp.pad(y, ((0, 0), (0, pad)))
    return jax.device_put(y, NamedSharding(mesh, PartitionSpec(None, axis))), n_targets


def fit_ridge(
    x,
    y,
    alpha=1.0,
    *,
    fit_intercept: bool = True,
    solver: Solver = "auto",
    mesh: Mesh | None = None,
    target_axis: str = "tensor",
) -> RidgeModel:
    """Fit ridge from ``x`` (samples, features) to ``y`` (samples, targets) or (samples,).

    ``alpha`` is a scalar or one value per target. ``solver='auto'`` picks primal when samples >=
    features, dual otherwise, and SVD for per-target alphas. With ``mesh``, targets are sharded
    over ``target_axis``.
    """
    x, y = as_matrix("x", x), _as_targets(y)
    check_pair("x", x, "y", y)
    if x.shape[0] < 2 and fit_intercept:
        raise ValueError("x: expected at least 2 samples to fit an intercept")
    y = y.astype(x.dtype)
    alphas = _alpha_vector(alpha, y.shape[1], x.dtype)
    per_target = bool(alphas.size > 1 and jnp.any(alphas != alphas[0]))
    solver = _resolve_solver(solver, x, per_target)
    y, n_targets = _shard_targets(y, mesh, target_axis)
    alphas = jnp.pad(alphas, (0, y.shape[1] - n_targets), constant_values=1.0)
    model = _fit(x, y, alphas, solver, fit_intercept)
    if y.shape[1] == n_targets:
        return model
    return RidgeModel(model.coef[:, :n_targets], model.intercept[:n_targets], model.alpha[:n_targets])


def kfold_slices(n_samples: int, n_folds: int) -> list[slice]:
    """Contiguous folds as scikit-learn's ``KFold(n_folds)``: the first ``n % k`` get one more."""
    n_folds = check_positive_int("n_folds", n_folds)
    if n_folds < 2 or n_folds > n_samples:
        raise ValueError(f"n_folds={n_folds}: expected 2 <= n_folds <= n_samples ({n_samples})")
    sizes = np.full(n_folds, n_samples // n_folds)
    sizes[: n_samples % n_folds] += 1
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _r2(y, pred):
    sse = ((y - pred) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    # scikit-learn's force_finite convention for constant targets
    return jnp.where(sst > 0, 1.0 - sse / jnp.where(sst > 0, sst, 1.0), jnp.where(sse == 0, 1.0, 0.0))


@functools.partial(jax.jit, static_argnames=("folds", "fit_intercept", "scoring"))
def _cv_scores(x, y, alphas, folds, fit_intercept, scoring):
    """Mean over folds of the per-target validation score for each alpha: (alphas, targets)."""
    n = x.shape[0]
    total = jnp.zeros((alphas.shape[0], y.shape[1]), x.dtype)
    for start, stop in folds:
        train = np.r_[0:start, stop:n]
        xc, yc, xm, ym = _center(x[train], y[train], fit_intercept)
        u, s, vt = jnp.linalg.svd(xc, full_matrices=False)
        uty = u.T @ yc
        x_val_v = (x[start:stop] - xm) @ vt.T
        y_val = y[start:stop]

        def score(alpha):
            pred = (x_val_v * (s / (s**2 + alpha))) @ uty + ym
            if scoring == "r2":
                return _r2(y_val, pred)
            return -((y_val - pred) ** 2).mean(0)

        total = total + jax.lax.map(score, alphas)
    return total / len(folds)


@dataclasses.dataclass(frozen=True)
class RidgeCVResult:
    """The refitted model, the chosen alpha per target, and the CV scores (alphas, targets)."""

    model: RidgeModel
    alpha: jax.Array
    scores: jax.Array


def fit_ridge_cv(
    x,
    y,
    alphas: Sequence[float],
    *,
    n_folds: int = 5,
    per_target: bool = True,
    scoring: Literal["r2", "neg_mse"] = "r2",
    fit_intercept: bool = True,
    mesh: Mesh | None = None,
    target_axis: str = "tensor",
) -> RidgeCVResult:
    """Choose alpha from ``alphas`` by k-fold CV (per target or shared), then refit on all data.

    With ``per_target=False`` the target-averaged score picks one alpha (scikit-learn's
    ``RidgeCV(alphas, cv=KFold(n_folds))``); ties go to the first alpha in the grid.
    """
    x, y = as_matrix("x", x), _as_targets(y)
    check_pair("x", x, "y", y)
    y = y.astype(x.dtype)
    if scoring not in ("r2", "neg_mse"):
        raise ValueError(f"scoring={scoring!r}: expected 'r2' or 'neg_mse'")
    grid = jnp.asarray(np.asarray(alphas, dtype=np.float64), x.dtype).ravel()
    if grid.size == 0 or bool(jnp.any(~jnp.isfinite(grid) | (grid <= 0))):
        raise ValueError(f"alphas: expected a non-empty grid of finite positive values, got {alphas!r}")
    folds = tuple((s.start, s.stop) for s in kfold_slices(x.shape[0], n_folds))
    ys, n_targets = _shard_targets(y, mesh, target_axis)
    scores = _cv_scores(x, ys, grid, folds, fit_intercept, scoring)[:, :n_targets]
    if per_target:
        chosen = grid[jnp.argmax(scores, axis=0)]
    else:
        chosen = jnp.full((n_targets,), grid[jnp.argmax(scores.mean(axis=1))])
    solver = "svd" if per_target else "auto"
    model = fit_ridge(x, y, chosen, fit_intercept=fit_intercept, solver=solver, mesh=mesh, target_axis=target_axis)
    return RidgeCVResult(model, chosen, scores)
