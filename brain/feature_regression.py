"""P30 Brain-Diffuser / P37 Brain Captioning: ridge stages from betas to frozen-model features.

P30 regresses z-scored, repeat-averaged betas onto VDVAE latents (alpha 5e4), CLIP-vision tokens
257 x 768 (one ridge per token, alpha 6e4) and CLIP-text tokens 77 x 768 (alpha 1e5); P37 regresses
betas onto the image-encoder features of GIT, whose frozen decoder writes the caption. Both use
closed-form ridge (:mod:`brain.ridge`).

Brain-Diffuser then re-standardises each predicted feature: standardise the predictions over the
test set (their own mean and std), then rescale to the training features' mean and std
(:func:`restandardize`, as in the official scripts; note it uses the statistics of the test
predictions as a set). Fitting "one ridge per token" with one alpha equals one multi-output ridge
on the flattened tokens, since ridge targets are independent; :func:`fit_feature_ridge` does that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from brain.input_checks import as_matrix, check_pair
from brain.ridge import RidgeModel, fit_ridge

# alphas of the official Brain-Diffuser scripts
BRAIN_DIFFUSER_ALPHAS = {"vdvae": 5e4, "clip_vision": 6e4, "clip_text": 1e5}


def restandardize(pred, train_features) -> jax.Array:
    """Standardise ``pred`` (N, ...) over N, then rescale to the train features' mean/std."""
    pred, train_features = jnp.asarray(pred), jnp.asarray(train_features)
    if pred.shape[1:] != train_features.shape[1:]:
        raise ValueError(f"pred {pred.shape} and train_features {train_features.shape}: feature shapes differ")
    z = (pred - pred.mean(0)) / pred.std(0)
    return z * train_features.std(0) + train_features.mean(0)


def fit_feature_ridge(betas, features, alpha: float, **ridge_kwargs) -> RidgeModel:
    """Ridge from ``betas`` (N, V) to ``features`` (N, ...) flattened (per-token ridge, one alpha)."""
    betas = as_matrix("betas", betas)
    features = jnp.asarray(features)
    check_pair("betas", betas, "features", features)
    return fit_ridge(betas, features.reshape(features.shape[0], -1), alpha, **ridge_kwargs)


def predict_features(
    model: RidgeModel, betas, train_features, *, restandardize_predictions: bool = True
) -> jax.Array:
    """Predicted features shaped like ``train_features[0]``, re-standardised as Brain-Diffuser."""
    train_features = jnp.asarray(train_features)
    pred = model.predict(betas).reshape((-1,) + train_features.shape[1:])
    return restandardize(pred, train_features) if restandardize_predictions else pred
