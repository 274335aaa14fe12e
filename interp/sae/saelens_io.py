"""Save and load SAEs in SAELens's on-disk layout: ``cfg.json`` + ``sae_weights.safetensors``.

Tensors use SAELens's names and shapes (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae,
d_in]``, ``b_dec``; ``threshold`` for JumpReLU; ``b_gate``, ``r_mag``, ``b_mag`` for Gated;
``W_dec``/``b_dec`` only for matching pursuit). ``cfg.json`` holds ``architecture``, ``d_in``,
``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``, ``normalize_activations`` ("none":
fold any input scale first with ``fold_input_scale``), ``reshape_activations``, ``meta`` and the
architecture's keys (``k`` for topk; ``residual_threshold``, ``max_iterations``,
``stop_on_duplicate_support`` for matching_pursuit). A BatchTopK SAE is written as ``jumprelu``
with its threshold, as SAELens does. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from interp.sae.autoencoder import SparseAutoencoder
from interp.sae.gated import GatedSAE
from interp.sae.jumprelu import JumpReLUSAE
from interp.sae.matching_pursuit import MatchingPursuitSAE
from interp.sae.relu import ReLUSAE
from interp.sae.topk import TopKSAE

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
ARCHITECTURES = {"standard": ReLUSAE, "topk": TopKSAE, "jumprelu": JumpReLUSAE,
                 "gated": GatedSAE, "matching_pursuit": MatchingPursuitSAE}
_SUPPORTED_NORMALIZATION = ("none",)


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_saelens(model: SparseAutoencoder, path: str | Path,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` in SAELens's layout; return the folder."""
    if not isinstance(model, SparseAutoencoder):
        raise TypeError(f"model: expected a SparseAutoencoder, got {type(model).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = {k: np.ascontiguousarray(np.asarray(v, np.float32))
               for k, v in model.saelens_weights().items()}
    cfg = {"d_in": model.d_in, "d_sae": model.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none", "meta": dict(meta or {}), **model.saelens_config()}
    _write_atomic(path / WEIGHTS_FILENAME, lambda tmp: save_file(weights, tmp))

    def write_cfg(tmp):
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=2)

    _write_atomic(path / CFG_FILENAME, write_cfg)
    return path


def load_saelens(path: str | Path, seed: int = 0) -> SparseAutoencoder:
    """Build the SAE stored in SAELens's layout at ``path`` (folder with cfg + weights)."""
    path = Path(path)
    for name in (CFG_FILENAME, WEIGHTS_FILENAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing (expected SAELens layout "
                                    f"{CFG_FILENAME} + {WEIGHTS_FILENAME})")
    cfg = json.loads((path / CFG_FILENAME).read_text())
    for key in ("architecture", "d_in", "d_sae"):
        if key not in cfg:
            raise ValueError(f"{path / CFG_FILENAME}: missing key {key!r}")
    arch = cfg["architecture"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"architecture={arch!r}: expected one of {sorted(ARCHITECTURES)}")
    if cfg.get("normalize_activations", "none") not in _SUPPORTED_NORMALIZATION:
        raise ValueError(f"normalize_activations={cfg['normalize_activations']!r}: only 'none' "
                         "is supported (fold the scaling into the weights before saving)")
    if not cfg.get("apply_b_dec_to_input", True):
        raise ValueError("apply_b_dec_to_input=False: not supported (expected True)")
    kwargs: dict[str, Any] = {}
    if arch == "topk":
        kwargs["k"] = int(cfg["k"])
    if arch == "matching_pursuit":
        kwargs = {"k": int(cfg.get("max_iterations") or cfg["d_in"]),
                  "residual_threshold": float(cfg.get("residual_threshold", 0.0)),
                  "stop_on_duplicate_support": bool(cfg.get("stop_on_duplicate_support", True))}
    model = ARCHITECTURES[arch](int(cfg["d_in"]), int(cfg["d_sae"]), rngs=nnx.Rngs(seed),
                                **kwargs)
    weights = load_file(str(path / WEIGHTS_FILENAME))
    expected = set(model.saelens_weights())
    if set(weights) != expected:
        raise ValueError(f"{path / WEIGHTS_FILENAME}: tensors {sorted(weights)}, expected "
                         f"{sorted(expected)} for architecture {arch!r}")
    model.load_saelens_weights(weights)
    return model
