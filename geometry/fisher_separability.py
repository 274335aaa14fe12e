"""FisherS: intrinsic dimension from Fisher separability (Albergante, Bac & Zinovyev 2019;
scikit-dimension 0.5.0 ``FisherS``, after the authors' FisherSeparabilityAnalysis code).

A point x is Fisher-separable from y at margin alpha when ``<x, y> < alpha <x, x>``. After
preprocessing (centre; PCA keeping the components whose variance exceeds ``1 /
conditional_number`` of the first; whiten; project every point onto the unit sphere), for each
alpha in ``alphas`` (default 0.60, 0.62, ..., 0.98) the mean fraction ``p`` of the other N - 1
points that each point is *not* separable from is compared with the uniform n-sphere, where
``p ~ (1 - a^2)^((n - 1) / 2) / (a sqrt(2 pi n))``; solving for n gives
``n(a) = W0(-w / (2 pi p^2 a^2 (1 - a^2))) / -w`` with ``w = log(1 - a^2)`` and W0 the principal
Lambert W (computed here by Halley iterations in ``jnp``). The single estimate is n at the alpha
closest to 0.9 times the largest alpha where some pair is still inseparable (ties: the largest n).

Everything is pure ``jnp`` (:func:`fisher_s_from_points` jits and vmaps); the public
:func:`fisher_s` validates the input, and :func:`fisher_s_dimension` returns only the estimate.
Run under ``jax.enable_x64(True)`` for skdim parity (rtol 1e-6).

Deviations from scikit-dimension 0.5.0:

- Fully separable data (every point separable from every other at every alpha: high dimension
  with few points) gives nan in skdim (the users' complaint). ``fully_separable="bound"`` (our
  default) returns instead the largest dimension the sample can resolve: n(a) evaluated at the
  smallest non-zero mean inseparability ``p_min = 1 / (N (N - 1))`` (one inseparable ordered
  pair), maximised over alphas. n(p, a) decreases in p and the observed p is below p_min, so
  this is a lower bound on the estimate, and the result says so (``lower_bound`` is True; the
  public functions also warn). ``fully_separable="nan"`` keeps skdim's nan.
- PCA keeps components by masking instead of slicing (static shapes; identical dot products).
- When no alpha lies nearest to the reference alpha among the partially separable ones (not
  reachable with increasing alphas), skdim raises on an empty array; we return nan.
- ``separable_fraction`` is per alpha (the fraction of points separable from all others, as
  skdim documents and the MATLAB code computes); skdim's ``separable_fraction_`` sums over the
  other axis and gives, per point, the number of alphas at which it is separable divided by N.
- No plots; ``verbose`` is not ported.
"""

from __future__ import annotations

import functools
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from geometry.intrinsic_dim import check_choice
from geometry.knn import check_points

FULLY_SEPARABLE_POLICIES = ("bound", "nan")
_HALLEY_STEPS = 40


def default_alphas() -> np.ndarray:
    """skdim's margins ``np.arange(0.6, 1, 0.02)`` (20 values, float64 on the host)."""
    return np.arange(0.6, 1, 0.02)


class FisherSResult(typing.NamedTuple):
    dimension: jax.Array  # the single estimate (or its lower bound, see ``lower_bound``)
    n_alpha: jax.Array  # (A,) dimension per alpha, nan where all points are separable
    p_alpha: jax.Array  # (A, N) per point: fraction of the other points it is inseparable from
    separable_fraction: jax.Array  # (A,) fraction of points separable from all others
    alpha: jax.Array  # the alpha of the single estimate (nan if none)
    lower_bound: jax.Array  # True when the data are fully separable and the bound was returned


