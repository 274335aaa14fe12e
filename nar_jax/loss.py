"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — training losses.

* :func:`assemble_nar_logits`: the official training-target assembly. One teacher-forced pass over
  ``[cond, x_0 ... x_{N-1}]`` (raster layout, proximity-aware mask); head d's logits at token p
  predict p + e_axis (axis = ndim - 1 - d, images: d=0 right, d=1 down). The target (0, 0) gets
  the mean of all heads at the last condition position; any other target the mean of the heads
  whose source p - e_axis exists (row 0: right head only, column 0: down head only). This is the
  official ``roll`` formulation, generalised to any grid and to video's three heads.
* :func:`nar_loss`: one cross entropy on the averaged logits (the official code averages logits
  before the CE). :func:`next_token_loss`: raster-AR / PAR-kX next-token loss on a plan's sequence.
* :func:`drop_labels`: class-label dropout to the null class for classifier-free guidance.

Deviation: the raster baseline also feeds the last token x_{N-1} (it predicts nothing and is
masked out of the loss) so every order shares one sequence builder; the loss is unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nar_jax import order as order_lib
from nar_jax.model import Transformer, check_compatible


def drop_labels(labels, key, prob: float, num_classes: int):
    """Replace each label by the null class ``num_classes`` with probability ``prob``."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob={prob}: expected a probability in [0, 1]")
    drop = jax.random.uniform(key, labels.shape) < prob
    return jnp.where(drop, num_classes, labels)


def assemble_nar_logits(head_logits, shape):
    """Training targets' logits ``[B, N, V]`` from ``head_logits [H, B, 1 + N, V]``.

    ``head_logits[:, :, 0]`` is the last condition position, ``[:, :, 1 + r]`` raster token r.
    """
    shape = order_lib.check_grid(shape)
    n_heads, batch, length, vocab = head_logits.shape
    n = int(np.prod(shape))
    if length != n + 1:
        raise ValueError(f"head_logits: expected {n + 1} positions for grid {shape}, got {length}")
    if n_heads > len(shape):
        raise ValueError(f"head_logits: {n_heads} heads for a {len(shape)}-D grid")
    coords = order_lib.grid_coords(shape)
    total = jnp.zeros((batch, *shape, vocab), jnp.float32)
    count = np.zeros(shape, np.float32)
    for d in range(n_heads):
        axis = len(shape) - 1 - d
        grid = head_logits[d, :, 1:].reshape(batch, *shape, vocab)
        shifted = jnp.roll(grid, 1, axis=1 + axis)  # value at p comes from p - e_axis
        valid = (coords[:, axis] > 0).reshape(shape)
        total = total + jnp.where(valid[None, ..., None], shifted, 0.0)
        count += valid
    origin = (0,) * len(shape)
    count[origin] = 1.0
    total = total.at[(slice(None), *origin)].set(head_logits[:, :, 0].mean(0))
    return (total / count[None, ..., None]).reshape(batch, n, vocab)


def _cond_and_tokens(model: Transformer, tokens, labels, feed_raster, feed_transition):
    c = model.config
    cond = model.embed_labels(labels)
    img = model.embed_tokens(
        tokens[:, np.maximum(feed_raster[c.cond_len:], 0)],
        jnp.asarray(feed_transition[c.cond_len:]),
    )
    return jnp.concatenate([cond, img], axis=1)


def _check_batch(model, tokens, labels, shape):
    n = int(np.prod(shape))
    if tokens.ndim != 2 or tokens.shape[1] != n:
        raise ValueError(f"tokens: expected [B, {n}] raster token ids, got {tokens.shape}")
    if labels.shape != tokens.shape[:1]:
        raise ValueError(f"labels: expected shape {tokens.shape[:1]}, got {labels.shape}")


def nar_head_logits(model: Transformer, tokens, labels, shape, dropout_key=None):
    """One teacher-forced pass in raster layout: head logits ``[H, B, 1 + N, V]``."""
    shape = order_lib.check_grid(shape)
    c = model.config
    _check_batch(model, tokens, labels, shape)
    n = int(np.prod(shape))
    check_compatible(c, shape, max_position=c.cond_len + n - 1)
    feed = np.concatenate([np.full(c.cond_len, -1), np.arange(n)])
    x = _cond_and_tokens(model, tokens, labels, feed, np.full(feed.size, -1))
    if c.position == "rope2d":
        positions = np.concatenate([np.full((c.cond_len, 2), -1), order_lib.grid_coords(shape)])
    else:
        positions = np.arange(c.cond_len + n)
    mask = order_lib.nar_attention_mask(shape, c.cond_len)
    logits, _ = model(x, positions, mask, dropout_key=dropout_key)
    return logits[:, :, c.cond_len - 1:]


def nar_loss(model: Transformer, tokens, labels, shape, key=None):
    """Mean cross entropy of the assembled NAR logits. ``key`` enables all dropouts."""
    c = model.config
    dkey = None
    if key is not None:
        lkey, dkey = jax.random.split(key)
        labels = drop_labels(labels, lkey, c.class_dropout, c.num_classes)
    logits = assemble_nar_logits(nar_head_logits(model, tokens, labels, shape, dkey), shape)
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()


def plan_targets(plan: order_lib.SequencePlan) -> np.ndarray:
    """``[L]`` raster token predicted by head 0 at each sequence position (-1: none)."""
    if plan.num_heads != 1:
        raise ValueError(f"plan: expected a single-head (raster/PAR) plan, got {plan.order!r}")
    target = np.full(plan.length, -1)
    target[plan.cond_len - 1] = plan.prefill_target
    for ph in plan.phases:
        pos = ph.offset[:, None] + ph.source[..., 0]
        target[pos] = ph.target_raster
    return target


def plan_head_logits(model: Transformer, tokens, labels, plan, dropout_key=None):
    """Teacher-forced pass over a plan's sequence (any order): logits ``[H, B, L, V]``."""
    c = model.config
    _check_batch(model, tokens, labels, plan.shape)
    check_compatible(c, plan.shape, plan.num_heads, plan.num_transition, int(plan.abs_pos.max()))
    x = _cond_and_tokens(model, tokens, labels, plan.feed_raster, plan.feed_transition)
    positions = plan.rope if c.position == "rope2d" else plan.abs_pos
    logits, _ = model(x, positions, plan.mask(), dropout_key=dropout_key)
    return logits


