"""P41 Superposition as Lossy Compression: Measure with Sparse Autoencoders and Connect to
Adversarial Vulnerability.

The effective number of features of a layer from its SAE codes ``z``:
``p_i = E|z_i| / sum_j E|z_j|``, ``H = -sum_i p_i ln p_i`` (``0 ln 0 = 0``), ``F = exp(H)``; the
superposition ratio is ``psi = F / N`` with ``N`` the layer's neurons (``psi > 1``: more
effective features than neurons). For convolutional layers the codes are summed over the
spatial positions first (``position_axes``), as in the paper. Uniform activity over ``k``
features gives ``F = k``; one active feature gives ``F = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from interp.sae.checks import check_activations


def feature_distribution(codes: jax.Array, position_axes: Sequence[int] = ()) -> jax.Array:
    """``p [d_sae]``: each latent's share of the mean absolute activity.

    ``codes [..., d_sae]``; axes in ``position_axes`` are summed before averaging over the rest.
    """
    codes = check_activations(codes, name="codes", min_rank=1)
    if position_axes:
        axes = tuple(a % codes.ndim for a in position_axes)
        if codes.ndim - 1 in axes:
            raise ValueError(f"position_axes={tuple(position_axes)}: may not include the last "
                             "(feature) axis")
        codes = jnp.sum(jnp.abs(codes), axis=axes)
    mass = jnp.mean(jnp.abs(codes).reshape(-1, codes.shape[-1]), axis=0)
    return mass / jnp.maximum(jnp.sum(mass), jnp.finfo(mass.dtype).tiny)


def effective_features(codes: jax.Array, position_axes: Sequence[int] = ()) -> jax.Array:
    """``F = exp(H(p))`` of :func:`feature_distribution`."""
    p = feature_distribution(codes, position_axes)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(entropy)


def superposition_ratio(codes: jax.Array, n_neurons: int,
                        position_axes: Sequence[int] = ()) -> jax.Array:
    """``psi = F / n_neurons``."""
    if not isinstance(n_neurons, int) or n_neurons <= 0:
        raise ValueError(f"n_neurons={n_neurons!r}: expected a positive integer")
    return effective_features(codes, position_axes) / n_neurons
