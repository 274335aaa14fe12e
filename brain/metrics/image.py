"""Low-level image metrics of the NSD reconstruction literature: PixCorr and SSIM.

Definitions follow MindEye/MindEye2's evaluation code (and Brain-Diffuser/MindBridge, which share
it): both images are resized to 425 x 425; PixCorr is the Pearson correlation of the flattened RGB
pixels of each (ground truth, reconstruction) pair, averaged over pairs; SSIM converts to
grayscale with scikit-image's ``rgb2gray`` weights and computes scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)`` per pair, averaged over pairs (the reference also passes ``multichannel=True``,
which has no effect on 2-D grayscale arrays).

Images are channels-last ``(N, H, W, 3)`` floats in ``[0, 1]``.

Deviations: a pair with a constant image (e.g. a prediction clipped to all ones) counts as
PixCorr 0, where the reference's ``np.corrcoef`` gives nan and so a nan mean; the resize uses
``jax.image.resize`` (bilinear, antialiased) where the reference uses torchvision's
``Resize(425, bilinear)``; the two differ slightly at the pixel level. Pass
``size=None`` to skip resizing (then SSIM equals scikit-image's to float precision).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from brain.input_checks import check_finite, check_pair

REFERENCE_SIZE = 425
RGB_TO_GRAY = (0.2125, 0.7154, 0.0721)  # scikit-image rgb2gray (ITU-R BT.709)
PAIRS_PER_CHUNK = 32


def _check_images(name: str, images) -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name}: expected channels-last RGB images (N, H, W, 3), got shape {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one image, got an empty batch")
    return check_finite(name, images.astype(jnp.result_type(images.dtype, jnp.float32)))


def resize_images(images: jax.Array, size: int | None = REFERENCE_SIZE) -> jax.Array:
    """Bilinear (antialiased) resize of ``(N, H, W, C)`` images to ``size x size``; None keeps them."""
    if size is None or images.shape[1:3] == (size, size):
        return images
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]), "bilinear")


def rgb_to_gray(images: jax.Array) -> jax.Array:
    """scikit-image ``rgb2gray``: ``(..., 3) -> (...)`` with the BT.709 luma weights."""
    return images @ jnp.asarray(RGB_TO_GRAY, images.dtype)


def _pearson_rows(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson r along the last axis; 0 where either side is constant (r undefined)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    norms = (a * a).sum(-1) * (b * b).sum(-1)
    return jnp.where(norms > 0, (a * b).sum(-1) / jnp.sqrt(jnp.where(norms > 0, norms, 1.0)), 0.0)


def pixcorr(recons, images, size: int | None = REFERENCE_SIZE) -> jax.Array:
    """Mean over pairs of the Pearson r between flattened RGB pixels (MindEye ``PixCorr``)."""
    recons, images = _check_images("recons", recons), _check_images("images", images)
    check_pair("recons", recons, "images", images, same_shape=True)
    return _per_pair(_pixcorr_pair, recons, images, size).mean()


def _pixcorr_pair(recon: jax.Array, image: jax.Array, size: int | None) -> jax.Array:
    r, g = (resize_images(x[None], size).reshape(-1) for x in (recon, image))
    return _pearson_rows(g, r)


@functools.partial(jax.jit, static_argnames=("score", "size"))
def _per_pair(score, recons: jax.Array, images: jax.Array, size: int | None) -> jax.Array:
    """``score(recon, image, size)`` of every pair, compiled, :data:`PAIRS_PER_CHUNK` pairs at a time
    (1000 pairs at 425 x 425 would otherwise hold several GB of resized and filtered images)."""
    return jax.lax.map(lambda pair: score(*pair, size), (recons, images), batch_size=PAIRS_PER_CHUNK)


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """``scipy.ndimage``'s 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, sums to 1."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _gaussian_filter(image: jax.Array, kernel: np.ndarray) -> jax.Array:
    """Separable Gaussian filter of an ``(H, W)`` image with scipy's ``mode='reflect'`` edges."""
    radius = (len(kernel) - 1) // 2
    padded = jnp.pad(image, radius, mode="symmetric")  # scipy 'reflect' == numpy 'symmetric'
    h, w = image.shape
    k = jnp.asarray(kernel, image.dtype)
    rows = sum(k[i] * padded[i : i + h, :] for i in range(len(kernel)))
    return sum(k[i] * rows[:, i : i + w] for i in range(len(kernel)))


def ssim_gray(
    im1: jax.Array,
    im2: jax.Array,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """SSIM of two ``(H, W)`` grayscale images, as scikit-image with Gaussian weights.

    Population covariances (``use_sample_covariance=False``), an 11-tap Gaussian (truncate 3.5),
    and the mean over the map with a filter-radius border cropped, exactly as
    ``skimage.metrics.structural_similarity``.
    """
    kernel = _gaussian_kernel(sigma, truncate=3.5)
    if min(im1.shape) < len(kernel):
        raise ValueError(f"images of shape {im1.shape} are smaller than the {len(kernel)}-tap window")
    filt = lambda x: _gaussian_filter(x, kernel)  # noqa: E731
    ux, uy = filt(im1), filt(im2)
    vx = filt(im1 * im1) - ux * ux
    vy = filt(im2 * im2) - uy * uy
    vxy = filt(im1 * im2) - ux * uy
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (len(kernel) - 1) // 2
    return s[pad:-pad, pad:-pad].mean()


def ssim(recons, images, size: int | None = REFERENCE_SIZE) -> jax.Array:
    """Mean over pairs of grayscale SSIM at ``size x size`` (MindEye's ``SSIM``)."""
    recons, images = _check_images("recons", recons), _check_images("images", images)
    check_pair("recons", recons, "images", images, same_shape=True)
    return _per_pair(_ssim_pair, recons, images, size).mean()


def _ssim_pair(recon: jax.Array, image: jax.Array, size: int | None) -> jax.Array:
    return ssim_gray(*(rgb_to_gray(resize_images(x[None], size))[0] for x in (recon, image)))
