"""Adaptive max vs average pooling in MindBridge, with the dense-Gaussian negative control
(brain area, issue benchmark 3).

MindBridge (P09) pools each subject's spatially ordered voxels to a common length; the paper
prefers max pooling, motivated by sparse, peaked responses. On the simulator the responses are a
sparse heavy-tailed nonlinearity of the drive (``relu(d - threshold)^1.5``); the control sets
``dense_gaussian=True`` (the linear, Gaussian drive), where a peak-picking aggregate has nothing
to exploit. The pooled length is well below the voxel counts (windows of ~3 voxels) so the
aggregate matters. Same model, data, steps and seed for both pools; n-way retrieval top-1 (both
directions, 30 draws) and 2-way identification, mean over subjects. No published figure exists
for this ablation on NSD retrieval in the notes, hence no ``paper`` column.

Run: ``python -m benchmarks --only brain_pooling`` (quick) or ``--full``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
from tqdm import tqdm

from brain import decoding_experiment as de
from brain.simulator import Simulation, SimulatorConfig
from core import tables
from core.train import TrainConfig

COLUMNS = ("responses", "pooling", "img-ret (brain->image)", "brain-ret (image->brain)", "2-way",
           "max - avg (img-ret)", "seeds")


def plan(quick: bool):
    if quick:
        sim = SimulatorConfig.tiny(voxels=(200, 160))
        return de.DecodingConfig(simulator=sim, model="mindbridge", pooled=64, n_way=100,
                                 train=TrainConfig(steps=150, batch_size=32, log_every=50, progress=False,
                                                   tensorboard=False)), [0]
    base = de.PRESETS["paper"][1]
    return dataclasses.replace(base, model="mindbridge", hidden=1024, pooled=512,
                               train=dataclasses.replace(base.train, steps=6000, checkpoint_every=0)), [0, 1, 2]


def run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]:
    config, seeds = plan(quick)
    start = time.perf_counter()
    rows = []
    for dense in (False, True):
        scores = {"max": [], "avg": []}
        for seed in seeds:
            sim_config = dataclasses.replace(config.simulator, dense_gaussian=dense, seed=seed)
            datas = de.load_subjects(dataclasses.replace(config, simulator=sim_config), Simulation(sim_config))
            for kind in tqdm(("max", "avg"), desc=f"brain_pooling dense={dense} seed={seed}"):
                cfg = dataclasses.replace(config, simulator=sim_config, pool_kind=kind,
                                          train=dataclasses.replace(config.train, seed=seed))
                scores[kind].append(de.run(cfg, datas)[1])
        mean = {k: {m: float(np.mean([r[m] for r in v])) for m in ("brain_to_image", "image_to_brain", "two_way")}
                for k, v in scores.items()}
        for kind in ("max", "avg"):
            rows.append({"responses": "dense Gaussian (control)" if dense else "sparse heavy-tailed",
                         "pooling": kind, "img-ret (brain->image)": mean[kind]["brain_to_image"],
                         "brain-ret (image->brain)": mean[kind]["image_to_brain"], "2-way": mean[kind]["two_way"],
                         "max - avg (img-ret)": mean["max"]["brain_to_image"] - mean["avg"]["brain_to_image"]
                         if kind == "max" else None, "seeds": len(seeds)})
    sim = config.simulator
    n_way = min(config.n_way, sim.n_test_stimuli)
    notes = (
        f"Simulated fMRI ({'quick: tiny simulator' if quick else 'full: calibrated simulator'}, voxels {sim.voxels} "
        f"pooled to {config.pooled}); MindBridge hidden {config.hidden}, {config.n_blocks} blocks, "
        f"{config.train.steps} steps of batch {config.train.batch_size}; {n_way}-way retrieval (chance {1 / n_way:.1%}), "
        f"30 draws, mean over subjects and {len(seeds)} seed(s); {time.perf_counter() - start:.0f} s on "
        f"{len(jax.devices())} {jax.devices()[0].platform} device(s)."
        + (" One seed: the quick form gives no spread estimate; read differences of a few points as noise." if len(seeds) == 1 else "")
    )
    table = tables.Table("brain_pooling", "MindBridge adaptive max vs average pooling", COLUMNS, rows, notes)

    def plot(ax):
        pos = np.arange(2)
        for i, kind in enumerate(("max", "avg")):
            vals = [r["img-ret (brain->image)"] for r in rows if r["pooling"] == kind]
            ax.bar(pos + (i - 0.5) * 0.4, vals, 0.4, label=f"{kind} pooling")
        ax.set_xticks(pos, ["sparse heavy-tailed", "dense Gaussian (control)"])
        ax.axhline(1 / n_way, color="k", lw=0.8, ls=":", label="chance")
        ax.set_ylabel(f"{n_way}-way top-1 (brain->image)")
        ax.legend(fontsize=7)

    return [tables.write_table(table, results_dir, plot=plot)]
