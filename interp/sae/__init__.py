"""Sparse autoencoders: the SAELens family (ReLU+L1, TopK+AuxK, BatchTopK, JumpReLU, Gated) and
P13 MP-SAE as Flax NNX modules, their training tricks, metrics and SAELens-format interop."""

from interp.sae.autoencoder import SparseAutoencoder
from interp.sae.batchtopk import BatchTopKSAE
from interp.sae.gated import GatedSAE
from interp.sae.jumprelu import JumpReLUSAE
from interp.sae.matching_pursuit import MatchingPursuitSAE, matching_pursuit
from interp.sae.relu import ReLUSAE
from interp.sae.topk import TopKSAE

__all__ = [
    "BatchTopKSAE",
    "GatedSAE",
    "JumpReLUSAE",
    "MatchingPursuitSAE",
    "ReLUSAE",
    "SparseAutoencoder",
    "TopKSAE",
    "matching_pursuit",
]
