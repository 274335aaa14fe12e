"""Input checks shared by the SAE modules and metrics (clear errors at public entry points)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_activations(x, d_in: int | None = None, name: str = "x", min_rank: int = 2) -> jax.Array:
    """Return ``x`` as a float array ``[..., d_in]``; raise ``TypeError``/``ValueError`` otherwise.

    Concrete (non-traced) inputs are also checked for NaN/Inf and emptiness.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if x.ndim < min_rank:
        raise ValueError(f"{name}: expected rank >= {min_rank} ([..., features]), got shape "
                         f"{x.shape}")
    if d_in is not None and x.shape[-1] != d_in:
        raise ValueError(f"{name}: expected last dimension d_in={d_in}, got shape {x.shape}")
    if not isinstance(x, jax.core.Tracer):
        if x.size == 0:
            raise ValueError(f"{name}: expected a non-empty array, got shape {x.shape}")
        if not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError(f"{name}: contains NaN or Inf")
    return jnp.asarray(x)


def check_positive(value, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name}={value!r}: expected a positive number")
