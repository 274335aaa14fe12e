"""High-level feature metrics of the NSD reconstruction literature: 2-way identification and
correlation distance, computed from any feature arrays (AlexNet(2)/(5), Inception, CLIP,
EfficientNet-B1, SwAV features in the papers; see :mod:`brain.metrics.features`).

2-way identification (MindEye's ``two_way_identification``): ``r[i, j]`` is the Pearson
correlation between the features of ground truth ``i`` and reconstruction ``j`` (each sample's
feature vector standardised across features, as ``np.corrcoef`` does); reconstruction ``j``
scores the fraction of the other ground truths ``i != j`` with ``r[i, j] < r[j, j]``; the metric
is the mean over reconstructions. Chance is 0.5; ties count as failures, as in the reference.

Correlation distance (EfficientNet-B1 and SwAV rows): mean over pairs of ``1 - r`` between the
features of ground truth ``i`` and reconstruction ``i`` (``scipy.spatial.distance.correlation``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from brain.input_checks import as_matrix, check_pair


def _standardize_rows(x: jax.Array) -> jax.Array:
    x = x - x.mean(axis=1, keepdims=True)
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


def feature_correlation(a, b) -> jax.Array:
    """``r[i, j]`` = Pearson r between row ``i`` of ``a`` and row ``j`` of ``b``."""
    a, b = as_matrix("a", a), as_matrix("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} features but b has {b.shape[1]}; expected equal")
    return _standardize_rows(a) @ _standardize_rows(b).T


def two_way_identification(recon_features, image_features, *, per_item: bool = False) -> jax.Array:
    """Fraction of 2-way comparisons won (mean over reconstructions; per item if ``per_item``)."""
    recon_features = as_matrix("recon_features", recon_features, min_rows=2)
    image_features = as_matrix("image_features", image_features, min_rows=2)
    check_pair("recon_features", recon_features, "image_features", image_features)
    r = feature_correlation(image_features, recon_features)  # rows: ground truth, cols: recon
    wins = (r < jnp.diag(r)[None, :]).sum(axis=0) / (r.shape[0] - 1)
    return wins if per_item else wins.mean()


def correlation_distance(recon_features, image_features) -> jax.Array:
    """Mean over pairs of ``1 - pearson_r(image_features[i], recon_features[i])``."""
    recon_features = as_matrix("recon_features", recon_features)
    image_features = as_matrix("image_features", image_features)
    check_pair("recon_features", recon_features, "image_features", image_features, same_shape=True)
    r = (_standardize_rows(image_features) * _standardize_rows(recon_features)).sum(axis=1)
    return (1.0 - r).mean()
