"""TopK sparse autoencoder with the AuxK dead-latent loss (Gao et al.; SAELens "topk").

``z`` keeps the ``k`` largest pre-activations per token (then ReLU). AuxK: the residual
``x - x_hat`` (detached) is reconstructed by the top ``aux_k`` pre-activations among dead latents
(not fired for ``dead_steps`` steps), weighted by ``min(n_dead / aux_k, 1)`` (SAELens); default
``aux_k = d_in // 2``. Deviation: ``aux_k`` is static, so with fewer dead latents than ``aux_k``
the non-dead slots contribute zeros instead of shrinking ``k_aux`` (same loss value). While no
latent is dead the AuxK branch is skipped at run time (``lax.cond``): its top-``aux_k`` and extra
decoder pass would otherwise cost as much as the main step.

Training path: with ``sparse_training=True`` the decoder forward and all backward products are
computed from the ``(B, k)`` top values and indices (:mod:`interp.sae.sparse_topk`; same loss and
gradients as the dense ``z @ W_dec``, to float rounding), so only the encoder forward is a dense
matmul; AuxK uses the same path with its ``aux_k`` dead latents. ``None`` (default) picks it by
:data:`SPARSE_MIN_RATIO`: on CPU when ``d_sae >= SPARSE_MIN_RATIO * k`` (where it measured faster
than dense), dense elsewhere (on GPU/TPU the dense matmuls are cheap and the sparse path's
gathers and scatter-adds were not timed). ``encode`` (inference) stays dense.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from interp.sae.autoencoder import SparseAutoencoder
from interp.sae.sparse_topk import sparse_topk_decode

# d_sae / k from which the sparse training path is the CPU default: on 2 CPU cores (d_in 384,
# d_sae 1536, batch 2048) dense / sparse step time was 0.53 at d_sae / k = 8, 0.84 at 16, 1.29
# at 32; at d_sae 6144, k 32 (192) the sparse step was 2.4-2.9x faster (on a shared machine).
SPARSE_MIN_RATIO = 32


def sparse_training_by_default(d_sae: int, k: int) -> bool:
    """The default training path: sparse on CPU when ``d_sae >= SPARSE_MIN_RATIO * k``."""
    return jax.default_backend() == "cpu" and d_sae >= SPARSE_MIN_RATIO * k


class TopKCodes(NamedTuple):
    """Training codes of the sparse path: ``relu(values)`` at ``indices``, both ``(B, k)``."""

    values: jax.Array
    indices: jax.Array


def topk_codes(pre: jax.Array, k: int) -> jax.Array:
    """Keep the ``k`` largest entries of ``pre`` along the last axis (ReLU'd), zero the rest."""
    values, index = jax.lax.top_k(pre, k)
    return jnp.put_along_axis(jnp.zeros_like(pre), index, jax.nn.relu(values), axis=-1,
                              inplace=False)


class TopKSAE(SparseAutoencoder):
    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, k: int,
                 aux_k: int | None = None, aux_coefficient: float = 1.0,
                 sparse_training: bool | None = None, **kwargs: Any):
        super().__init__(d_in, d_sae, rngs=rngs, **kwargs)
        if not 0 < k <= d_sae:
            raise ValueError(f"k={k!r}: expected 0 < k <= d_sae={d_sae}")
        if sparse_training not in (None, True, False):
            raise TypeError(f"sparse_training={sparse_training!r}: expected None, True or False")
        self.k = k
        self.aux_k = min(d_sae, max(1, d_in // 2) if aux_k is None else aux_k)
        self.aux_coefficient = aux_coefficient
        self.sparse_training = sparse_training

    def uses_sparse_training(self) -> bool:
        """Whether :meth:`train_forward` takes the sparse path (see the module docstring)."""
        if self.sparse_training is not None:
            return self.sparse_training
        return sparse_training_by_default(self.d_sae, self.k)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.sparse_codes(self.pre_activation(x))

    def sparse_codes(self, pre: jax.Array) -> jax.Array:
        """Training-time sparsification of the pre-activations."""
        return topk_codes(pre, self.k)

    def aux_loss(self, x, x_hat, pre, sparse: bool = False) -> jax.Array:
        """AuxK loss; ``sparse``: decode the dead latents' codes with :func:`sparse_topk_decode`
        (then ``pre`` carries no gradient: it flows through that function)."""
        dead = self.dead_mask()
        n_dead = jnp.sum(dead)
        weights = ((self.b_dec[...], self.W_enc[...], self.b_enc[...], self.W_dec[...]) if sparse
                   else self.W_dec[...])

        def with_dead(pre, x_hat, weights):
            masked = jnp.where(dead, pre, -jnp.inf)
            if sparse:
                aux_hat = sparse_topk_decode(x, *weights, *jax.lax.top_k(masked, self.aux_k))
            else:
                aux_hat = jnp.where(dead, topk_codes(masked, self.aux_k), 0.0) @ weights
            residual = jax.lax.stop_gradient(x - x_hat)
            scale = jnp.minimum(n_dead / self.aux_k, 1.0)
            error = jnp.mean(jnp.sum((aux_hat - residual) ** 2, -1))
            return (self.aux_coefficient * scale * error).astype(pre.dtype)

        return jax.lax.cond(n_dead > 0, with_dead, lambda *_: jnp.zeros((), pre.dtype),
                            pre, x_hat, weights)

    def train_forward(self, x):
        if self.uses_sparse_training():
            return self.sparse_train_forward(x)
        pre = self.pre_activation(x)
        z = self.sparse_codes(pre)
        x_hat = self.decode(z)
        return z, x_hat, {"auxk_loss": self.aux_loss(x, x_hat, pre)}

    def sparse_train_forward(self, x):
        """:meth:`train_forward` with :class:`TopKCodes` and the sparse decode and gradients."""
        pre = jax.lax.stop_gradient(self.pre_activation(x))  # gradients: sparse_topk_decode's
        values, indices = jax.lax.top_k(pre, self.k)
        x_hat = sparse_topk_decode(x, self.b_dec[...], self.W_enc[...], self.b_enc[...],
                                   self.W_dec[...], values, indices) + self.b_dec[...]
        aux = self.aux_loss(x, x_hat, pre, sparse=True)
        return TopKCodes(values, indices), x_hat, {"auxk_loss": aux}

    def code_activity(self, z):
        if not isinstance(z, TopKCodes):
            return super().code_activity(z)
        active = z.values > 0
        fired = jnp.zeros((self.d_sae,), bool).at[jnp.where(active, z.indices, self.d_sae)].set(
            True, mode="drop")
        return fired, jnp.mean(jnp.sum(active, axis=-1))

    def saelens_config(self):
        return {"architecture": self.architecture, "k": int(self.k),
                "rescale_acts_by_decoder_norm": False}
