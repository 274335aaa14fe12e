"""Voxel noise ceilings as defined for the Natural Scenes Dataset (Allen et al. 2022).

From responses to images shown several times: the noise variance is the mean over images of the
across-repeat variance (``ddof=1``); the signal variance is the total variance minus the noise
variance, floored at 0 (NSD's betas are z-scored per session so their total variance is 1; here
the total variance is measured, which equals 1 for z-scored data). ``ncsnr = sigma_signal /
sigma_noise``; the ceiling for responses averaged over ``n`` trials is
``ncsnr^2 / (ncsnr^2 + 1/n)``: the fraction (0..1; NSD reports it in percent) of the variance of
the averaged response that a perfect model could explain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from brain.input_checks import check_finite, check_positive_int


def _check_repeats(responses) -> jax.Array:
    responses = jnp.asarray(responses)
    if responses.ndim != 3:
        raise ValueError(f"responses: expected (images, repeats, voxels), got shape {responses.shape}")
    if responses.shape[0] < 2 or responses.shape[1] < 2:
        raise ValueError(f"responses: expected at least 2 images and 2 repeats, got shape {responses.shape}")
    return check_finite("responses", responses.astype(jnp.result_type(responses.dtype, jnp.float32)))


def ncsnr(responses) -> jax.Array:
    """Noise-ceiling SNR per voxel from ``(images, repeats, voxels)`` responses."""
    responses = _check_repeats(responses)
    noise_var = responses.var(axis=1, ddof=1).mean(axis=0)
    total_var = responses.reshape(-1, responses.shape[-1]).var(axis=0)
    signal_var = jnp.maximum(total_var - noise_var, 0.0)
    return jnp.sqrt(signal_var / noise_var)


def noise_ceiling_from_ncsnr(snr: jax.Array, n_average: int = 1) -> jax.Array:
    """``ncsnr^2 / (ncsnr^2 + 1/n_average)``: explainable variance fraction of n-trial averages."""
    n_average = check_positive_int("n_average", n_average)
    return snr**2 / (snr**2 + 1.0 / n_average)


def noise_ceiling(responses, n_average: int = 1) -> jax.Array:
    """Per-voxel noise ceiling (fraction) for responses averaged over ``n_average`` trials."""
    return noise_ceiling_from_ncsnr(ncsnr(responses), n_average)
