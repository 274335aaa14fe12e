"""P34 Decomposing MLP Activations into Interpretable Features via Semi-Nonnegative Matrix
Factorization.

``A [d_mlp, n_tokens] ~ F G^T`` with ``F`` mixed sign (features in neuron space) and ``G >= 0``
(per-token feature coefficients). Initialisation of ``G``: ``svd`` (``max(sqrt(S) V^T, eps)``),
``kmeans`` (one-hot k-means cluster of each token, floored at ``eps``) or ``random``
(``U(0, 1)`` floored at ``eps``). Each iteration, as in the official code:
``F <- A G (G^T G + 1e-6 I)^-1``; winner-take-all sparsity keeps the largest ``sparsity``
fraction of ``|F|`` per column; ``G``'s columns are normalised with the scale pushed into ``F``;
``G <- G * sqrt(([A^T F]+ + G [F^T F]-) / ([A^T F]- + G [F^T F]+ + eps))`` (Ding, Li and
Jordan). It runs up to ``max_iter`` iterations, stops after ``patience`` without lowering the
loss ``||A - F G^T||_F^2`` by more than ``tol``, and returns the best iterate (one compiled
``lax.while_loop``); ``error`` is that iterate's ``||A - F G^T||_F / ||A||_F``.

Steering: add ``alpha F_k / ||F_k||`` at the MLP output; :func:`kl_steering_scale` bisects
``alpha`` so that the mean ``KL(p_clean || p_steered)`` over positions hits a target, for any
``logits_fn(alpha)``. Deviation: k-means uses a fixed number of Lloyd iterations from a random
choice of tokens (15 Lloyd iterations as in the official code, but an empty cluster keeps its
old centre instead of being re-sampled).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from interp.sae.checks import check_activations

INITS = ("svd", "kmeans", "random")


class SNMFResult(NamedTuple):
    F: jax.Array  # [d, rank], mixed sign
    G: jax.Array  # [n, rank], non-negative
    error: jax.Array  # relative Frobenius error of the returned iterate
    n_iter: jax.Array


def _kmeans_labels(points: jax.Array, k: int, key: jax.Array, n_iter: int = 15) -> jax.Array:
    centres = points[jax.random.choice(key, points.shape[0], (k,), replace=False)]

    def body(_, centres):
        labels = jnp.argmin(jnp.sum((points[:, None] - centres[None]) ** 2, -1), axis=-1)
        one_hot = jax.nn.one_hot(labels, k, dtype=points.dtype)
        counts = one_hot.sum(0)[:, None]
        return jnp.where(counts > 0, one_hot.T @ points / jnp.maximum(counts, 1), centres)

    centres = jax.lax.fori_loop(0, n_iter, body, centres)
    return jnp.argmin(jnp.sum((points[:, None] - centres[None]) ** 2, -1), axis=-1)


def _initial_g(A, rank, init, key, eps):
    if init == "svd":
        _, s, vt = jnp.linalg.svd(A, full_matrices=False)
        return jnp.maximum(jnp.sqrt(s[:rank])[:, None] * vt[:rank], eps).T
    if init == "kmeans":
        return jnp.maximum(jax.nn.one_hot(_kmeans_labels(A.T, rank, key), rank, dtype=A.dtype),
                           eps)
    return jnp.maximum(jax.random.uniform(key, (A.shape[1], rank), A.dtype), eps)


def _update_f(A, G, keep):
    gram = G.T @ G + 1e-6 * jnp.eye(G.shape[1], dtype=G.dtype)
    F = jnp.linalg.solve(gram, (A @ G).T).T
    if keep < F.shape[0]:
        kth = jax.lax.top_k(jnp.abs(F).T, keep)[0][:, -1]
        F = jnp.where(jnp.abs(F) >= kth[None, :], F, 0.0)
    return F


def _update_g(A, F, G, eps):
    atf, ftf = A.T @ F, F.T @ F
    pos, neg = (lambda m: jnp.maximum(m, 0.0)), (lambda m: jnp.maximum(-m, 0.0))
    numerator = pos(atf) + G @ neg(ftf)
    denominator = neg(atf) + G @ pos(ftf)
    return G * jnp.sqrt(numerator / (denominator + eps))


def semi_nmf(A: jax.Array, rank: int, *, init: str = "svd", sparsity: float = 0.01,
             max_iter: int = 500, patience: int = 100, tol: float = 1e-4,
             key: jax.Array | None = None, eps: float = 1e-6) -> SNMFResult:
    """Factor ``A [d, n] ~ F G^T`` (``G >= 0``, sparse ``F``); see the module docstring."""
    A = check_activations(A, name="A")
    if A.ndim != 2:
        raise ValueError(f"A: expected a matrix [d_mlp, n_tokens], got shape {A.shape}")
    if not isinstance(rank, int) or not 0 < rank <= min(A.shape):
        raise ValueError(f"rank={rank!r}: expected an integer in 1..{min(A.shape)}")
    if init not in INITS:
        raise ValueError(f"init={init!r}: expected one of {INITS}")
    if not 0 < sparsity <= 1:
        raise ValueError(f"sparsity={sparsity!r}: expected 0 < sparsity <= 1")
    if max_iter <= 0 or patience <= 0:
        raise ValueError(f"max_iter={max_iter!r}, patience={patience!r}: expected positive")
    key = jax.random.key(0) if key is None else key
    keep = max(1, math.ceil(sparsity * A.shape[0]))

    def iterate(G):
        F = _update_f(A, G, keep)
        scale = jnp.maximum(jnp.linalg.norm(G, axis=0), 1e-8)
        G, F = G / scale, F * scale
        G = _update_g(A, F, G, eps)
        return F, G, jnp.sum((A - F @ G.T) ** 2)

    def cond(state):
        t, wait = state[0], state[1]
        return (t < max_iter) & (wait < patience)

    def body(state):
        t, wait, G, best_f, best_g, best_loss = state
        F, G, loss = iterate(G)
        better = loss < best_loss - tol
        best_f, best_g = jnp.where(better, F, best_f), jnp.where(better, G, best_g)
        return (t + 1, jnp.where(better, 0, wait + 1), G, best_f, best_g,
                jnp.where(better, loss, best_loss))

    G0 = _initial_g(A, rank, init, key, eps)
    F0 = jnp.zeros((A.shape[0], rank), A.dtype)
    state = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), G0, F0, G0,
             jnp.asarray(jnp.inf, A.dtype))
    t, _, _, F, G, loss = jax.lax.while_loop(cond, body, state)
    return SNMFResult(F, G, jnp.sqrt(loss) / jnp.linalg.norm(A), t)


def steering_direction(F: jax.Array, index: int) -> jax.Array:
    """Unit steering vector ``F[:, index] / ||F[:, index]||`` (added at the MLP output)."""
    if F.ndim != 2 or not 0 <= index < F.shape[1]:
        raise ValueError(f"index={index!r}: expected 0 <= index < {F.shape[-1]} for F {F.shape}")
    column = F[:, index]
    return column / jnp.maximum(jnp.linalg.norm(column), 1e-30)


def _mean_kl(p_logits, q_logits):
    p_log = jax.nn.log_softmax(p_logits, -1)
    q_log = jax.nn.log_softmax(q_logits, -1)
    return jnp.mean(jnp.sum(jnp.exp(p_log) * (p_log - q_log), -1))


def kl_steering_scale(logits_fn: Callable[[jax.Array], jax.Array], target_kl: float,
                      alpha_max: float, n_iter: int = 40) -> tuple[jax.Array, jax.Array]:
    """Bisect ``alpha`` in ``[0, alpha_max]`` so that ``KL(p(0) || p(alpha)) = target_kl``.

    ``logits_fn(alpha) -> logits [..., vocab]`` runs the model steered by ``alpha``; the KL is
    averaged over positions and assumed to grow with ``alpha``. Returns ``(alpha, kl)``; if even
    ``alpha_max`` stays below the target, ``alpha_max`` and its KL are returned.
    """
    if not target_kl > 0 or not alpha_max > 0:
        raise ValueError(f"target_kl={target_kl!r}, alpha_max={alpha_max!r}: expected positive")
    clean = logits_fn(jnp.zeros(()))

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = _mean_kl(clean, logits_fn(mid)) > target_kl
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, n_iter, body, (jnp.zeros(()), jnp.asarray(alpha_max, float)))
    alpha = 0.5 * (lo + hi)
    return alpha, _mean_kl(clean, logits_fn(alpha))
