"""Brain decoding: NSD data formats and a multi-subject fMRI simulator, the field's metrics,
contrastive and cycle losses, closed-form ridge (P30/P37 stages) and adaptive voxel pooling (P09).

Modules: ``metrics`` (PixCorr, SSIM, 2-way identification, correlation distance, retrieval,
top-k, noise ceiling, pluggable feature extractors), ``ridge``, ``feature_regression``,
``losses``, ``pooling``, ``simulator``, ``trials`` (z-scoring, repeat averaging), ``formats``
(MindEye2, MindEye1/MindBridge and Brain-Diffuser layouts, grain sources).
"""
