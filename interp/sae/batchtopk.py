"""BatchTopK sparse autoencoder (Bussmann et al.; SAELens "batchtopk").

Training keeps the ``k * B`` largest ReLU'd pre-activations over the whole batch (``k`` may be
fractional: the average per token) and tracks a threshold, an EMA (rate ``threshold_lr``, 0.01)
of the smallest positive kept activation. Inference is a JumpReLU with that threshold, and the
model is saved as a SAELens ``jumprelu`` SAE with ``threshold = theta * ones(d_sae)``. Training
always takes TopK's dense path (the sparse one needs exactly ``k`` codes per token).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from interp.sae.autoencoder import SAEStat
from interp.sae.topk import TopKSAE


def batch_topk_codes(pre: jax.Array, k_total: int) -> jax.Array:
    """Keep the ``k_total`` largest ReLU'd entries over the flattened batch."""
    acts = jax.nn.relu(pre).reshape(-1)
    values, index = jax.lax.top_k(acts, k_total)
    return jnp.zeros_like(acts).at[index].set(values).reshape(pre.shape)


class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, k: float,
                 threshold_lr: float = 0.01, **kwargs: Any):
        if not 0 < k <= d_sae:
            raise ValueError(f"k={k!r}: expected 0 < k <= d_sae={d_sae}")
        if kwargs.get("sparse_training"):
            raise ValueError("sparse_training=True: BatchTopK's codes are not k per token; it "
                             "trains on the dense path")
        super().__init__(d_in, d_sae, rngs=rngs, k=max(1, int(k)), **kwargs)
        self.k = float(k)
        self.threshold_lr = threshold_lr
        self.threshold = SAEStat(jnp.zeros((), jnp.float32))

    def uses_sparse_training(self) -> bool:
        return False

    def encode(self, x: jax.Array) -> jax.Array:
        pre = self.pre_activation(x)
        return jnp.where(pre > self.threshold[...], jax.nn.relu(pre), 0.0)

    def sparse_codes(self, pre: jax.Array) -> jax.Array:
        tokens = pre.size // pre.shape[-1]
        z = batch_topk_codes(pre, max(1, int(self.k * tokens)))
        positive = z > 0
        smallest = jnp.min(jnp.where(positive, jax.lax.stop_gradient(z), jnp.inf))
        updated = (1 - self.threshold_lr) * self.threshold[...] + self.threshold_lr * smallest
        self.threshold[...] = jnp.where(jnp.any(positive), updated, self.threshold[...])
        return z

    def saelens_config(self):
        return {"architecture": "jumprelu"}

    def saelens_weights(self):
        return {**super().saelens_weights(),
                "threshold": jnp.full((self.d_sae,), self.threshold[...], jnp.float32)}
