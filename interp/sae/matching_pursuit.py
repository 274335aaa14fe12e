"""P13 MP-SAE: From Flat to Hierarchical: Extracting Sparse Representations with Matching Pursuit.

A tied sparse autoencoder whose encoder is matching pursuit over a unit-norm dictionary
``D = W_dec [d_sae, d_in]``: ``r_0 = x - b_dec``; each step ``c = ReLU(r D^T)``, ``j* = argmax c``,
``z_j* += c_j*``, ``r <- r - c_j* D_j*``; ``x_hat = z D + b_dec``. With unit atoms each step removes
exactly ``c^2`` from ``||r||^2``. Gradients flow through the selected coefficients and atoms, not
through the argmax. Inference may adapt the sparsity per token: up to ``max_iterations`` steps,
stopping a token when ``||r|| < residual_threshold`` or when its support stops changing (the
authors' rule, SAELens ``matching_pursuit``). Training unrolls the fixed ``k`` steps (the paper's
main experiments, ``overcomplete.MpSAE``) or, with ``adaptive_training=True``, the adaptive rule
(the authors' synthetic-hierarchy code and SAELens), as a masked scan of ``max_iterations`` steps.

Deviations: the dictionary is kept unit norm during training (the authors' synthetic code only
normalises it at initialisation); ``b_dec`` exists (SAELens layout) and is trained — start it at
zero to match the authors' bias-free MP-SAE; no auxiliary dead-latent loss. Folding an input
scale ``s`` keeps ``D`` unit norm, so it divides ``b_dec`` and ``residual_threshold`` by ``s`` and
the codes scale by ``1/s``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from interp.sae.autoencoder import SparseAutoencoder
from interp.sae.checks import check_activations


def _pursuit_step(z, r, dictionary, active):
    scores = jax.nn.relu(r @ dictionary.T)
    index = jnp.argmax(jax.lax.stop_gradient(scores), axis=-1)
    atom = dictionary[index]
    coeff = jax.nn.relu(jnp.sum(r * atom, axis=-1)) * active
    z = z + jax.nn.one_hot(index, dictionary.shape[0], dtype=z.dtype) * coeff[:, None]
    return z, r - coeff[:, None] * atom, coeff


def matching_pursuit(residual: jax.Array, dictionary: jax.Array, n_steps: int):
    """Run ``n_steps`` of matching pursuit on ``residual [B, d_in]`` with unit rows ``dictionary``.

    Returns ``(codes [B, d_sae], final residual [B, d_in], coefficients [n_steps, B],
    squared residual norms [n_steps + 1, B])``.
    """
    if residual.ndim != 2 or dictionary.ndim != 2 or residual.shape[1] != dictionary.shape[1]:
        raise ValueError(f"residual {residual.shape} and dictionary {dictionary.shape}: expected "
                         "[B, d_in] and [d_sae, d_in]")
    if n_steps <= 0:
        raise ValueError(f"n_steps={n_steps!r}: expected a positive integer")
    ones = jnp.ones(residual.shape[0], residual.dtype)

    def body(carry, _):
        z, r = carry
        z, r, coeff = _pursuit_step(z, r, dictionary, ones)
        return (z, r), (coeff, jnp.sum(r * r, axis=-1))

    z0 = jnp.zeros((residual.shape[0], dictionary.shape[0]), residual.dtype)
    (z, r), (coeffs, norms) = jax.lax.scan(body, (z0, residual), None, length=n_steps)
    norms = jnp.concatenate([jnp.sum(residual * residual, -1)[None], norms])
    return z, r, coeffs, norms


def adaptive_matching_pursuit(residual: jax.Array, dictionary: jax.Array, max_iterations: int,
                              residual_threshold: float = 0.0,
                              stop_on_duplicate_support: bool = True,
                              differentiable: bool = False) -> jax.Array:
    """Matching pursuit with per-token stopping: returns codes ``[B, d_sae]``.

    ``differentiable=False`` runs a ``while_loop`` that exits once every token has stopped
    (inference); ``True`` runs all ``max_iterations`` steps in a ``lax.scan`` with the steps of
    stopped tokens masked out (same codes; reverse-mode differentiable, for training).
    """
    if residual.ndim != 2 or dictionary.ndim != 2 or residual.shape[1] != dictionary.shape[1]:
        raise ValueError(f"residual {residual.shape} and dictionary {dictionary.shape}: expected "
                         "[B, d_in] and [d_sae, d_in]")
    if not isinstance(max_iterations, int) or max_iterations <= 0:
        raise ValueError(f"max_iterations={max_iterations!r}: expected a positive integer")
    z0 = jnp.zeros((residual.shape[0], dictionary.shape[0]), residual.dtype)
    done0 = jnp.sqrt(jnp.sum(residual * residual, -1)) < residual_threshold

    def step(z, r, done):
        z_new, r, _ = _pursuit_step(z, r, dictionary, (~done).astype(r.dtype))
        done = done | (jnp.sqrt(jnp.sum(r * r, -1)) < residual_threshold)
        if stop_on_duplicate_support:
            done = done | jnp.all((z_new != 0) == (z != 0), axis=-1)
        return z_new, r, done

    if differentiable:
        (z, _, _), _ = jax.lax.scan(lambda carry, _: (step(*carry), None), (z0, residual, done0),
                                    None, length=max_iterations)
        return z

    def cond(state):
        t, _, _, done = state
        return (t < max_iterations) & ~jnp.all(done)

    def body(state):
        t, z, r, done = state
        return (t + 1, *step(z, r, done))

    _, z, _, _ = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), z0, residual, done0))
    return z


class MatchingPursuitSAE(SparseAutoencoder):
    architecture = "matching_pursuit"
    has_encoder = False
    has_encoder_bias = False

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, k: int,
                 max_iterations: int | None = None, residual_threshold: float = 0.0,
                 stop_on_duplicate_support: bool = False, adaptive_training: bool = False,
                 **kwargs: Any):
        super().__init__(d_in, d_sae, rngs=rngs, **kwargs)
        if not isinstance(k, int) or k <= 0:
            raise ValueError(f"k={k!r}: expected a positive integer")
        self.k = k
        self.max_iterations = k if max_iterations is None else max_iterations
        self.residual_threshold = residual_threshold
        self.stop_on_duplicate_support = stop_on_duplicate_support
        self.adaptive_training = adaptive_training

    def encode(self, x: jax.Array, max_iterations: int | None = None,
               residual_threshold: float | None = None) -> jax.Array:
        """Adaptive-sparsity codes; the arguments override the module's inference settings."""
        x = check_activations(x, self.d_in, "x", min_rank=1)
        shape = x.shape
        r = (x - self.b_dec[...]).reshape(-1, self.d_in)
        z = adaptive_matching_pursuit(
            r, self.W_dec[...], self.max_iterations if max_iterations is None else max_iterations,
            self.residual_threshold if residual_threshold is None else residual_threshold,
            self.stop_on_duplicate_support)
        return z.reshape(*shape[:-1], self.d_sae)

    def train_forward(self, x):
        residual = x - self.b_dec[...]
        if self.adaptive_training:
            z = adaptive_matching_pursuit(residual, self.W_dec[...], self.max_iterations,
                                          self.residual_threshold, self.stop_on_duplicate_support,
                                          differentiable=True)
        else:
            z, _, _, _ = matching_pursuit(residual, self.W_dec[...], self.k)
        return z, self.decode(z), {}

    def fold_input_scale(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"scale={scale!r}: expected a positive number")
        self.b_dec[...] = self.b_dec[...] / scale
        self.residual_threshold = self.residual_threshold / scale

    def saelens_config(self):
        return {"architecture": self.architecture, "residual_threshold": self.residual_threshold,
                "max_iterations": self.max_iterations,
                "stop_on_duplicate_support": self.stop_on_duplicate_support}

    def saelens_weights(self):
        return {"W_dec": self.W_dec[...], "b_dec": self.b_dec[...]}
