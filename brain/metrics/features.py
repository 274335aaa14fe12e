"""Pluggable frozen feature extractors for the feature-based reconstruction metrics.

The papers' table uses AlexNet(2)/(5), InceptionV3, CLIP ViT-L/14 (2-way identification) and
EfficientNet-B1, SwAV (correlation distance); none of those weights ship with this project, so
any object satisfying :class:`FeatureExtractor` (a ``name``, a ``layer`` and
``__call__(images) -> (N, ...) features``) can be plugged in by a user who has them.
:class:`PixelFeatures` (downsampled pixels) is the built-in extractor that needs no weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from brain.metrics.identification import correlation_distance, two_way_identification
from brain.metrics.image import pixcorr, resize_images, ssim


@runtime_checkable
class FeatureExtractor(Protocol):
    """A frozen feature extractor: ``(N, H, W, 3)`` images in [0, 1] -> ``(N, ...)`` features."""

    name: str
    layer: str | None

    def __call__(self, images: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class PixelFeatures:
    """Pixels resized to ``size x size`` (a weight-free extractor for tests and simulations)."""

    size: int = 32
    name: str = "pixels"
    layer: str | None = None

    def __call__(self, images: jax.Array) -> jax.Array:
        return resize_images(jnp.asarray(images, jnp.float32), self.size).reshape(len(images), -1)


def _check_extractor(extractor) -> FeatureExtractor:
    if not isinstance(extractor, FeatureExtractor):
        raise TypeError(
            f"{extractor!r} is not a FeatureExtractor: expected `name`, `layer` and `__call__(images)`"
        )
    return extractor


def _label(extractor: FeatureExtractor) -> str:
    return extractor.name if extractor.layer is None else f"{extractor.name}({extractor.layer})"


def reconstruction_metrics(
    recons,
    images,
    identification: Sequence[FeatureExtractor] = (),
    distance: Sequence[FeatureExtractor] = (),
    size: int | None = 425,
) -> Mapping[str, float]:
    """PixCorr, SSIM, 2-way identification per ``identification`` extractor and correlation
    distance per ``distance`` extractor, keyed by metric name (MindEye's evaluation table)."""
    out = {"PixCorr": float(pixcorr(recons, images, size)), "SSIM": float(ssim(recons, images, size))}
    for extractor in map(_check_extractor, identification):
        out[f"2-way {_label(extractor)}"] = float(
            two_way_identification(extractor(recons), extractor(images))
        )
    for extractor in map(_check_extractor, distance):
        out[f"distance {_label(extractor)}"] = float(
            correlation_distance(extractor(recons), extractor(images))
        )
    return out
