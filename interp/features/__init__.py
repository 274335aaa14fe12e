"""Feature decompositions and counts: P41 effective number of features, P34 semi-NMF."""

from interp.features.effective_features import (effective_features, feature_distribution,
                                                superposition_ratio)
from interp.features.snmf import SNMFResult, kl_steering_scale, semi_nmf, steering_direction

__all__ = ["SNMFResult", "effective_features", "feature_distribution", "kl_steering_scale",
           "semi_nmf", "steering_direction", "superposition_ratio"]
