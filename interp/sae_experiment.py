"""Train a sparse autoencoder on a real model's activations through ``core``'s training loop.

    python -m interp.sae_experiment tiny --train.workdir runs/sae_gpt          # train / resume
    python -m interp.sae_experiment minilm_tiny --train.workdir runs/sae_minilm

One run: (1) obtain the source model: the stdlib GPT of :mod:`interp.stdlib_lm` (trained or
resumed in ``{workdir}/lm``) or all-MiniLM-L6-v2; (2) harvest its activations at ``source.hook``
with :func:`interp.activation_store.harvest` into ``{workdir}/activations`` (resumable); (3)
train the SAE with :func:`core.train.train` (checkpoints, exact resume, metrics) on the store's
rows scaled by ``s = sqrt(d_in) / E||x||`` (SAELens ``expected_average_only_in``), ``b_dec``
initialised at the geometric median (or mean) of the first scaled rows; (4) fold ``s`` back into
the weights and export in SAELens's layout to ``{workdir}/saelens``; (5) evaluate on held-out
inputs: L0, FVU, and for the GPT the spliced-in CE/KL scores (the hook replaced by the SAE
reconstruction through :class:`interp.capture.Intervention`, against clean and zero ablation)
plus P41's effective number of features per layer (and for ``attn.hook_z``, P12's per-head weight
attribution summary); for MiniLM the cosine between the sentence
embeddings with the SAE spliced in and clean. The metrics go to ``{workdir}/eval.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import config as config_lib, data, experiment, mesh as mesh_lib
from core.train import TrainConfig, TrainResult, train
from interp import stdlib_lm
from interp.activation_store import ActivationStore, harvest
from interp.capture import Intervention, run_with_hooks
from interp.features.effective_features import effective_features
from interp.head_attribution import sae_head_attribution
from interp.sae import (BatchTopKSAE, GatedSAE, JumpReLUSAE, MatchingPursuitSAE, ReLUSAE,
                        SparseAutoencoder, TopKSAE)
from interp.sae.metrics import explained_variance, fvu, l0, spliced_scores
from interp.sae.saelens_io import save_saelens
from interp.sae.training import init_b_dec, sae_optimizer, train_on_array

ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu", "gated", "matching_pursuit")


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """Which SAE: ``architecture`` (SAELens names), width ``expansion * d_in``, sparsity."""

    architecture: Literal["standard", "topk", "batchtopk", "jumprelu", "gated",
                          "matching_pursuit"] = "topk"
    expansion: int = 4
    k: int = 8
    sparsity_coefficient: float = 1.0
    dead_steps: int = 200
    b_dec_init: Literal["geometric_median", "mean"] = "geometric_median"
    b_dec_sample: int = 4096


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where activations come from. ``model='stdlib_gpt'`` trains/loads the stdlib LM (preset
    ``lm_preset``, ``lm_steps`` steps) in ``{workdir}/lm``; ``'minilm'`` loads the shipped
    all-MiniLM-L6-v2 and harvests sentences of the stdlib docstrings."""

    model: Literal["stdlib_gpt", "minilm"] = "stdlib_gpt"
    hook: str = "blocks.1.hook_resid_post"
    lm_preset: str = "tiny"
    lm_steps: int = 400
    harvest_batches: int = 64
    harvest_batch_size: int = 16
    max_length: int = 64
    eval_sequences: int = 32
    shard_rows: int = 65536


@dataclasses.dataclass(frozen=True)
class SAEExperimentConfig:
    source: SourceConfig = SourceConfig()
    sae: SAEConfig = SAEConfig()
    train: TrainConfig = TrainConfig(steps=1000, batch_size=256, log_every=50,
                                     checkpoint_every=250, keep_checkpoints=2)
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig()
    learning_rate: float = 1e-3
    clip: float = 1.0
    effective_feature_steps: int = 600
    distributed: bool = False


