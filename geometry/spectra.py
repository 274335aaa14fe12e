"""P11 Tracing the Representation Geometry of Language Models from Pretraining to Post-training.

Spectral summaries of a representation matrix Z (N samples, K features):

- RankMe (Garrido et al. 2023), two named definitions with the same formula
  ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum(s) + eps`` (eps = 1e-7):
  :func:`rankme` on the singular values of the raw matrix (Garrido: no centring), and
  :func:`rankme_pca` on the centred covariance eigenvalues (PCA explained-variance ratios), as
  the P11 code does.
- alpha-ReQ (Agrawal et al. 2022): the power-law decay ``lambda_i ~ i^-alpha`` of the centred
  covariance eigenvalues, fitted by weighted least squares of ``log lambda_i`` on ``-log i`` with
  weights ``1 / i`` over a rank range (the Stringer et al. 2019 fit used by the alpha-ReQ and
  P11 code), with the fit's R^2.

Pure ``jnp`` functions: they ``jit``/``vmap`` over checkpoints unchanged.

Deviations: the official code reports R^2 over ranks ``[start, min(500, K - 10))``; here R^2 is
over the fit range by default and that window is available through ``r2_range``. The official
code caps the spectrum at 2048 PCA components; here all ``min(N, K)`` are used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RANKME_EPS = 1e-7
ALPHA_FIT_RANKS = (12, 100)  # 1-based, inclusive (P11 / alpha-ReQ code: trange = arange(11, 100))


def _check_matrix(z, name: str = "z") -> jax.Array:
    if not hasattr(z, "ndim") or z.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (N samples, K features), got shape {getattr(z, 'shape', None)}")
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        z = z.astype(jnp.result_type(float))
    if z.shape[0] < 2 or z.shape[1] < 1:
        raise ValueError(f"{name}: expected at least 2 samples and 1 feature, got shape {tuple(z.shape)}")
    return z


def rankme_from_spectrum(values: jax.Array, eps: float = RANKME_EPS) -> jax.Array:
    """``exp(entropy)`` of ``p = values / sum(values) + eps`` (values >= 0, e.g. singular values)."""
    p = values / jnp.sum(jnp.abs(values)) + eps
    return jnp.exp(-jnp.sum(p * jnp.log(p)))


def singular_values(z: jax.Array) -> jax.Array:
    """Singular values of the raw (uncentred) matrix, descending. A non-square matrix is first
    reduced to the triangular factor of a QR of its long side (the same singular values): JAX's
    CPU SVD allocates an N x N ``U`` even when no vectors are asked for (80 GB at N = 100k)."""
    if z.shape[0] != z.shape[1]:
        z = jnp.linalg.qr(z if z.shape[0] > z.shape[1] else z.T, mode="r")
    return jnp.linalg.svd(z, compute_uv=False)


def covariance_spectrum(z: jax.Array) -> jax.Array:
    """Eigenvalues of the centred covariance ``Zc^T Zc / (N - 1)``, descending (min(N, K) values)."""
    return singular_values(z - jnp.mean(z, axis=0)) ** 2 / (z.shape[0] - 1)


def rankme(z, eps: float = RANKME_EPS) -> jax.Array:
    """RankMe (Garrido et al.): entropy effective rank of the raw matrix's singular values."""
    return rankme_from_spectrum(singular_values(_check_matrix(z)), eps)


def rankme_pca(z, eps: float = RANKME_EPS) -> jax.Array:
    """RankMe as in the P11 code: the same formula on PCA explained-variance ratios (centred)."""
    return rankme_from_spectrum(covariance_spectrum(_check_matrix(z)), eps)


def _wls_power_law(ranks, log_values):
    """Weighted (1 / rank) least squares of log values on [-log rank, 1] -> (alpha, intercept)."""
    x = jnp.stack([-jnp.log(ranks), jnp.ones_like(ranks)], axis=1)
    w = 1.0 / ranks
    b = jnp.linalg.solve(x.T @ (x * w[:, None]), (x * w[:, None]).T @ log_values)
    return b[0], b[1]


def _r2(y, y_hat):
    return 1.0 - jnp.sum((y - y_hat) ** 2) / jnp.sum((y - jnp.mean(y)) ** 2)


def alpha_req_from_spectrum(
    eigenvalues: jax.Array,
    fit_ranks: tuple[int, int] = ALPHA_FIT_RANKS,
    r2_range: tuple[int, int] | None = None,
) -> dict[str, jax.Array]:
    """Power-law exponent of a descending spectrum over 1-based ranks ``fit_ranks`` (inclusive,
    clipped to the spectrum length). Returns ``{'alpha', 'intercept', 'r2'}``; R^2 of
    ``log lambda`` over ``r2_range`` (1-based inclusive; default: the fit range)."""
    m = eigenvalues.shape[0]
    start, end = int(fit_ranks[0]), min(int(fit_ranks[1]), m)
    if not 1 <= start < end:
        raise ValueError(f"fit_ranks={fit_ranks}: expected 1 <= start < end <= {m} (the spectrum length)")
    log_values = jnp.log(jnp.abs(eigenvalues))
    ranks = jnp.arange(start, end + 1, dtype=eigenvalues.dtype)
    alpha, intercept = _wls_power_law(ranks, log_values[start - 1 : end])
    r_start, r_end = (start, end) if r2_range is None else (int(r2_range[0]), min(int(r2_range[1]), m))
    r_ranks = jnp.arange(r_start, r_end + 1, dtype=eigenvalues.dtype)
    r2 = _r2(log_values[r_start - 1 : r_end], intercept - alpha * jnp.log(r_ranks))
    return {"alpha": alpha, "intercept": intercept, "r2": r2}


def alpha_req(z, fit_ranks: tuple[int, int] = ALPHA_FIT_RANKS, r2_range: tuple[int, int] | None = None):
    """alpha-ReQ of a representation matrix (N, K): decay of its centred covariance spectrum."""
    return alpha_req_from_spectrum(covariance_spectrum(_check_matrix(z)), fit_ranks, r2_range)
