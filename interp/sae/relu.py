"""ReLU + L1 sparse autoencoder (SAELens "standard").

``z = ReLU((x - b_dec) W_enc + b_enc)``; loss = MSE + ``lambda_t * sum_i z_i ||W_dec[i]||`` with a
linear L1 warm-up ``lambda_t = lambda * min(1, (1 + step) / warmup)`` as in SAELens.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from interp.sae.autoencoder import SparseAutoencoder


def warmup_coefficient(value: float, step: jax.Array, warmup_steps: int) -> jax.Array:
    """SAELens coefficient warm-up: ``value * min(1, (1 + step) / warmup_steps)``."""
    if warmup_steps <= 0:
        return jnp.asarray(value, jnp.float32)
    return value * jnp.minimum(1.0, (1.0 + step) / warmup_steps)


class ReLUSAE(SparseAutoencoder):
    architecture = "standard"

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, l1_coefficient: float = 1.0,
                 l1_warmup_steps: int = 0, **kwargs: Any):
        super().__init__(d_in, d_sae, rngs=rngs, **kwargs)
        if l1_coefficient < 0:
            raise ValueError(f"l1_coefficient={l1_coefficient!r}: expected >= 0")
        self.l1_coefficient, self.l1_warmup_steps = l1_coefficient, l1_warmup_steps

    def encode(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.pre_activation(x))

    def train_forward(self, x):
        z = self.encode(x)
        coef = warmup_coefficient(self.l1_coefficient, self.step[...], self.l1_warmup_steps)
        norms = jnp.linalg.norm(self.W_dec[...], axis=-1)
        l1 = coef * jnp.mean(jnp.sum(z * norms, axis=-1))
        return z, self.decode(z), {"l1_loss": l1}