PRESETS = {
    "tiny": ("TopK SAE (4x, k=8) on the tiny stdlib GPT's blocks.1.hook_resid_post; minutes on "
             "2 CPU cores", SAEExperimentConfig()),
    "tiny_attn": (
        "P12: TopK SAE (4x, k=8) on the tiny stdlib GPT's concatenated blocks.1.attn.hook_z, "
        "with per-head attribution", SAEExperimentConfig(
            source=SourceConfig(hook="blocks.1.attn.hook_z"))),
    "minilm_tiny": (
        "TopK SAE (4x, k=16) on all-MiniLM-L6-v2's middle residual (blocks.2.hook_resid_post)",
        SAEExperimentConfig(
            source=SourceConfig(model="minilm", hook="blocks.2.hook_resid_post",
                                harvest_batches=32, harvest_batch_size=16, eval_sequences=64),
            sae=SAEConfig(k=16))),
    "paper": (
        "the largest local setting (P12 itself used GPT-2 Small, 24576 latents): 32x TopK SAE "
        "(k=32) on the small stdlib GPT's layer-2 residual, 20k steps of 4096 tokens",
        SAEExperimentConfig(
            source=SourceConfig(hook="blocks.2.hook_resid_post", lm_preset="small",
                                lm_steps=5000, harvest_batches=4096, harvest_batch_size=32,
                                eval_sequences=128),
            sae=SAEConfig(expansion=32, k=32, dead_steps=1000),
            train=TrainConfig(steps=20000, batch_size=4096, log_every=100,
                              checkpoint_every=1000, keep_checkpoints=2),
            learning_rate=2e-4)),
}


def build_sae(config: SAEConfig, d_in: int, seed: int) -> SparseAutoencoder:
    """The SAE of ``config`` for inputs of width ``d_in`` (not yet ``b_dec``-initialised)."""
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={config.architecture!r}: expected one of {ARCHITECTURES}")
    if config.expansion <= 0:
        raise ValueError(f"expansion={config.expansion!r}: expected a positive int")
    d_sae, rngs = config.expansion * d_in, nnx.Rngs(seed)
    common = {"rngs": rngs, "dead_steps": config.dead_steps}
    coef = config.sparsity_coefficient
    return {
        "standard": lambda: ReLUSAE(d_in, d_sae, l1_coefficient=coef, **common),
        "topk": lambda: TopKSAE(d_in, d_sae, k=config.k, **common),
        "batchtopk": lambda: BatchTopKSAE(d_in, d_sae, k=config.k, **common),
        "jumprelu": lambda: JumpReLUSAE(d_in, d_sae, l0_coefficient=coef, **common),
        "gated": lambda: GatedSAE(d_in, d_sae, l1_coefficient=coef, **common),
        "matching_pursuit": lambda: MatchingPursuitSAE(d_in, d_sae, k=config.k, **common),
    }[config.architecture]()


# ----------------------------------------------------------------------------- source models


def docstring_sentences(n: int, min_chars: int = 20, max_files: int | None = None) -> list[str]:
    """The first ``n`` sentences (split on '. ' within paragraphs) of the stdlib docstrings."""
    from interp.text import stdlib_docstrings

    if n <= 0:
        raise ValueError(f"n={n!r}: expected a positive number of sentences")
    out: list[str] = []
    for doc in stdlib_docstrings(max_files=max_files):
        for paragraph in doc.split("\n\n"):
            for sentence in " ".join(paragraph.split()).split(". "):
                if len(sentence) >= min_chars:
                    out.append(sentence)
                    if len(out) == n:
                        return out
    return out


