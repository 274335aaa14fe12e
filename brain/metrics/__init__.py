"""The field's evaluation metrics, as the reference code (MindEye/MindEye2) computes them."""

from brain.metrics.features import FeatureExtractor, PixelFeatures, reconstruction_metrics
from brain.metrics.identification import correlation_distance, feature_correlation, two_way_identification
from brain.metrics.image import pixcorr, rgb_to_gray, ssim, ssim_gray
from brain.metrics.noise_ceiling import ncsnr, noise_ceiling, noise_ceiling_from_ncsnr
from brain.metrics.retrieval import cosine_similarity_matrix, retrieval, topk_accuracy

__all__ = [
    "FeatureExtractor",
    "PixelFeatures",
    "correlation_distance",
    "cosine_similarity_matrix",
    "feature_correlation",
    "ncsnr",
    "noise_ceiling",
    "noise_ceiling_from_ncsnr",
    "pixcorr",
    "reconstruction_metrics",
    "retrieval",
    "rgb_to_gray",
    "ssim",
    "ssim_gray",
    "topk_accuracy",
    "two_way_identification",
]