def lambert_w0(z: jax.Array) -> jax.Array:
    """Principal branch of the Lambert W function for real ``z >= 0`` (Halley iterations)."""
    z = jnp.asarray(z)
    log_z = jnp.log(jnp.maximum(z, jnp.finfo(z.dtype).tiny))
    big = z > jnp.e
    w = jnp.where(big, log_z - jnp.log(jnp.where(big, log_z, 1.0)), jnp.log1p(z))

    def halley(_, w):
        ew = jnp.exp(w)
        f = w * ew - z
        wp1 = w + 1
        step = f / (ew * wp1 - (w + 2) * f / (2 * wp1))
        return jnp.where(jnp.isfinite(step), w - step, w)

    w = jax.lax.fori_loop(0, _HALLEY_STEPS, halley, w)
    return jnp.where(jnp.isinf(z), jnp.inf, w)


def dimension_from_inseparability(p: jax.Array, alphas: jax.Array) -> jax.Array:
    """Dimension n of the uniform sphere whose inseparability probability at margin ``alpha`` is
    ``p``: ``W0(-w / (2 pi p^2 a^2 (1 - a^2))) / -w``, w = log(1 - a^2); nan where p == 0."""
    a2 = alphas**2
    w = jnp.log1p(-a2)
    safe_p = jnp.where(p > 0, p, 1.0)
    n = lambert_w0(-w / (2 * jnp.pi * safe_p * safe_p * a2 * (1 - a2))) / -w
    return jnp.where((p > 0) & jnp.isfinite(n), n, jnp.nan)


def preprocess(x: jax.Array, conditional_number: float = 10.0, project_on_sphere: bool = True) -> jax.Array:
    """Centre, keep the principal components with variance > lambda_1 / conditional_number
    (others zeroed), whiten (unit variance, ddof 1), optionally project rows onto the unit sphere."""
    n = x.shape[0]
    centred = x - jnp.mean(x, axis=0)
    u, s, _ = jnp.linalg.svd(centred, full_matrices=False)
    ev = s**2 / (n - 1)
    keep = ev / ev[0] > 1.0 / conditional_number
    scores = u * s
    std = jnp.sqrt(jnp.sum(scores**2, axis=0) / (n - 1))
    white = jnp.where(keep, scores / jnp.where(keep, std, 1.0), 0.0)
    on_sphere = white / jnp.sqrt(jnp.sum(white**2, axis=1, keepdims=True))
    return jnp.where(project_on_sphere, on_sphere, white)


def inseparability_counts(data: jax.Array, alphas: jax.Array, block_size: int = 256) -> jax.Array:
    """(A, N): for each alpha and point i, the number of j != i with ``<x_i, x_j> / <x_i, x_i> >= alpha``."""
    n = data.shape[0]
    block_size = min(block_size, n)
    n_blocks = -(-n // block_size)
    rows = jnp.arange(n_blocks * block_size).reshape(n_blocks, block_size)
    sq = jnp.sum(data * data, axis=1)
    n_alphas = alphas.shape[0]

    def count(r):
        rr = jnp.minimum(r, n - 1)
        xy = jnp.dot(data[rr], data.T, precision=jax.lax.Precision.HIGHEST) / sq[rr][:, None]
        xy = jnp.where(jnp.arange(n)[None, :] == rr[:, None], 0.0, xy)
        # histogram of the bucket (number of alphas <= xy) per row, then counts at or above each
        # alpha by a reverse cumulative sum: one pass over the block instead of one per alpha
        bucket = jnp.sum(xy[..., None] >= alphas, axis=-1, dtype=jnp.int32)
        hist = jnp.zeros((block_size, n_alphas + 1), jnp.int32).at[jnp.arange(block_size)[:, None], bucket].add(1)
        return jnp.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]

    counts = jax.lax.map(count, rows)  # (blocks, B, A)
    return counts.reshape(-1, n_alphas)[:n].T