def load_source(config: SAEExperimentConfig, workdir: Path):
    """``(model, harvest batches, eval inputs)`` for the configured source model.

    GPT: batches ``[batch, n_ctx]`` of training rows, eval inputs = held-out rows ``[n, n_ctx +
    1]``. MiniLM: ``(ids, mask)`` batches padded to ``max_length``; eval inputs likewise.
    """
    src = config.source
    n_train = src.harvest_batches * src.harvest_batch_size
    if src.model == "stdlib_gpt":
        _, lm_config = stdlib_lm.PRESETS[src.lm_preset]
        lm_config = config_lib.override(lm_config, {
            "train.workdir": str(workdir / "lm"), "train.steps": src.lm_steps,
            "train.progress": config.train.progress, "mesh": config.mesh})
        model = stdlib_lm.run(lm_config).model
        train_rows, heldout = stdlib_lm.splits(lm_config)
        if len(train_rows) < n_train or len(heldout) < src.eval_sequences:
            raise ValueError(f"source: the corpus has {len(train_rows)} training / "
                             f"{len(heldout)} held-out rows; fewer than requested")
        batches = train_rows[:n_train, :-1].reshape(src.harvest_batches,
                                                    src.harvest_batch_size, -1)
        return model, batches, jnp.asarray(heldout[:src.eval_sequences])
    from interp.models.minilm import load_minilm, load_tokenizer, tokenize

    model, tokenizer = load_minilm(), load_tokenizer(max_length=src.max_length)
    sentences = docstring_sentences(n_train + src.eval_sequences)
    if len(sentences) < n_train + src.eval_sequences:
        raise ValueError(f"source: only {len(sentences)} docstring sentences available")
    ids, mask = tokenize(tokenizer, sentences, length=src.max_length)
    batches = [(ids[i:i + src.harvest_batch_size], mask[i:i + src.harvest_batch_size])
               for i in range(0, n_train, src.harvest_batch_size)]
    return model, batches, (jnp.asarray(ids[n_train:]), jnp.asarray(mask[n_train:]))


# ----------------------------------------------------------------------------- training


def _first_rows(store: ActivationStore, hook: str, n: int) -> np.ndarray:
    rows, have = [], 0
    for chunk in store.chunks(hook, chunk_rows=n):
        rows.append(chunk[: n - have])
        have += len(rows[-1])
        if have >= n:
            break
    return np.concatenate(rows)


def train_sae(config: SAEExperimentConfig, store: ActivationStore) -> tuple[TrainResult, float]:
    """Train (or resume in ``config.train.workdir``) the SAE on ``store``'s rows at
    ``config.source.hook``; return ``(result, input scale)``. The model in the result still
    expects scaled inputs (see :func:`export_sae`)."""
    hook = config.source.hook
    scale = store.input_scale(hook)
    d_in = store.d(hook)
    sample = _first_rows(store, hook, config.sae.b_dec_sample) * scale

    def model_fn():
        model = build_sae(config.sae, d_in, config.train.seed)
        init_b_dec(model, jnp.asarray(sample), config.sae.b_dec_init)
        return model

    def loss_fn(model, batch, key):
        del key
        return model.loss(batch["activations"] * scale)

    mesh = mesh_lib.make_mesh(config.mesh)
    iterator = data.batches(store.source(hook), config.train.batch_size, seed=config.train.seed)
    optimizer = sae_optimizer(config.learning_rate, clip=config.clip)
    result = train(model_fn, loss_fn, optimizer, iterator, config.train, mesh,
                   run_config={**config_lib.to_dict(config), "input_scale": scale})
    return result, scale


def export_sae(model: SparseAutoencoder, scale: float, path: Path, meta: dict) -> SparseAutoencoder:
    """A host copy of ``model`` with the input scale folded in, saved in SAELens's layout."""
    graphdef, state = nnx.split(model)
    raw = nnx.merge(graphdef, jax.tree.map(lambda a: jnp.array(jax.device_get(a)), state))
    raw.fold_input_scale(scale)
    save_saelens(raw, path, meta={**meta, "input_scale_folded": scale})
    return raw


# ----------------------------------------------------------------------------- evaluation


def _check_hook(model, hook: str) -> None:
    if hook not in model.hook_names():
        raise ValueError(f"hook={hook!r}: not a capture point of {type(model).__name__}")


