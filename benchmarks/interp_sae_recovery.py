"""Planted-dictionary recovery: P13 MP-SAE vs TopK vs ReLU SAEs on flat and hierarchical data.

Flat: 64 random unit atoms in R^32, each active w.p. 3/64 with magnitude U(0.5, 1.5); k = 3.
Hierarchical: P13's synthetic tree (the authors' code, github.com/mpsae/MP-SAE): 3 parents x 3
mutually exclusive children + 8 flat features = 20 features in R^20, children exactly orthogonal
to every parent, cosine 0.1 within a level, one top-level feature per token, a child under an
active parent w.p. 0.6, magnitudes 1.5 + 0.25 N(0, 1) (mean L0 1.36); 20 latents (as the authors).
Every SAE trains on the inputs scaled to mean norm sqrt(d_in) with Adam (3e-3 flat, 1e-2
hierarchical), grad clip 1, unit-norm decoder; MP-SAE starts with b_dec = 0 (the authors' MP-SAE
has no bias), the others with b_dec = the data mean. MP-SAE and TopK are compared at the same k
(2 and 3); "MP-SAE adaptive" trains with the authors' rule (stop when ||r|| < 0.05 in their data
units or when the support repeats, at most 8 steps); BatchTopK at L0 1.36 (full form only) is
the authors' baseline. Recovery of a group = mean over its planted atoms of the max cosine with
a learned atom; "child-parent cos" = mean over children of the cosine between the learned atom
that best matches the child and the child's true parent (0 in the ground truth; > 0 when the
parent is absorbed into the child's atom). Control: the same 20 atoms active independently with
the same mean L0 (no hierarchy). A second table isolates the encoder on a superposed hierarchy;
the full form adds a sweep over the within-level cosine.
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
from interp.sae import BatchTopKSAE, MatchingPursuitSAE, ReLUSAE, TopKSAE
from interp.sae.matching_pursuit import matching_pursuit
from interp.sae.metrics import dictionary_recovery, fvu, l0
from interp.sae.synthetic import (flat_sparse_data, hierarchical_data, hierarchical_dictionary,
                                  random_dictionary, tree_data, tree_dictionary)
from interp.sae.topk import topk_codes
from interp.sae.training import estimate_input_scale, init_b_dec, sae_optimizer, train_on_array

AUTHORS_RESIDUAL_THRESHOLD = 0.05  # in the units of the authors' unscaled data


def _methods(data: str, quick: bool = False):
    mp = lambda k, **kw: lambda d, w, seed, s: MatchingPursuitSAE(d, w, rngs=nnx.Rngs(seed), k=k,
                                                                   **kw)
    topk = lambda k: lambda d, w, seed, s: TopKSAE(d, w, rngs=nnx.Rngs(seed), k=k, dead_steps=200)
    relu = lambda d, w, seed, s: ReLUSAE(d, w, rngs=nnx.Rngs(seed), l1_coefficient=1.0)
    if data == "flat":
        return {"MP-SAE k=3": mp(3), "TopK k=3": topk(3), "ReLU+L1": relu}
    if data == "tree atoms, independent":
        return {"MP-SAE k=3": mp(3), "TopK k=3": topk(3)}
    adaptive = lambda d, w, seed, s: MatchingPursuitSAE(
        d, w, rngs=nnx.Rngs(seed), k=2, max_iterations=8, adaptive_training=True,
        residual_threshold=AUTHORS_RESIDUAL_THRESHOLD * s, stop_on_duplicate_support=True)
    methods = {"MP-SAE k=2": mp(2), "TopK k=2": topk(2), "MP-SAE k=3": mp(3), "TopK k=3": topk(3),
               "MP-SAE adaptive": adaptive, "ReLU+L1": relu}
    if not quick:
        methods["BatchTopK L0=1.36"] = lambda d, w, seed, s: BatchTopKSAE(
            d, w, rngs=nnx.Rngs(seed), k=1.36, dead_steps=200)
    return methods


def _dataset(data: str, seed: int, n: int, level_cosine: float = 0.1):
    if data == "flat":
        atoms = random_dictionary(jax.random.key(100 + seed), 64, 32)
        x, _ = flat_sparse_data(jax.random.key(200 + seed), atoms, n, 3 / 64)
        return {"x": x, "atoms": atoms, "groups": {}, "width": 128, "lr": 3e-3, "batch": 256}
    atoms, parents, children, flat = tree_dictionary(jax.random.key(300 + seed),
                                                     level_cosine=level_cosine)
    if data == "hierarchical":
        x, _ = tree_data(jax.random.key(400 + seed), atoms, parents, children, flat, n)
    else:  # control: the same atoms active independently, same mean L0 and magnitude spread
        half_width = 0.25 * 3**0.5
        x, _ = flat_sparse_data(jax.random.key(400 + seed), atoms, n, 1.36 / atoms.shape[0],
                                1.5 - half_width, 1.5 + half_width)
    groups = {"parents": parents, "children": children.reshape(-1), "flat features": flat}
    child_parent = jnp.repeat(parents, children.shape[1])
    return {"x": x, "atoms": atoms, "groups": groups, "child_parent": child_parent, "width": 20,
            "lr": 1e-2, "batch": 200}


def _child_parent_cosine(learned, atoms, children, child_parent):
    """Mean over children of cos(best-matching learned atom, the child's true parent)."""
    learned = learned / jnp.linalg.norm(learned, axis=-1, keepdims=True)
    best = jnp.argmax(atoms[children] @ learned.T, axis=-1)
    return jnp.mean(jnp.sum(learned[best] * atoms[child_parent], -1))


def _train_and_score(spec: dict, make, seed: int, steps: int) -> dict:
    scale = float(estimate_input_scale(spec["x"]))
    x = spec["x"] * scale
    model = make(x.shape[1], spec["width"], seed, scale)
    if not isinstance(model, MatchingPursuitSAE):
        init_b_dec(model, x[:4096], "mean")
    train_on_array(model, x, sae_optimizer(spec["lr"]), steps, spec["batch"], seed=seed)
    held_out = x[:4096]
    codes = model.encode(held_out)
    learned = model.W_dec[...]
    entry = {"recovery": float(dictionary_recovery(learned, spec["atoms"])),
             "FVU": float(fvu(held_out, model.decode(codes))), "L0": float(l0(codes))}
    for group, index in spec["groups"].items():
        entry[group] = float(dictionary_recovery(learned, spec["atoms"][index]))
    if "child_parent" in spec:
        entry["child-parent cos"] = float(_child_parent_cosine(
            learned, spec["atoms"], spec["groups"]["children"], spec["child_parent"]))
    return entry


def _level_sweep_rows(seeds, steps: int, n: int) -> list[dict]:
    """MP-SAE vs TopK (k = 3) children recovery as the within-level cosine grows (the authors'
    correlation levels)."""
    methods = _methods("hierarchical")
    rows = []
    for level in tqdm((0.0, 0.2, 0.4, 0.6, 0.8), desc="level sweep"):
        row = {"level cosine": level, "seeds": len(seeds), "steps": steps}
        for method in ("MP-SAE k=3", "TopK k=3"):
            values = [_train_and_score(_dataset("hierarchical", seed, n, level), methods[method],
                                       seed, steps)["children"] for seed in seeds]
            row[f"{method} children"] = f"{np.mean(values):.3f} ± {np.std(values):.3f}"
        rows.append(row)
    return rows


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
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    steps = ({"flat": 1500, "hierarchical": 3000} if quick
             else {"flat": 10000, "hierarchical": 15000})
    steps["tree atoms, independent"] = steps["hierarchical"]
    n = 16384 if quick else 65536
    datasets = ("flat", "hierarchical", "tree atoms, independent")
    jobs = [(seed, data, method) for seed in seeds for data in datasets
            for method in _methods(data, quick)]
    results: dict[tuple[str, str], list[dict]] = {}
    cache: dict = {}
    for seed, data, method in tqdm(jobs, desc="interp_sae_recovery"):
        if (seed, data) not in cache:
            cache = {(seed, data): _dataset(data, seed, n)}
        make = _methods(data, quick)[method]
        entry = _train_and_score(cache[(seed, data)], make, seed, steps[data])
        results.setdefault((data, method), []).append(entry)

    def cell(values):
        values = np.asarray(values)
        if len(values) == 1:
            return float(values.mean())
        return f"{values.mean():.3f} ± {values.std():.3f}"

    metrics = ["recovery", "parents", "children", "flat features", "child-parent cos", "FVU",
               "L0"]
    rows = []
    for (data, method), entries in results.items():
        row = {"data": data, "method": method, "steps": steps[data], "seeds": len(entries),
               "paper": None}
        for key in metrics:
            if key in entries[0]:
                row[key] = cell([e[key] for e in entries])
        rows.append(row)
    columns = ["data", "method", "steps", "seeds", *metrics, "paper"]
    notes = (f"{'quick' if quick else 'full'} run on {jax.devices()[0].platform}; synthetic data "
             f"only ({n} tokens). Flat: 64 atoms in R^32, width 128. Hierarchical: the P13 "
             "authors' tree (3 parents x 3 exclusive children + 8 flat = 20 features in R^20, "
             "children orthogonal to parents, level cosine 0.1, mean L0 1.36), width 20. MP-SAE "
             "and TopK share k; MP-SAE adaptive = the authors' training rule (<= 8 steps, stop "
             "when ||r|| < 0.05 in their units or the support repeats); BatchTopK L0 = 1.36 (full "
             "form) is the authors' baseline; ReLU+L1 lambda = 1. 'child-parent cos' = cosine "
             "between the learned atom matching each child and that child's true parent (0 when "
             "planted, > 0 when the parent is absorbed into the child atom). Control 'tree atoms, "
             "independent': the same atoms active independently (mean L0 1.36, uniform "
             "magnitudes of the same mean and spread). With one pursuit step beyond the largest "
             "true L0 (k = 3, or the adaptive rule) MP-SAE recovers the children and TopK at the "
             "same k recovers them worse, although it recovers the same atoms without the "
             "hierarchy (control); at k = 2 both learn mixed atoms. The P13 paper reports this "
             "comparison as figures, so the paper column is empty.")
    table = Table(name="interp_sae_recovery",
                  title="Planted-dictionary recovery: MP-SAE vs TopK vs ReLU", columns=columns,
                  rows=rows, notes=notes)

    def plot(ax):
        labels = [f"{r['data'][:4]}\n{r['method']}" for r in rows]
        values = [float(str(r.get("children", r["recovery"])).split(" ")[0]) for r in rows]
        colors = ["tab:blue" if r["method"].startswith("MP") else "tab:orange" for r in rows]
        ax.bar(range(len(rows)), values, color=colors)
        ax.set_xticks(range(len(rows)), labels, fontsize=6, rotation=60)
        ax.set_ylabel("mean max cosine (children where hierarchical)")
        ax.set_ylim(0, 1.05)

    mechanism = Table(
        name="interp_sae_explaining_away",
        title="Child identification with a planted superposed hierarchy (encoder only)",
        columns=["d_in", "encoder", "child accuracy", "FVU"],
        rows=_explaining_away_rows(4000 if quick else 32000),
        notes="8 parents x 6 children in R^d (56 atoms, superposed), each child orthogonal to its "
              "own parent; the same planted dictionary and k = 2 for both encoders, so only the "
              "encoding rule differs (MP removes the parent before choosing the child).")
    paths = [write_table(table, results_dir, plot=plot), write_table(mechanism, results_dir)]
    if not quick:
        sweep = Table(
            name="interp_sae_hierarchy_levels",
            title="Children recovery vs within-level cosine, MP-SAE vs TopK at k = 3 (P13 tree)",
            columns=["level cosine", "seeds", "steps", "MP-SAE k=3 children", "TopK k=3 children"],
            rows=_level_sweep_rows(seeds[:3], steps["hierarchical"], n),
            notes="Same tree, training and metric as interp_sae_recovery; the cosine between "
                  "features of one level (siblings; parents and flat features) is varied as in "
                  "the authors' notebook (levels 0 to 0.8); children stay orthogonal to parents.")
        paths.append(write_table(sweep, results_dir))
    return paths
