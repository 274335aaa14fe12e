"""Planted-dictionary recovery: P13 MP-SAE vs TopK vs ReLU SAEs on flat and hierarchical data.

Flat: 64 random unit atoms in R^32, each active w.p. 3/64 with magnitude U(0.5, 1.5).
Hierarchical (P13's setting): 8 parents in R^16, each with 6 children orthogonal to it; a token
is ``a p_i + b c_ij`` (a ~ U(1.5, 2), b ~ U(0.5, 1)), so 56 atoms in 16 dimensions. Each SAE is
trained on the inputs scaled to mean norm sqrt(d_in) with Adam (3e-3 flat, 1e-3 hierarchical),
unit-norm decoder; recovery is the mean over planted atoms of the max cosine with a learned
atom. A second table isolates the encoder: with the planted dictionary itself, how often the
true child is the selected child (MP's explaining away vs a shallow TopK read-out, same k).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

import core  # noqa: F401
from core.tables import Table, write_table
from interp.sae import MatchingPursuitSAE, ReLUSAE, TopKSAE
from interp.sae.matching_pursuit import matching_pursuit
from interp.sae.metrics import dictionary_recovery, fvu, l0
from interp.sae.synthetic import (flat_sparse_data, hierarchical_data, hierarchical_dictionary,
                                  random_dictionary)
from interp.sae.topk import topk_codes
from interp.sae.training import estimate_input_scale, init_b_dec, sae_optimizer, train_on_array

METHODS = {
    "MP-SAE": lambda d, w, k, seed: MatchingPursuitSAE(d, w, rngs=nnx.Rngs(seed), k=k),
    "TopK": lambda d, w, k, seed: TopKSAE(d, w, rngs=nnx.Rngs(seed), k=k, dead_steps=200),
    "ReLU+L1": lambda d, w, k, seed: ReLUSAE(d, w, rngs=nnx.Rngs(seed), l1_coefficient=1.0),
}


def _datasets(seed: int, n: int):
    flat_atoms = random_dictionary(jax.random.key(100 + seed), 64, 32)
    flat_x, _ = flat_sparse_data(jax.random.key(200 + seed), flat_atoms, n, 3 / 64)
    parents, children = hierarchical_dictionary(jax.random.key(300 + seed), 8, 6, 16)
    hier_x, _, _ = hierarchical_data(jax.random.key(400 + seed), parents, children, n)
    return {
        "flat": dict(x=flat_x, atoms=flat_atoms, groups={}, width=128, k=3, lr=3e-3),
        "hierarchical": dict(x=hier_x, atoms=jnp.concatenate([parents, children.reshape(-1, 16)]),
                             groups={"parents": parents, "children": children.reshape(-1, 16)},
                             width=56, k=2, lr=1e-3),
    }


def _explaining_away_rows(n: int) -> list[dict]:
    rows = []
    for d in (16, 32):
        parents, children = hierarchical_dictionary(jax.random.key(d), 8, 6, d)
        x, parent, child = hierarchical_data(jax.random.key(d + 1), parents, children, n)
        dictionary = jnp.concatenate([parents, children.reshape(-1, d)])
        truth = 8 + parent * 6 + child[:, 0]
        for name, z in (("MP (k=2)", matching_pursuit(x, dictionary, 2)[0]),
                        ("TopK read-out D^T (k=2)", topk_codes(x @ dictionary.T, 2))):
            rows.append({"d_in": d, "encoder": name,
                         "child accuracy": float(jnp.mean(jnp.argmax(z[:, 8:], -1) + 8 == truth)),
                         "FVU": float(fvu(x, z @ dictionary))})
    return rows


def run(quick: bool, results_dir: Path) -> list[Path]:
    seeds = [0] if quick else [0, 1, 2]
    steps = {"flat": 1500, "hierarchical": 3000} if quick else {"flat": 10000,
                                                               "hierarchical": 20000}
    n = 16384 if quick else 65536
    results: dict[tuple[str, str], list[dict]] = {}
    jobs = [(seed, data, method) for seed in seeds for data in ("flat", "hierarchical")
            for method in METHODS]
    cache = {}
    for seed, data, method in tqdm(jobs, desc="interp_sae_recovery"):
        if seed not in cache:
            cache = {seed: _datasets(seed, n)}
        spec = cache[seed][data]
        x = spec["x"] * estimate_input_scale(spec["x"])
        model = METHODS[method](x.shape[1], spec["width"], spec["k"], seed)
        init_b_dec(model, x[:4096], "mean")
        train_on_array(model, x, sae_optimizer(spec["lr"]), steps[data], 256, seed=seed)
        held_out = x[:4096]
        codes = model.encode(held_out)
        entry = {"recovery": float(dictionary_recovery(model.W_dec[...], spec["atoms"])),
                 "FVU": float(fvu(held_out, model.decode(codes))), "L0": float(l0(codes))}
        for group, atoms in spec["groups"].items():
            entry[group] = float(dictionary_recovery(model.W_dec[...], atoms))
        results.setdefault((data, method), []).append(entry)

    def cell(values):
        values = np.asarray(values)
        if len(values) == 1:
            return float(values.mean())
        return f"{values.mean():.3f} ± {values.std():.3f}"

    rows = []
    for (data, method), entries in results.items():
        row = {"data": data, "method": method, "steps": steps[data], "seeds": len(entries),
               "paper": None}
        for key in ("recovery", "parents", "children", "FVU", "L0"):
            if key in entries[0]:
                row[key] = cell([e[key] for e in entries])
        rows.append(row)
    columns = ["data", "method", "steps", "seeds", "recovery", "parents", "children", "FVU",
               "L0", "paper"]
    notes = (f"{'quick' if quick else 'full'} run on {jax.devices()[0].platform}; synthetic data "
             f"only ({n} tokens). k = 3 (flat) / 2 (hierarchical) for MP-SAE and TopK; ReLU+L1 "
             "lambda = 1. 'recovery' = mean max cosine over all planted atoms. At this scale the "
             "trained MP-SAE does not recover children better than TopK (both learn the "
             "dictionary imperfectly; MP has no dead-latent revival); MP's advantage shows in "
             "the encoder-only table. The P13 paper reports this comparison qualitatively "
             "(figures), so the paper column is empty.")
    table = Table(name="interp_sae_recovery",
                  title="Planted-dictionary recovery: MP-SAE vs TopK vs ReLU", columns=columns,
                  rows=rows, notes=notes)

    def plot(ax):
        labels = [f"{r['data']}\n{r['method']}" for r in rows]
        values = [float(str(r["recovery"]).split(" ")[0]) for r in rows]
        ax.bar(range(len(rows)), values, color=["tab:blue", "tab:orange", "tab:green"] * 2)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("mean max cosine")
        ax.set_ylim(0, 1.05)

    mechanism = Table(
        name="interp_sae_explaining_away",
        title="Child identification with the planted hierarchical dictionary (encoder only)",
        columns=["d_in", "encoder", "child accuracy", "FVU"],
        rows=_explaining_away_rows(4000 if quick else 32000),
        notes="8 parents x 6 children orthogonal to their parent; the same planted dictionary "
              "and k = 2 for both encoders, so only the encoding rule differs.")
    return [write_table(table, results_dir, plot=plot), write_table(mechanism, results_dir)]