def _reconstruct(sae: SparseAutoencoder, acts: jax.Array):
    """``(acts [batch, pos, d], codes, reconstruction)``; trailing axes (``hook_z``'s ``[head,
    d_head]``) are flattened head-major, as the activation store does."""
    acts = acts.reshape(*acts.shape[:2], -1)
    if acts.shape[-1] != sae.d_in:
        raise ValueError(f"sae: d_in={sae.d_in}, but the hooked activation has {acts.shape[-1]} "
                         "entries per position")
    codes = sae.encode(acts)
    return acts, codes, sae.decode(codes)


def spliced_lm_scores(model, sae: SparseAutoencoder, tokens: jax.Array,
                      hook: str) -> dict[str, float]:
    """Spliced-in CE/KL scores of a causal LM on ``tokens [batch, pos + 1]``: the activation at
    ``hook`` replaced by the SAE reconstruction, by zeros, or kept (clean); plus L0/FVU there."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens: expected integer [batch, pos + 1] with pos >= 1, got "
                         f"{tokens.dtype} {tokens.shape}")
    _check_hook(model, hook)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    _, cache = run_with_hooks(model, inputs, capture=(hook,))
    acts, codes, recon = _reconstruct(sae, cache[hook])

    def logits_with(a):
        a = a.reshape(cache[hook].shape)
        return run_with_hooks(model, inputs, interventions={hook: Intervention.replace(a)})[0]

    scores = spliced_scores(logits_with, acts, recon, targets)
    return {**{k: float(v) for k, v in scores.items()}, "l0": float(l0(codes)),
            "fvu": float(fvu(acts, recon))}


def spliced_embedding_cosine(model, sae: SparseAutoencoder, input_ids: jax.Array,
                             attention_mask: jax.Array, hook: str) -> dict[str, float]:
    """Sentence-embedding fidelity of an encoder (MiniLM): mean cosine between the normalised
    mean-pooled embeddings with ``hook`` replaced by the SAE reconstruction and clean (and with
    zero ablation, as the floor); plus L0/FVU over the real (unmasked) tokens."""
    from interp.models.minilm import sentence_embedding

    _check_hook(model, hook)
    ids, mask = jnp.asarray(input_ids), jnp.asarray(attention_mask)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"input_ids {ids.shape} / attention_mask {mask.shape}: expected two "
                         "[batch, pos] arrays of one shape")
    hidden, cache = run_with_hooks(model, ids, mask, capture=(hook,))
    acts, codes, recon = _reconstruct(sae, cache[hook])
    clean = sentence_embedding(hidden, mask)

    def embedding_with(a):
        a = a.reshape(cache[hook].shape)
        out, _ = run_with_hooks(model, ids, mask, interventions={hook: Intervention.replace(a)})
        return sentence_embedding(out, mask)

    cos_sae = jnp.sum(clean * embedding_with(recon), -1)
    cos_zero = jnp.sum(clean * embedding_with(jnp.zeros_like(acts)), -1)
    real = mask.reshape(-1) > 0
    flat_acts, flat_recon = acts.reshape(-1, acts.shape[-1])[real], recon.reshape(
        -1, acts.shape[-1])[real]
    return {"cosine_sae": float(cos_sae.mean()), "cosine_sae_min": float(cos_sae.min()),
            "cosine_zero_ablation": float(cos_zero.mean()),
            "l0": float(l0(codes.reshape(-1, codes.shape[-1])[real])),
            "fvu": float(fvu(flat_acts, flat_recon)),
            "explained_variance": float(explained_variance(flat_acts, flat_recon))}


def effective_features_per_layer(model, tokens: jax.Array, sae_config: SAEConfig, steps: int,
                                 hook_template: str = "blocks.{layer}.hook_resid_post",
                                 batch_size: int = 256, learning_rate: float = 1e-3,
                                 seed: int = 0) -> list[dict[str, float]]:
    """P41 per layer: fit an SAE to each layer's activations at ``hook_template`` on ``tokens``
    (input-scaled, in memory) and report ``F = exp(H)`` of its codes and ``psi = F / N`` with
    ``N`` the layer's width (``d_model`` for the residual stream)."""
    n_layers = model.config.n_layers
    names = tuple(hook_template.format(layer=layer) for layer in range(n_layers))
    for name in names:
        _check_hook(model, name)
    _, cache = run_with_hooks(model, jnp.asarray(tokens), capture=names)
    rows = []
    for layer, name in enumerate(names):
        x = cache[name].reshape(-1, cache[name].shape[-1])
        x = x * (jnp.sqrt(x.shape[-1]) / jnp.mean(jnp.linalg.norm(x, axis=-1)))
        sae = build_sae(sae_config, x.shape[-1], seed)
        init_b_dec(sae, x[:4096], "mean")
        train_on_array(sae, x, sae_optimizer(learning_rate), steps, batch_size, seed=seed)
        codes = sae.encode(x)
        n_eff = float(effective_features(codes))
        rows.append({"layer": layer, "hook": name, "neurons": int(x.shape[-1]),
                     "effective_features": n_eff, "psi": n_eff / x.shape[-1],
                     "fvu": float(fvu(x, sae.decode(codes))), "l0": float(l0(codes))})
    return rows