@functools.partial(jax.jit, static_argnames=("fully_separable", "block_size"))
def fisher_s_from_points(
    x: jax.Array,
    alphas: jax.Array,
    conditional_number: float = 10.0,
    project_on_sphere: bool = True,
    limit_maxdim: bool = False,
    fully_separable: str = "bound",
    block_size: int = 256,
) -> FisherSResult:
    """FisherS on a point cloud (N, D), pure ``jnp``; see the module docstring."""
    check_choice(fully_separable, "fully_separable", FULLY_SEPARABLE_POLICIES)
    n = x.shape[0]
    alphas = jnp.asarray(alphas, x.dtype)
    data = preprocess(x, conditional_number, project_on_sphere)
    counts = inseparability_counts(data, alphas, block_size)
    p_alpha = counts.astype(x.dtype) / (n - 1)
    separable_fraction = jnp.mean((counts == 0).astype(x.dtype), axis=1)
    n_alpha = dimension_from_inseparability(jnp.mean(p_alpha, axis=1), alphas)
    valid = ~jnp.isnan(n_alpha)
    alpha_ref = 0.9 * jnp.max(jnp.where(valid, alphas, -jnp.inf))
    distance = jnp.abs(alphas - alpha_ref)
    selected = valid & (distance == jnp.min(distance))
    any_selected = jnp.any(selected)
    dimension = jnp.where(any_selected, jnp.max(jnp.where(selected, n_alpha, -jnp.inf)), jnp.nan)
    alpha = jnp.where(any_selected, jnp.max(jnp.where(selected, alphas, -jnp.inf)), jnp.nan)
    lower_bound = jnp.asarray(False)
    if fully_separable == "bound":
        lower_bound = ~jnp.any(valid)
        p_min = jnp.full_like(alphas, 1.0 / (n * (n - 1.0)))
        bound_per_alpha = dimension_from_inseparability(p_min, alphas)
        dimension = jnp.where(lower_bound, jnp.max(bound_per_alpha), dimension)
        alpha = jnp.where(lower_bound, alphas[jnp.argmax(bound_per_alpha)], alpha)
    dimension = jnp.where(limit_maxdim, jnp.minimum(dimension, x.shape[1]), dimension)
    return FisherSResult(dimension, n_alpha, p_alpha, separable_fraction, alpha, lower_bound)


def fisher_s(
    x,
    *,
    conditional_number: float = 10.0,
    project_on_sphere: bool = True,
    alphas=None,
    limit_maxdim: bool = False,
    fully_separable: str = "bound",
    block_size: int | None = None,
) -> FisherSResult:
    """FisherS (skdim ``FisherS()``) of a point cloud ``x`` (N, D) with N >= 2 and D >= 2.

    ``alphas``: increasing margins in (0, 1) (default :func:`default_alphas`).
    ``fully_separable``: 'bound' (default) or 'nan' (skdim), see the module docstring.
    ``block_size`` rows of the N x N Gram matrix at a time (default ``2**18 // N``).
    Returns a :class:`FisherSResult`.
    """
    check_choice(fully_separable, "fully_separable", FULLY_SEPARABLE_POLICIES)
    x = check_points(x, "x", min_points=2)
    if x.shape[1] < 2:
        raise ValueError(f"x: expected at least 2 features (columns), got shape {tuple(x.shape)}")
    if not conditional_number > 0:
        raise ValueError(f"conditional_number={conditional_number}: expected a positive number")
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=np.float64).reshape(-1)
    if alphas.size == 0 or np.any(alphas <= 0) or np.any(alphas >= 1) or np.any(np.diff(alphas) <= 0):
        raise ValueError("alphas: expected increasing values in the open interval (0, 1)")
    if block_size is None:
        block_size = max(8, 2**18 // x.shape[0])
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size={block_size!r}: expected a positive int")
    result = fisher_s_from_points(
        x, jnp.asarray(alphas, x.dtype), float(conditional_number), bool(project_on_sphere),
        bool(limit_maxdim), fully_separable, int(block_size),
    )
    if bool(result.lower_bound):
        warnings.warn(
            "FisherS: every point is separable from every other at all alphas; returning the "
            "largest resolvable dimension (a lower bound), see fully_separable",
            stacklevel=2,
        )
    return result


def fisher_s_dimension(x, **kwargs) -> jax.Array:
    """The single FisherS estimate (skdim ``FisherS().fit(x).dimension_``); see :func:`fisher_s`."""
    return fisher_s(x, **kwargs).dimension
