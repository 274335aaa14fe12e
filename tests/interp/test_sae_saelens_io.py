"""SAELens layout: cfg.json + sae_weights.safetensors round trips and file-level checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import core  # noqa: F401
from interp.sae import (BatchTopKSAE, GatedSAE, JumpReLUSAE, MatchingPursuitSAE, ReLUSAE,
                        TopKSAE)
from interp.sae.saelens_io import load_saelens, save_saelens
from interp.sae.synthetic import randomize_parameters

ALL = [(ReLUSAE, {}, "standard"), (TopKSAE, {"k": 3}, "topk"),
       (BatchTopKSAE, {"k": 3}, "jumprelu"), (JumpReLUSAE, {}, "jumprelu"),
       (GatedSAE, {}, "gated"), (MatchingPursuitSAE, {"k": 3}, "matching_pursuit")]


@pytest.mark.parametrize("cls,kwargs,arch", ALL, ids=[c.__name__ for c, _, _ in ALL])
def test_round_trip(tmp_path, cls, kwargs, arch):
    x = 2.0 * jax.random.normal(jax.random.key(0), (256, 12)) + 0.5
    model = cls(12, 24, rngs=nnx.Rngs(0), **kwargs)
    randomize_parameters(model, jax.random.key(7))
    save_saelens(model, tmp_path / "sae", meta={"hook_name": "blocks.0.hook_resid_post"})
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["d_in"] == 12 and cfg["d_sae"] == 24
    assert cfg["meta"]["hook_name"] == "blocks.0.hook_resid_post"
    tensors = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert tensors["W_dec"].shape == (24, 12) and tensors["b_dec"].shape == (12,)
    if "W_enc" in tensors:
        assert tensors["W_enc"].shape == (12, 24)
    if arch == "jumprelu":
        assert tensors["threshold"].shape == (24,)
    loaded = load_saelens(tmp_path / "sae")
    np.testing.assert_allclose(loaded.encode(x), model.encode(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_loads_file_written_in_saelens_layout(tmp_path):
    """A JumpReLU SAE written by hand in SAELens's names and shapes encodes as SAELens does."""
    rng = np.random.default_rng(0)
    weights = {"W_enc": rng.normal(size=(5, 7)).astype(np.float32),
               "b_enc": rng.normal(size=7).astype(np.float32),
               "W_dec": rng.normal(size=(7, 5)).astype(np.float32),
               "b_dec": rng.normal(size=5).astype(np.float32),
               "threshold": np.full(7, 0.3, np.float32)}
    (tmp_path / "cfg.json").write_text(json.dumps(
        {"architecture": "jumprelu", "d_in": 5, "d_sae": 7, "apply_b_dec_to_input": True,
         "normalize_activations": "none"}))
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    model = load_saelens(tmp_path)
    x = rng.normal(size=(9, 5)).astype(np.float32)
    pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
    expected = np.maximum(pre, 0) * (pre > 0.3)
    np.testing.assert_allclose(model.encode(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.decode(jnp.asarray(expected)),
                               expected @ weights["W_dec"] + weights["b_dec"], rtol=1e-5)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_saelens(tmp_path)
    model = TopKSAE(4, 8, rngs=nnx.Rngs(0), k=2)
    save_saelens(model, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "mystery"}))
    with pytest.raises(ValueError, match="architecture"):
        load_saelens(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(ValueError, match="normalize_activations"):
        load_saelens(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 9}))
    with pytest.raises(ValueError, match="shape"):
        load_saelens(tmp_path)
    with pytest.raises(TypeError, match="SparseAutoencoder"):
        save_saelens("not a model", tmp_path)