# ----------------------------------------------------------------------------- the run


def run(config: SAEExperimentConfig) -> TrainResult:
    """Source model -> activation store -> SAE training (resumable) -> SAELens export -> eval.

    The evaluation summary is appended to ``result.evals`` and written to ``eval.json``; a
    preempted run (SIGTERM) returns right after its checkpoint, before export and evaluation.
    """
    if not config.train.workdir:
        raise ValueError("train.workdir: expected a directory (store, checkpoints and export "
                         "live there)")
    workdir = Path(config.train.workdir)
    model, batches, eval_inputs = load_source(config, workdir)
    _check_hook(model, config.source.hook)
    store = harvest(model, batches, workdir / "activations", config.source.hook,
                    shard_rows=config.source.shard_rows,
                    description={"source": dataclasses.asdict(config.source)},
                    progress=config.train.progress)
    result, scale = train_sae(config, store)
    if result.preempted:
        return result
    sae = export_sae(result.model, scale, workdir / "saelens",
                     meta={"hook_name": config.source.hook, "model_name": config.source.model})
    if config.source.model == "stdlib_gpt":
        metrics = spliced_lm_scores(model, sae, eval_inputs, config.source.hook)
        if config.source.hook.endswith("attn.hook_z"):
            share = sae_head_attribution(sae, model.config.n_heads).max(-1)
            metrics["head_attribution"] = {
                "mean_top_head_share": float(share.mean()),
                "fraction_single_head_features": float(jnp.mean(share > 0.8))}
        metrics["effective_features"] = effective_features_per_layer(
            model, eval_inputs[:, :-1], config.sae, config.effective_feature_steps,
            seed=config.train.seed)
    else:
        metrics = spliced_embedding_cosine(model, sae, *eval_inputs, config.source.hook)
    summary = {"step": result.step, "input_scale": scale, "store_rows": store.rows, **metrics}
    (workdir / "eval.json").write_text(json.dumps(summary, indent=2))
    result.evals.append(summary)
    return result


def _summary(result: TrainResult) -> str:
    summary = result.evals[-1]
    lines = [json.dumps({k: v for k, v in summary.items() if k != "effective_features"},
                        indent=2)]
    for row in summary.get("effective_features", []):
        lines.append(f"layer {row['layer']}: F = {row['effective_features']:.1f}, psi = "
                     f"{row['psi']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return experiment.main(PRESETS, run, argv, description=__doc__.splitlines()[0],
                           summary=_summary)


if __name__ == "__main__":
    sys.exit(main())
