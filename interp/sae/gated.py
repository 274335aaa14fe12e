"""Gated sparse autoencoder (Rajamanoharan et al. 2024; SAELens "gated").

Gate ``pi_gate = (x - b_dec) W_enc + b_gate``; magnitude ``ReLU((x - b_dec)(W_enc * exp(r_mag)) +
b_mag)``; ``z = H(pi_gate) * magnitude``. Loss = MSE +
``lambda * sum_i ReLU(pi_gate)_i ||W_dec[i]||`` + the auxiliary reconstruction
``||x - (ReLU(pi_gate) W_dec + b_dec)||^2`` through the gate path with the decoder frozen (as in
the paper; SAELens does not freeze it).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from interp.sae.autoencoder import SparseAutoencoder
from interp.sae.checks import check_activations
from interp.sae.relu import warmup_coefficient


class GatedSAE(SparseAutoencoder):
    architecture = "gated"
    has_encoder_bias = False

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, l1_coefficient: float = 1.0,
                 l1_warmup_steps: int = 0, **kwargs: Any):
        super().__init__(d_in, d_sae, rngs=rngs, **kwargs)
        self.l1_coefficient, self.l1_warmup_steps = l1_coefficient, l1_warmup_steps
        for name in ("b_gate", "r_mag", "b_mag"):
            setattr(self, name, nnx.Param(jnp.zeros((d_sae,), jnp.float32),
                                          out_sharding=("latent",)))

    def _paths(self, x):
        x = check_activations(x, self.d_in, "x", min_rank=1)
        centred = x - self.b_dec[...]
        pi_gate = centred @ self.W_enc[...] + self.b_gate[...]
        w_mag = self.W_enc[...] * jnp.exp(self.r_mag[...])
        magnitude = jax.nn.relu(centred @ w_mag + self.b_mag[...])
        return pi_gate, magnitude

    def encode(self, x: jax.Array) -> jax.Array:
        pi_gate, magnitude = self._paths(x)
        return jnp.where(pi_gate > 0, magnitude, 0.0)

    def train_forward(self, x):
        pi_gate, magnitude = self._paths(x)
        z = jax.lax.stop_gradient((pi_gate > 0).astype(x.dtype)) * magnitude
        gate = jax.nn.relu(pi_gate)
        coef = warmup_coefficient(self.l1_coefficient, self.step[...], self.l1_warmup_steps)
        norms = jnp.linalg.norm(self.W_dec[...], axis=-1)
        l1 = coef * jnp.mean(jnp.sum(gate * norms, axis=-1))
        via_gate = gate @ jax.lax.stop_gradient(self.W_dec[...]) + jax.lax.stop_gradient(
            self.b_dec[...])
        aux = jnp.mean(jnp.sum((via_gate - x) ** 2, axis=-1))
        return z, self.decode(z), {"l1_loss": l1, "aux_reconstruction_loss": aux}

    def saelens_weights(self):
        return {"W_enc": self.W_enc[...], "b_gate": self.b_gate[...], "r_mag": self.r_mag[...],
                "b_mag": self.b_mag[...], "W_dec": self.W_dec[...], "b_dec": self.b_dec[...]}
