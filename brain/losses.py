"""Contrastive and consistency losses of the cross-subject fMRI decoders.

- :func:`soft_clip_loss` (MindEye, used by P09 MindBridge and MindEye2): cross-entropy between the
  target-target similarity distribution ``softmax(T T^T / tau)`` and the prediction-target
  ``log_softmax(P T^T / tau)``, averaged over rows and symmetrised (columns of ``P T^T``).
- :func:`mixco` / :func:`mixco_nce` (MindEye's MixCo; ``bidirectional=True`` is BiMixCo): voxels
  mixed with a permuted copy by ``beta ~ Beta(0.15, 0.15)`` on a random half of the batch; the
  soft labels put ``beta`` on the own target and ``1 - beta`` on the mixed-in target.
- :func:`symmetric_infonce` with :class:`LearnableTemperature` (CLIP/NeuroBridge): symmetric
  cross-entropy of ``exp(log_scale) * cos(a, b)`` with a learnable log inverse temperature.
- :func:`reconstruction_loss` and :func:`cycle_loss` (P09 MindBridge): ``MSE(x, builder_s(
  embedder_s(x)))`` and ``MSE(e_a, embedder_b(builder_b(e_a)))`` for a subject pair (a, b).

Inputs to the contrastive losses are used as given (the references L2-normalise the flattened
embeddings before the call); :func:`l2_normalize` does that. Reference quirk kept: in MixCo's soft
labels a sample whose permutation partner is itself gets ``1 - beta`` (the reference overwrites
the diagonal), not 1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Flatten to ``(batch, -1)`` and divide each row by its L2 norm (``F.normalize``)."""
    x = x.reshape(x.shape[0], -1)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _check_pair(preds, targets):
    if preds.ndim != 2 or preds.shape != targets.shape:
        raise ValueError(
            f"preds {preds.shape} and targets {targets.shape}: expected equal (batch, dim) shapes"
        )


def soft_clip_loss(preds: jax.Array, targets: jax.Array, temperature: float = 0.125) -> jax.Array:
    """MindEye's SoftCLIP loss (default ``temp=0.125`` as ``utils.soft_clip_loss``)."""
    _check_pair(preds, targets)
    target_sim = jax.nn.softmax(targets @ targets.T / temperature, axis=-1)
    logits = preds @ targets.T / temperature
    loss_rows = -(jax.nn.log_softmax(logits, axis=-1) * target_sim).sum(-1).mean()
    loss_cols = -(jax.nn.log_softmax(logits.T, axis=-1) * target_sim).sum(-1).mean()
    return (loss_rows + loss_cols) / 2


@functools.partial(jax.jit, static_argnames=("beta", "select_prob"))
def mixco(
    key: jax.Array, voxels: jax.Array, beta: float = 0.15, select_prob: float = 0.5
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mix voxels with a permuted copy: returns ``(mixed, perm, betas)``; ``betas`` is 1 where a
    sample was not selected for mixing (MindEye's ``mixco``)."""
    k_perm, k_beta, k_sel = jax.random.split(key, 3)
    n = voxels.shape[0]
    perm = jax.random.permutation(k_perm, n)
    betas = jax.random.beta(k_beta, beta, beta, (n,), dtype=voxels.dtype)
    select = jax.random.uniform(k_sel, (n,)) <= select_prob
    betas = jnp.where(select, betas, 1.0)
    shape = (n,) + (1,) * (voxels.ndim - 1)
    mixed = voxels * betas.reshape(shape) + voxels[perm] * (1 - betas).reshape(shape)
    return mixed, perm, betas


def mixco_soft_labels(perm: jax.Array, betas: jax.Array) -> jax.Array:
    """``diag(betas)`` with ``1 - betas[i]`` written at ``(i, perm[i])``."""
    n = perm.shape[0]
    return jnp.diag(betas).at[jnp.arange(n), perm].set(1 - betas)


def mixco_nce(
    preds: jax.Array,
    targets: jax.Array,
    perm: jax.Array | None = None,
    betas: jax.Array | None = None,
    temperature: float = 0.1,
    bidirectional: bool = True,
) -> jax.Array:
    """MixCo InfoNCE with soft labels (plain symmetric InfoNCE when ``perm``/``betas`` are None).

    ``bidirectional=True`` is BiMixCo (MindEye2 trains it with ``temperature=0.006``).
    """
    _check_pair(preds, targets)
    logits = preds @ targets.T / temperature
    n = preds.shape[0]
    labels = jnp.eye(n, dtype=logits.dtype) if perm is None else mixco_soft_labels(perm, betas)
    loss = -(jax.nn.log_softmax(logits, axis=-1) * labels).sum(-1).mean()
    if bidirectional:
        loss_t = -(jax.nn.log_softmax(logits.T, axis=-1) * labels.T).sum(-1).mean()
        loss = (loss + loss_t) / 2
    return loss


class LearnableTemperature(nnx.Module):
    """A learnable log inverse temperature, initialised to ``log(1 / temperature)`` (CLIP: 0.07)."""

    def __init__(self, temperature: float = 0.07):
        if not temperature > 0:
            raise ValueError(f"temperature={temperature}: expected a positive value")
        self.log_scale = nnx.Param(jnp.log(1.0 / jnp.asarray(temperature, jnp.float32)), out_sharding=())

    def __call__(self, max_scale: float = 100.0) -> jax.Array:
        """The inverse temperature ``exp(log_scale)``, clipped at ``max_scale`` as CLIP does."""
        return jnp.minimum(jnp.exp(self.log_scale[...]), max_scale)


def symmetric_infonce(a: jax.Array, b: jax.Array, scale: jax.Array) -> jax.Array:
    """``(CE(s a b^T, I) + CE(s b a^T, I)) / 2`` on L2-normalised ``a``, ``b`` with scale ``s``."""
    _check_pair(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
    logits = scale * l2_normalize(a) @ l2_normalize(b).T
    diag = jnp.arange(a.shape[0])
    row = -jax.nn.log_softmax(logits, axis=-1)[diag, diag].mean()
    col = -jax.nn.log_softmax(logits.T, axis=-1)[diag, diag].mean()
    return (row + col) / 2


def reconstruction_loss(
    voxels: jax.Array, embedder: Callable[[jax.Array], jax.Array], builder: Callable[[jax.Array], jax.Array]
) -> jax.Array:
    """MindBridge's ``MSE(x, builder_s(embedder_s(x)))`` for one subject's voxels."""
    return jnp.mean((voxels - builder(embedder(voxels))) ** 2)


def cycle_loss(
    embedding_a: jax.Array,
    embedder_b: Callable[[jax.Array], jax.Array],
    builder_b: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    """MindBridge's cycle loss ``MSE(e_a, embedder_b(builder_b(e_a)))``: subject a's semantic
    embedding rendered as pseudo fMRI of subject b and embedded back."""
    return jnp.mean((embedding_a - embedder_b(builder_b(embedding_a))) ** 2)
