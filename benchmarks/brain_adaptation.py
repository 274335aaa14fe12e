"""New-subject adaptation on simulated fMRI (brain area, issue benchmark 2).

Sources are pretrained together; the target subject then brings only ``n_target`` trials (its
first ones, i.e. whole sessions, z-scored with their own statistics). Methods, each trained
through ``core`` for the same number of steps (:func:`brain.decoding_experiment.adapt`):
``scratch`` (a per-subject network on the target trials only), ``reset_tuning`` (P09: pretrained
MindBridge, target embedder/builder re-initialised and tuned with the shared translator, source
chunks and source->target cycling in every batch), ``adapters_only`` (P02: a new adapter, the
shared decoder frozen), ``new_linear_only`` (MindEye2-style: a new linear map into the frozen
shared latent). The negative control repeats scratch vs the pretrained methods on a simulator
whose subjects share nothing (``rho = 1``: every voxel driven by a private latent), where
pretraining has nothing to transfer and the gap over scratch should vanish. Metric: n-way
retrieval top-1 (brain->image, 30 draws) and 2-way identification on the target's test set.

The notes' anchor: MindEye2 with one session (750 trials) of a new subject reaches 79.0 % / 57.4 %
300-way retrieval on NSD (recalled, R); MindBridge's reset-tuning uses 4000 target trials.

Run: ``python -m benchmarks --only brain_adaptation`` (quick) or ``--full``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
from tqdm import tqdm

from brain import decoding_experiment as de
from brain.simulator import Simulation
from core import tables
from core.train import TrainConfig

COLUMNS = ("rho", "n_target", "method", "source", "img-ret (brain->image)", "2-way", "gap vs scratch (img-ret)")
PRETRAINED_KIND = {"reset_tuning": "mindbridge", "adapters_only": "adapters", "new_linear_only": "mindeye2"}


def plan(quick: bool):
    """``(decoding config, pretraining steps, [(rho, n_targets, methods)])``."""
    if quick:
        cfg = de.DecodingConfig(n_way=100, mixco_fraction=0.0, train=TrainConfig(steps=80, batch_size=32, log_every=50, progress=False,
                                                             tensorboard=False))
        return cfg, 150, [(0.2, (75,), ("scratch", "reset_tuning", "adapters_only")),
                          (1.0, (75,), ("scratch", "reset_tuning"))]
    base = de.PRESETS["paper"][1]
    cfg = dataclasses.replace(base, hidden=1024, train=dataclasses.replace(base.train, steps=3000, checkpoint_every=0))
    methods = ("scratch", "reset_tuning", "adapters_only", "new_linear_only")
    return cfg, 6000, [(0.2, (75, 750, 4000), methods), (1.0, (75, 750, 4000), methods)]


def run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]:
    config, pretrain_steps, regimes = plan(quick)
    start = time.perf_counter()
    rows = []
    for rho, n_targets, methods in regimes:
        sim_config = dataclasses.replace(config.simulator, rho=rho)
        cfg = dataclasses.replace(config, simulator=sim_config)
        sim = Simulation(sim_config)
        *source_ids, target_id = range(len(sim_config.voxels))
        sources = [de.subject_data(sim, s) for s in source_ids]
        pretrain_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=pretrain_steps))
        pretrained = {
            kind: de.run(dataclasses.replace(pretrain_cfg, model=kind), sources)[0].model
            for kind in sorted({PRETRAINED_KIND[m] for m in methods if m in PRETRAINED_KIND})
        }
        for n_target in n_targets:
            target = de.subject_data(sim, target_id, n_train=n_target)
            scores = {}
            for method in tqdm(methods, desc=f"brain_adaptation rho={rho} n={n_target}"):
                model = pretrained.get(PRETRAINED_KIND.get(method))
                scores[method] = de.adapt(cfg, method, target, sources, pretrained=model)[1]
            for method, m in scores.items():
                rows.append({"rho": rho, "n_target": n_target, "method": method, "source": "simulated (ours)",
                             "img-ret (brain->image)": m["brain_to_image"], "2-way": m["two_way"],
                             "gap vs scratch (img-ret)": m["brain_to_image"] - scores["scratch"]["brain_to_image"]})
    rows.append({"rho": None, "n_target": 750, "method": "MindEye2 (1 h), new-subject fine-tune",
                 "source": "paper (NSD, recalled R)", "img-ret (brain->image)": 0.790, "2-way": 0.792})
    sim = config.simulator
    n_way = min(config.n_way, sim.n_test_stimuli)
    notes = (
        f"Simulated fMRI ({'quick: tiny simulator' if quick else 'full: calibrated simulator'}, voxels {sim.voxels}: "
        f"subjects {tuple(range(len(sim.voxels) - 1))} are the sources, the last one the target; "
        f"{sim.n_train_stimuli} train stimuli x {sim.n_repeats} repeats per source). Pretraining {pretrain_steps} steps, "
        f"adaptation {config.train.steps} steps of batch {config.train.batch_size}, hidden {config.hidden}; "
        f"{n_way}-way retrieval (chance {1 / n_way:.1%}), 30 draws, one seed. rho = weight of the private component "
        f"(1 = subjects share nothing: the negative control). {'Quick form (sized for the time budget of the main job): n_target = 75 only, 150 pretraining and 80 adaptation steps, new-linear-only (MindEye2-style) in the full form only. ' if quick else ''}"
        f"{time.perf_counter() - start:.0f} s on {len(jax.devices())} {jax.devices()[0].platform} device(s). The 'paper' row "
        "is the notes' recalled NSD anchor (real data), not comparable one to one."
        + (" MindEye2's BiMixCo phase is off in the quick form (too short a schedule for it)." if config.mixco_fraction == 0 else "")
    )
    table = tables.Table("brain_adaptation", "New-subject adaptation on simulated fMRI", COLUMNS, rows, notes)

    def plot(ax):
        for rho in sorted({r["rho"] for r in rows if r["rho"] is not None}):
            for method in dict.fromkeys(r["method"] for r in rows if r["rho"] == rho):
                pts = [(r["n_target"], r["img-ret (brain->image)"]) for r in rows
                       if r["rho"] == rho and r["method"] == method]
                ax.plot(*zip(*pts), marker="o", ls="-" if rho < 1 else "--", label=f"{method} (rho={rho})")
        ax.axhline(1 / n_way, color="k", lw=0.8, ls=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("target trials")
        ax.set_ylabel(f"{n_way}-way top-1 (brain->image)")
        ax.legend(fontsize=6)

    return [tables.write_table(table, results_dir, plot=plot)]
