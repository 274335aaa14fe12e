"""JumpReLU sparse autoencoder (Rajamanoharan et al. 2024; SAELens "jumprelu").

``z = pre * H(pre - theta)`` with a learned per-latent ``theta = exp(log_threshold)``; the loss is
MSE + ``lambda * sum_i H(pre_i - theta_i)`` (L0). The Heaviside steps get straight-through
gradients for ``theta`` with the rectangle kernel of width ``bandwidth``:
``d JumpReLU / d theta = -(theta / eps) rect((pre - theta) / eps)``, ``d H / d theta =
-(1 / eps) rect((pre - theta) / eps)``; ``pre`` gets the plain gradient ``H`` through JumpReLU
and none through the L0 step (as in the paper and SAELens). Saved with ``threshold``.

Defaults: ``threshold_init = 0.01``, ``bandwidth = 0.05`` (SAELens uses 0.001 for both, tuned for
unnormalised LLM activations). Not implemented: the tanh sparsity-loss variant.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from interp.sae.autoencoder import SparseAutoencoder
from interp.sae.relu import warmup_coefficient


def _rectangle(u: jax.Array) -> jax.Array:
    return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


def _sum_to(g: jax.Array, shape) -> jax.Array:
    return jnp.sum(g.reshape(-1, *shape), axis=0)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(x: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """``x * (x > threshold)`` with the rectangle straight-through gradient for ``threshold``."""
    return x * (x > threshold)


def _jumprelu_fwd(x, threshold, bandwidth):
    return jumprelu(x, threshold, bandwidth), (x, threshold)


def _jumprelu_bwd(bandwidth, res, g):
    x, threshold = res
    dx = (x > threshold) * g
    dt = -(threshold / bandwidth) * _rectangle((x - threshold) / bandwidth) * g
    return dx, _sum_to(dt, threshold.shape)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def heaviside_step(x: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """``(x > threshold)`` with the rectangle straight-through gradient for ``threshold``."""
    return (x > threshold).astype(x.dtype)


def _step_fwd(x, threshold, bandwidth):
    return heaviside_step(x, threshold, bandwidth), (x, threshold)


def _step_bwd(bandwidth, res, g):
    x, threshold = res
    dt = -(1.0 / bandwidth) * _rectangle((x - threshold) / bandwidth) * g
    return jnp.zeros_like(x), _sum_to(dt, threshold.shape)


heaviside_step.defvjp(_step_fwd, _step_bwd)


class JumpReLUSAE(SparseAutoencoder):
    architecture = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, l0_coefficient: float = 1.0,
                 threshold_init: float = 0.01, bandwidth: float = 0.05,
                 l0_warmup_steps: int = 0, **kwargs: Any):
        super().__init__(d_in, d_sae, rngs=rngs, **kwargs)
        if not threshold_init > 0 or not bandwidth > 0:
            raise ValueError(f"threshold_init={threshold_init!r}, bandwidth={bandwidth!r}: "
                             "expected positive numbers")
        self.l0_coefficient, self.bandwidth = l0_coefficient, bandwidth
        self.l0_warmup_steps = l0_warmup_steps
        self.log_threshold = nnx.Param(jnp.full((d_sae,), np.log(threshold_init), jnp.float32),
                                       out_sharding=("latent",))

    def threshold(self) -> jax.Array:
        return jnp.exp(self.log_threshold[...])

    def encode(self, x: jax.Array) -> jax.Array:
        pre = self.pre_activation(x)
        return jnp.where(pre > self.threshold(), pre, 0.0)

    def train_forward(self, x):
        pre = self.pre_activation(x)
        theta = self.threshold()
        z = jumprelu(pre, theta, self.bandwidth)
        l0 = jnp.mean(jnp.sum(heaviside_step(pre, theta, self.bandwidth), axis=-1))
        coef = warmup_coefficient(self.l0_coefficient, self.step[...], self.l0_warmup_steps)
        return z, self.decode(z), {"l0_loss": coef * l0}

    def saelens_weights(self):
        return {**super().saelens_weights(), "threshold": self.threshold()}

    def load_saelens_weights(self, weights):
        weights = dict(weights)
        threshold = np.asarray(weights.pop("threshold"))
        if np.any(threshold <= 0):
            raise ValueError("weights['threshold']: expected positive thresholds")
        super().load_saelens_weights({**weights, "log_threshold": np.log(threshold)})
