"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — sample quality
on the embedded tasks.

The paper scores ImageNet samples by FID (Frechet distance of Inception-v3 pool features) and IS.
No Inception weights are available offline, so the embedded tasks use a classifier trained on the
real training images instead:

* **class accuracy** of generated images under that classifier (label = the class the sample was
  conditioned on): does the generator follow its condition?
* **Frechet distance** between the classifier's penultimate-layer features of generated images
  and of held-out real images: ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``, the FID
  formula (Heusel et al. 2017) in another feature space; lower is better, 0 for equal Gaussians.

:func:`frechet_distance` is a pure ``jnp`` function. The matrix square root's trace is computed
symmetrically, ``Tr (S_a S_b)^{1/2} = sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2}))`` (eigenvalues clipped
at 0), which equals scipy's ``sqrtm``-based value (pytorch-fid) for PSD inputs and needs no complex
arithmetic. Covariances are unbiased (``N - 1``), as ``np.cov``.

Deviation: the classifier is :class:`core.classifier.MLPClassifier` trained through
``core.train.train``, not Inception; numbers are not comparable with published FIDs.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from core import data as data_lib
from core.classifier import ClassifierConfig, MLPClassifier, classification_loss
from core.train import TrainConfig, train


def _check_features(features, name: str) -> jax.Array:
    features = jnp.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{name}: expected features [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 feature rows for a covariance, got {features.shape[0]}")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        features = features.astype(jnp.float32)
    if not isinstance(features, jax.core.Tracer) and not bool(jnp.isfinite(features).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return features


def gaussian_stats(features) -> tuple[jax.Array, jax.Array]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of ``features [N, D]``."""
    features = _check_features(features, "features")
    mean = features.mean(axis=0)
    centred = features - mean
    return mean, centred.T @ centred / (features.shape[0] - 1)


def _psd_sqrt(matrix: jax.Array) -> jax.Array:
    values, vectors = jnp.linalg.eigh(matrix)
    return (vectors * jnp.sqrt(jnp.maximum(values, 0.0))) @ vectors.T


def frechet_distance_from_stats(mean_a, cov_a, mean_b, cov_b) -> jax.Array:
    """``|mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr (S_a S_b)^{1/2}`` for PSD covariances."""
    mean_a, mean_b = jnp.asarray(mean_a), jnp.asarray(mean_b)
    cov_a, cov_b = jnp.asarray(cov_a), jnp.asarray(cov_b)
    d = mean_a.shape[-1] if mean_a.ndim == 1 else None
    if d is None or mean_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(
            f"mean_a, cov_a, mean_b, cov_b: expected [D], [D, D], [D], [D, D], got {mean_a.shape}, "
            f"{cov_a.shape}, {mean_b.shape}, {cov_b.shape}"
        )
    root_a = _psd_sqrt((cov_a + cov_a.T) / 2)
    middle = root_a @ cov_b @ root_a
    cross = jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh((middle + middle.T) / 2), 0.0)))
    diff = mean_a - mean_b
    return diff @ diff + jnp.trace(cov_a) + jnp.trace(cov_b) - 2.0 * cross


def frechet_distance(features_a, features_b) -> jax.Array:
    """Frechet distance between Gaussians fitted to ``features_a [N, D]`` and ``features_b [M, D]``."""
    features_a = _check_features(features_a, "features_a")
    features_b = _check_features(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"features_a, features_b: expected the same feature dimension, got {features_a.shape[1]} "
            f"and {features_b.shape[1]}"
        )
    return frechet_distance_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
    """The evaluation classifier: an MLP on flattened pixels, AdamW, ``steps`` x ``batch_size``."""

    hidden: int = 256
    depth: int = 2
    steps: int = 400
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0


def train_classifier(source, num_classes: int, config: ClassifierTrainConfig, mesh,
                     workdir: str | Path = "") -> MLPClassifier:
    """Train (or, with a finished ``workdir``, restore) the classifier on real ``{'image',
    'label'}`` examples through ``core.train.train``."""
    first = source[0]
    if "image" not in first or "label" not in first:
        raise ValueError(f"source: expected examples with 'image' and 'label', got {sorted(first)}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: expected at least 2 classes")
    in_features = math.prod(np.shape(first["image"]))
    model_config = ClassifierConfig(in_features=in_features, hidden=config.hidden,
                                    depth=config.depth, num_classes=num_classes)
    train_config = TrainConfig(
        steps=config.steps, batch_size=config.batch_size, seed=config.seed, log_every=50,
        workdir=str(workdir), progress=False, tensorboard=False, async_checkpoint=False,
    )
    iterator = data_lib.batches(source, config.batch_size, seed=config.seed)
    result = train(
        lambda: MLPClassifier(model_config, nnx.Rngs(config.seed)),
        classification_loss,
        optax.adamw(config.learning_rate, weight_decay=config.weight_decay),
        iterator,
        train_config,
        mesh,
    )
    return result.model


@nnx.jit
def _logits_and_features(model: MLPClassifier, images):
    features = model.features(images)
    return model.head(features), features


def classify(model: MLPClassifier, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, classes]`` and penultimate features ``[N, hidden]`` of ``images [N, ...]``
    (batches padded to ``batch_size`` so the network compiles once)."""
    images = np.asarray(images, np.float32)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images: expected a non-empty batch [N, ...], got shape {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError("images: contains NaN or infinite values")
    logits, features = [], []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        pad = batch_size - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out_logits, out_features = _logits_and_features(model, jnp.asarray(chunk))
        logits.append(np.asarray(out_logits)[: batch_size - pad])
        features.append(np.asarray(out_features)[: batch_size - pad])
    return np.concatenate(logits), np.concatenate(features)


def sample_quality(model: MLPClassifier, images, labels, reference_images) -> dict[str, float]:
    """``accuracy`` of ``images`` against their conditioning ``labels`` and ``frechet_distance``
    of their features to those of ``reference_images`` (real, held out)."""
    labels = np.asarray(labels)
    if labels.shape != (np.shape(images)[0],):
        raise ValueError(f"labels: expected shape ({np.shape(images)[0]},), got {labels.shape}")
    logits, features = classify(model, images)
    _, reference = classify(model, reference_images)
    return {
        "accuracy": float(np.mean(logits.argmax(-1) == labels)),
        "frechet_distance": float(frechet_distance(features, reference)),
    }