def next_token_loss(model: Transformer, tokens, labels, plan, key=None):
    """Raster-AR / PAR-kX loss: mean cross entropy over the N predicted positions."""
    c = model.config
    dkey = None
    if key is not None:
        lkey, dkey = jax.random.split(key)
        labels = drop_labels(labels, lkey, c.class_dropout, c.num_classes)
    logits = plan_head_logits(model, tokens, labels, plan, dkey)[0]
    target = plan_targets(plan)
    pos = np.nonzero(target >= 0)[0]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, pos], tokens[:, target[pos]])
    return ce.mean()


def loss(model: Transformer, tokens, labels, plan, key=None):
    """Training loss of ``plan``'s order: NAR assembly for ``nar``, next-token otherwise."""
    if plan.order == "nar":
        return nar_loss(model, tokens, labels, plan.shape, key)
    return next_token_loss(model, tokens, labels, plan, key)


def make_loss_fn(plan):
    """``loss_fn(model, batch, key) -> (loss, metrics)`` for ``core.train.train``.

    ``batch``: ``{"tokens": [B, N] raster ids, "label": [B]}``; ``key`` drives label dropout and
    the model's dropouts.
    """

    def loss_fn(model, batch, key):
        value = loss(model, batch["tokens"], batch["label"], plan, key)
        return value, {}

    return loss_fn
