"""FVU-vs-L0 frontier of every SAE variant on all-MiniLM-L6-v2's middle residual stream.

Activations: ``blocks.2.hook_resid_post`` (= HF ``hidden_states[3]``, the middle of 6 layers) of
sentences from the Python standard library's docstrings (:func:`interp.sae_experiment.
docstring_sentences`), padding dropped, scaled to mean norm sqrt(384); the last 20 % of the
sentences are held out. Each variant (ReLU + L1, TopK + AuxK, BatchTopK, JumpReLU, Gated, P13
MP-SAE) is trained at several sparsity settings with Adam (unit-norm decoder, clip 1.0) through
:func:`interp.sae.training.train_on_array`; FVU and L0 are measured on the held-out tokens (for
BatchTopK with its inference threshold, i.e. as a JumpReLU).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import core  # noqa: F401
from core.tables import Table, write_table
from interp.capture import run_with_hooks
from interp.models.minilm import load_minilm, load_tokenizer, tokenize
from interp.sae.metrics import fvu, l0
from interp.sae.training import estimate_input_scale, init_b_dec, sae_optimizer, train_on_array
from interp.sae_experiment import SAEConfig, build_sae, docstring_sentences

HOOK = "blocks.2.hook_resid_post"
# (architecture, sparsity knob): k for the k-sparse variants, the coefficient otherwise
SETTINGS = {
    "standard": [("sparsity_coefficient", c) for c in (0.3, 1.0, 3.0)],
    "topk": [("k", k) for k in (8, 32, 64)],
    "batchtopk": [("k", k) for k in (8, 32, 64)],
    "jumprelu": [("sparsity_coefficient", c) for c in (0.03, 0.1, 0.3)],
    "gated": [("sparsity_coefficient", c) for c in (0.3, 1.0, 3.0)],
    "matching_pursuit": [("k", k) for k in (8, 32, 64)],
}
# the quick form: fewer points (each job compiles its own training scan)
QUICK_SETTINGS = {
    "standard": [("sparsity_coefficient", 0.3), ("sparsity_coefficient", 3.0)],
    "topk": [("k", 8), ("k", 64)],
    "batchtopk": [("k", 32)],
    "jumprelu": [("sparsity_coefficient", 0.1)],
    "gated": [("sparsity_coefficient", 1.0)],
    "matching_pursuit": [("k", 16)],
}
NAMES = {"standard": "ReLU + L1", "topk": "TopK", "batchtopk": "BatchTopK",
         "jumprelu": "JumpReLU", "gated": "Gated", "matching_pursuit": "MP-SAE (P13)"}


def minilm_activations(n_sentences: int, max_length: int, batch: int = 32) -> tuple[jax.Array,
                                                                                   int]:
    """``(rows [tokens, 384], n_train_rows)``: real-token residuals, train rows first."""
    model, tokenizer = load_minilm(), load_tokenizer(max_length=max_length)
    sentences = docstring_sentences(n_sentences)
    ids, mask = tokenize(tokenizer, sentences, length=max_length)
    chunks = []
    for start in tqdm(range(0, len(sentences), batch), desc="MiniLM activations", leave=False):
        _, cache = run_with_hooks(model, ids[start:start + batch], mask[start:start + batch],
                                  capture=(HOOK,), stop_at_layer=3)
        acts = np.asarray(cache[HOOK])
        chunks.append(acts[mask[start:start + batch] > 0])
    n_train_sentences = int(0.8 * len(sentences))
    n_train = int(mask[:n_train_sentences].sum())
    return jnp.asarray(np.concatenate(chunks)), n_train


def run(quick: bool, results_dir: Path) -> list[Path]:
    n_sentences, max_length = (300, 32) if quick else (8000, 64)
    expansion, steps, batch = (2, 100, 256) if quick else (8, 4000, 1024)
    settings = QUICK_SETTINGS if quick else SETTINGS
    x, n_train = minilm_activations(n_sentences, max_length)
    x = x * estimate_input_scale(x[:n_train])
    train, held_out = x[:n_train], x[n_train:]
    rows = []
    jobs = [(arch, knob, value) for arch, options in settings.items() for knob, value in options]
    for arch, knob, value in tqdm(jobs, desc="interp_sae_frontier"):
        config = SAEConfig(architecture=arch, expansion=expansion, dead_steps=steps // 4,
                           **{knob: value})
        sae = build_sae(config, x.shape[1], seed=0)
        init_b_dec(sae, train[:4096], "geometric_median")
        lr = 1e-3 if quick else 3e-4
        history = train_on_array(sae, train, sae_optimizer(lr), steps, batch)
        codes = sae.encode(held_out)
        rows.append({"variant": NAMES[arch], knob.replace("sparsity_", ""): value,
                     "L0": float(l0(codes)), "FVU": float(fvu(held_out, sae.decode(codes))),
                     "train FVU (last step)": float(history["fvu"][-1])})
    notes = (f"{'quick' if quick else 'full'} run on {jax.devices()[0].platform}: "
             f"all-MiniLM-L6-v2 {HOOK} on {n_sentences} stdlib docstring sentences (<= "
             f"{max_length} tokens; {n_train} train / {held_out.shape[0]} held-out tokens), "
             f"width {expansion} x 384, {steps} steps of {batch} tokens, Adam lr "
             f"{1e-3 if quick else 3e-4}, inputs scaled to mean norm sqrt(384). No published "
             "numbers exist for this model and layer, so there is no paper column. The quick form "
             "trains far from convergence (one or two points per variant); compare variants, not "
             "absolute values. JumpReLU's log-threshold (init 0.01) moves about lr per Adam "
             "step, so a short run leaves it nearly dense whatever its coefficient.")
    table = Table(name="interp_sae_frontier",
                  title="FVU vs L0 of every SAE variant on MiniLM's middle residual stream",
                  columns=["variant", "k", "coefficient", "L0", "FVU", "train FVU (last step)"],
                  rows=rows, notes=notes)

    def plot(ax):
        for name in NAMES.values():
            points = sorted((r["L0"], r["FVU"]) for r in rows if r["variant"] == name)
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("L0 (active latents per token, held out)")
        ax.set_ylabel("FVU (held out)")
        ax.set_title(f"MiniLM {HOOK}")
        ax.legend(fontsize=7)

    return [write_table(table, results_dir, plot=plot)]
