"""Cross-subject fMRI decoders (NNX): P09 MindBridge, P02 subject adapters, a MindEye2-style
shared-subject model and per-subject baselines; ``blocks`` holds their shared layers."""
