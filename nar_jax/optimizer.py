"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — the optimizer.

AdamW as in the paper and LlamaGen's ``configure_optimizers``: lr 1e-4, betas (0.9, 0.95),
weight decay 0.05 on tensors with ndim >= 2 only (no decay on norms), global-norm clipping 1.0.
"""

from __future__ import annotations

import jax
import optax


def make_optimizer(
    learning_rate: float = 1e-4,
    b1: float = 0.9,
    b2: float = 0.95,
    weight_decay: float = 0.05,
    max_grad_norm: float = 1.0,
) -> optax.GradientTransformation:
    if learning_rate <= 0 or max_grad_norm <= 0 or weight_decay < 0:
        raise ValueError(
            f"learning_rate={learning_rate}, max_grad_norm={max_grad_norm}, "
            f"weight_decay={weight_decay}: expected positive lr/clip and non-negative decay"
        )
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(max_grad_norm),
        optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay, mask=decay_mask),
    )
