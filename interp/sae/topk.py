"""TopK sparse autoencoder with the AuxK dead-latent loss (Gao et al.; SAELens "topk").

``z`` keeps the ``k`` largest pre-activations per token (then ReLU). AuxK: the residual
``x - x_hat`` (detached) is reconstructed by the top ``aux_k`` pre-activations among dead latents
(not fired for ``dead_steps`` steps), weighted by ``min(n_dead / aux_k, 1)`` (SAELens); default
``aux_k = d_in // 2``. Deviation: ``aux_k`` is static, so with fewer dead latents than ``aux_k``
the non-dead slots contribute zeros instead of shrinking ``k_aux`` (same loss value). While no
latent is dead the AuxK branch is skipped at run time (``lax.cond``): its top-``aux_k`` and extra
decoder pass would otherwise cost as much as the main step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from interp.sae.autoencoder import SparseAutoencoder


def topk_codes(pre: jax.Array, k: int) -> jax.Array:
    """Keep the ``k`` largest entries of ``pre`` along the last axis (ReLU'd), zero the rest."""
    values, index = jax.lax.top_k(pre, k)
    return jnp.put_along_axis(jnp.zeros_like(pre), index, jax.nn.relu(values), axis=-1,
                              inplace=False)


class TopKSAE(SparseAutoencoder):
    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, k: int,
                 aux_k: int | None = None, aux_coefficient: float = 1.0, **kwargs: Any):
        super().__init__(d_in, d_sae, rngs=rngs, **kwargs)
        if not 0 < k <= d_sae:
            raise ValueError(f"k={k!r}: expected 0 < k <= d_sae={d_sae}")
        self.k = k
        self.aux_k = min(d_sae, max(1, d_in // 2) if aux_k is None else aux_k)
        self.aux_coefficient = aux_coefficient

    def encode(self, x: jax.Array) -> jax.Array:
        return self.sparse_codes(self.pre_activation(x))

    def sparse_codes(self, pre: jax.Array) -> jax.Array:
        """Training-time sparsification of the pre-activations."""
        return topk_codes(pre, self.k)

    def aux_loss(self, x, x_hat, pre) -> jax.Array:
        dead = self.dead_mask()
        n_dead = jnp.sum(dead)
        w_dec = self.W_dec[...]

        def with_dead(pre, x_hat, w_dec):
            aux_codes = jnp.where(dead, topk_codes(jnp.where(dead, pre, -jnp.inf), self.aux_k),
                                  0.0)
            residual = jax.lax.stop_gradient(x - x_hat)
            scale = jnp.minimum(n_dead / self.aux_k, 1.0)
            error = jnp.mean(jnp.sum((aux_codes @ w_dec - residual) ** 2, -1))
            return (self.aux_coefficient * scale * error).astype(pre.dtype)

        return jax.lax.cond(n_dead > 0, with_dead, lambda *_: jnp.zeros((), pre.dtype),
                            pre, x_hat, w_dec)

    def train_forward(self, x):
        pre = self.pre_activation(x)
        z = self.sparse_codes(pre)
        x_hat = self.decode(z)
        return z, x_hat, {"auxk_loss": self.aux_loss(x, x_hat, pre)}

    def saelens_config(self):
        return {"architecture": self.architecture, "k": int(self.k),
                "rescale_acts_by_decoder_norm": False}
