"""Argument checks shared by the brain area's public functions (clear errors naming the argument).

Value checks (NaN/Inf) run only on concrete arrays; under ``jit`` they are skipped, shape checks
always run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_finite(name: str, x):
    """Raise ``ValueError`` if a concrete array ``x`` holds NaN or Inf; return ``x``."""
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name}: expected finite values, found NaN or Inf")
    return x


def as_matrix(name: str, x, *, min_rows: int = 1) -> jax.Array:
    """A finite float ``(n, d)`` array, flattening trailing axes of an ``(n, ...)`` input."""
    if not hasattr(x, "shape"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected shape (n, ...) with a feature axis, got {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} rows, got {x.shape[0]}")
    x = x.reshape(x.shape[0], -1)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return check_finite(name, x)


def check_pair(name_a: str, a, name_b: str, b, *, same_shape: bool = False) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same number of rows (or the same shape)."""
    if same_shape and a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; expected equal shapes")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}; expected equal")


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)
