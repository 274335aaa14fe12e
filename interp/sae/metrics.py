"""SAE evaluation metrics as pure ``jnp`` functions (SAELens / Gated-SAE paper definitions).

- :func:`l0`: mean number of active latents per token.
- :func:`fvu`: ``sum (x - x_hat)^2 / sum (x - mean x)^2``; :func:`explained_variance` = 1 - FVU.
- :func:`dead_fraction` / :func:`dense_fraction`: latents firing on no token / on more than
  ``density`` of tokens (firing frequencies from :func:`firing_frequency`).
- :func:`l2_ratio`: mean over tokens of ``||x_hat|| / ||x||``.
- :func:`relative_reconstruction_bias`: ``E||x_hat||^2 / E<x, x_hat>`` (Gated SAE paper; 1 means
  unbiased, < 1 shrinkage).
- :func:`spliced_scores`: CE/KL with the SAE spliced in, against zero ablation:
  ``ce_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)``, ``kl_score = 1 - KL_sae / KL_zero``.
- :func:`dictionary_recovery`: mean over planted atoms of the max cosine with learned atoms.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from interp.sae.checks import check_activations


def _flat(a, name, d=None):
    a = check_activations(a, d, name, min_rank=1)
    return a.reshape(-1, a.shape[-1])


def _same_shape(x, x_hat):
    if x.shape != x_hat.shape:
        raise ValueError(f"x {x.shape} and x_hat {x_hat.shape}: expected the same shape")


def l0(codes: jax.Array) -> jax.Array:
    return jnp.mean(jnp.sum(_flat(codes, "codes") != 0, axis=-1))


def fvu(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    _same_shape(x, x_hat)
    x, x_hat = _flat(x, "x"), _flat(x_hat, "x_hat")
    return jnp.sum((x - x_hat) ** 2) / jnp.maximum(jnp.sum((x - x.mean(0)) ** 2), 1e-30)


def explained_variance(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    return 1.0 - fvu(x, x_hat)


def firing_frequency(codes: jax.Array) -> jax.Array:
    """Fraction of tokens on which each latent is non-zero, ``[d_sae]``."""
    return jnp.mean(_flat(codes, "codes") != 0, axis=0)


def dead_fraction(codes: jax.Array) -> jax.Array:
    return jnp.mean(firing_frequency(codes) == 0)


def dense_fraction(codes: jax.Array, density: float = 0.1) -> jax.Array:
    if not 0 < density < 1:
        raise ValueError(f"density={density!r}: expected 0 < density < 1")
    return jnp.mean(firing_frequency(codes) > density)


def l2_ratio(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    _same_shape(x, x_hat)
    x, x_hat = _flat(x, "x"), _flat(x_hat, "x_hat")
    return jnp.mean(jnp.linalg.norm(x_hat, axis=-1) / jnp.maximum(jnp.linalg.norm(x, axis=-1),
                                                                   1e-30))


def relative_reconstruction_bias(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    _same_shape(x, x_hat)
    x, x_hat = _flat(x, "x"), _flat(x_hat, "x_hat")
    return jnp.mean(jnp.sum(x_hat * x_hat, -1)) / jnp.mean(jnp.sum(x * x_hat, -1))


def _cross_entropy(logits, targets):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


def _kl(clean_logits, logits):
    p_log = jax.nn.log_softmax(clean_logits, -1)
    q_log = jax.nn.log_softmax(logits, -1)
    return jnp.mean(jnp.sum(jnp.exp(p_log) * (p_log - q_log), -1))


def spliced_scores(logits_with_replacement: Callable[[jax.Array], jax.Array], acts: jax.Array,
                   reconstruction: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """CE and KL of the model with ``acts`` replaced by the SAE ``reconstruction`` or by zeros.

    ``logits_with_replacement(a)`` runs the model with the hooked activations replaced by ``a``
    (``acts`` itself gives the clean logits ``[..., vocab]``); ``targets`` are the next-token ids
    ``[...]`` the cross-entropy is measured on.
    """
    _same_shape(acts, reconstruction)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets: expected integer token ids, got dtype {targets.dtype}")
    clean = logits_with_replacement(acts)
    spliced = logits_with_replacement(reconstruction)
    zero = logits_with_replacement(jnp.zeros_like(acts))
    if clean.shape[:-1] != targets.shape:
        raise ValueError(f"targets {targets.shape}: expected the logits' leading shape "
                         f"{clean.shape[:-1]}")
    ce_clean, ce_sae, ce_zero = (_cross_entropy(l, targets) for l in (clean, spliced, zero))
    kl_sae, kl_zero = _kl(clean, spliced), _kl(clean, zero)
    return {
        "ce_clean": ce_clean, "ce_sae": ce_sae, "ce_zero_ablation": ce_zero,
        "ce_score": (ce_zero - ce_sae) / (ce_zero - ce_clean),
        "kl_sae": kl_sae, "kl_zero_ablation": kl_zero, "kl_score": 1.0 - kl_sae / kl_zero,
    }


def dictionary_recovery(learned: jax.Array, true: jax.Array) -> jax.Array:
    """Mean over rows of ``true`` of the max (signed) cosine with any row of ``learned``."""
    if learned.ndim != 2 or true.ndim != 2 or learned.shape[1] != true.shape[1]:
        raise ValueError(f"learned {learned.shape}, true {true.shape}: expected [n, d] and [m, d]")
    a = learned / jnp.maximum(jnp.linalg.norm(learned, axis=-1, keepdims=True), 1e-30)
    b = true / jnp.maximum(jnp.linalg.norm(true, axis=-1, keepdims=True), 1e-30)
    return jnp.mean(jnp.max(b @ a.T, axis=-1))
