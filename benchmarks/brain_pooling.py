"""Adaptive max vs average pooling in MindBridge, with the dense-Gaussian negative control
(brain area, issue benchmark 3).

MindBridge (P09) pools each subject's spatially ordered voxels to a common length with PyTorch's
``AdaptiveMaxPool1d`` (its code: 8192 pooled values for subject 1's 15724 voxels, windows of 2-3
voxels), motivated by sparse, peaked responses. On the simulator the responses are a sparse
heavy-tailed nonlinearity of the drive (``relu(d - threshold)^1.5``: about a third of the stimuli
drive a voxel, excess kurtosis ~10); the control sets ``dense_gaussian=True`` (the linear,
Gaussian drive), where a peak-picking aggregate has nothing to exploit. The pooled length keeps
the reference's ratio (8192 / 15724 of the largest subject's voxel count).

Two read-outs of the same pooled data, same seed and data for both pools:

- ``MindBridge``: the full model trained through ``core`` (n-way retrieval top-1 both ways,
  30 draws, and 2-way identification, mean over subjects);
- ``ridge probe``: closed-form ridge (alpha by 5-fold CV on the training trials) from the pooled
  single trials to the target, per subject: how much linearly decodable information each
  aggregate keeps, without training noise.

Spreads: ``max - avg`` is paired (same subjects, test items and retrieval draws); its 95 %
interval is over test items of every subject (2-way, per item) -- test-set sampling, not
training-seed variation (the full form adds seeds). No published figure exists for this ablation
on NSD retrieval in the notes, hence no ``paper`` column.

Run: ``python -m benchmarks --only brain_pooling`` (quick) or ``--full --host-devices 1`` (CPU-sized:
calibrated simulator with 3000 training stimuli per subject, MindBridge hidden 256, 2 blocks, 2000
steps, 3 seeds; the paper's scale, hidden 2048 and 20000 steps, is an accelerator's job).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import numpy as np
from tqdm import tqdm

from brain import decoding_experiment as de
from brain.metrics import retrieval, two_way_identification
from brain.pooling import adaptive_pool
from brain.ridge import fit_ridge_cv
from brain.simulator import Simulation, SimulatorConfig
from core import tables
from core.train import TrainConfig

COLUMNS = ("responses", "read-out", "pooling", "img-ret (brain->image)", "brain-ret (image->brain)", "2-way",
           "max - avg (2-way)", "95% / sd", "max - avg (img-ret)", "seeds")
REFERENCE_RATIO = 8192 / 15724  # MindBridge's pool_num over subject 1's nsdgeneral voxel count
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
Z_95 = 1.96


def plan(quick: bool):
    if quick:
        sim = SimulatorConfig.tiny(n_test_stimuli=300)
        cfg = de.DecodingConfig(simulator=sim, model="mindbridge", n_way=100,
                                pooled=round(REFERENCE_RATIO * max(sim.voxels)),
                                train=TrainConfig(steps=300, batch_size=32, log_every=1000, progress=False,
                                                  tensorboard=False))
        return cfg, (0,)
    sim = SimulatorConfig.calibrated(n_train_stimuli=3000)  # CPU-sized, as brain_cross_subject's full form
    return de.DecodingConfig(simulator=sim, model="mindbridge", hidden=256, n_blocks=2,
                             pooled=round(REFERENCE_RATIO * max(sim.voxels)),
                             train=TrainConfig(steps=2000, batch_size=32, log_every=1000, progress=False,
                                               tensorboard=False)), (0, 1, 2)


def _scores(pred: np.ndarray, target: np.ndarray, n_way: int, subject: int) -> dict[str, np.ndarray]:
    ret = retrieval(pred, target, jax.random.key(subject), n_way=min(n_way, len(pred)))
    return {"ret": np.asarray(ret["brain_to_image"]["draws"]), "ret_back": np.asarray(ret["image_to_brain"]["draws"]),
            "two_way": np.asarray(two_way_identification(pred, target, per_item=True))}


def _ridge_probe(d: de.SubjectData, pooled: int, kind: str) -> np.ndarray:
    pool = lambda x: np.asarray(adaptive_pool(x, pooled, kind))  # noqa: E731
    fit = fit_ridge_cv(pool(d.train_voxels), d.train_target, RIDGE_ALPHAS, per_target=False)
    return np.asarray(fit.model.predict(pool(d.test_voxels)))


def _seed_scores(config: de.DecodingConfig, dense: bool, seed: int) -> dict[tuple[str, str], list[dict]]:
    """``{(read-out, pool): [per-subject scores]}`` for one simulated world."""
    sim_config = dataclasses.replace(config.simulator, dense_gaussian=dense, seed=seed)
    datas = de.load_subjects(dataclasses.replace(config, simulator=sim_config), Simulation(sim_config))
    out = {}
    for kind in tqdm(("max", "avg"), desc=f"brain_pooling dense={dense} seed={seed}", leave=False):
        cfg = dataclasses.replace(config, simulator=sim_config, pool_kind=kind,
                                  train=dataclasses.replace(config.train, seed=seed))
        model = de.train_subjects(cfg, datas).model
        out["MindBridge", kind] = [_scores(de.predict(model, d.test_voxels, d.subject), d.test_target, cfg.n_way,
                                           d.subject) for d in datas]
        out["ridge probe", kind] = [_scores(_ridge_probe(d, cfg.pooled, kind), d.test_target, cfg.n_way, d.subject)
                                    for d in datas]
    return out


def _mean(per_seed: list[list[dict]], name: str) -> float:
    return float(np.mean([np.mean([s[name].mean() for s in subjects]) for subjects in per_seed]))


def plot(rows: list[dict], axes) -> None:
    """Max vs average pooling per read-out and response type: 2-way identification (left) and
    n-way retrieval (right), from the table's rows."""
    cases = [(r, d) for r in ("MindBridge", "ridge probe") for d in (False, True)]
    pos = np.arange(len(cases))
    for ax, column in zip(axes, ("2-way", "img-ret (brain->image)")):
        for i, kind in enumerate(("max", "avg")):
            vals = [next(x[column] for x in rows if x["read-out"] == r and x["pooling"] == kind
                         and x["responses"].startswith("dense") == d) for r, d in cases]
            ax.bar(pos + (i - 0.5) * 0.4, vals, 0.4, label=f"{kind} pooling")
        ax.set_xticks(pos, [f"{r}\n{'dense' if d else 'sparse'}" for r, d in cases], fontsize=7)
        ax.set_ylim(0.0, 1.0)
        ax.set_title(column.split(" (")[0], fontsize=9)
    axes[0].legend(fontsize=7)


def run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]:
    config, seeds = plan(quick)
    start = time.perf_counter()
    rows = []
    for dense in (False, True):
        scores = [_seed_scores(config, dense, seed) for seed in seeds]
        for readout in ("MindBridge", "ridge probe"):
            per = {k: [s[readout, k] for s in scores] for k in ("max", "avg")}
            diff_two = [np.concatenate([m["two_way"] - a["two_way"] for m, a in zip(ms, as_)])
                        for ms, as_ in zip(per["max"], per["avg"])]
            if len(seeds) == 1:
                spread = f"+-{Z_95 * diff_two[0].std() / np.sqrt(len(diff_two[0])):.3f} (95%)"
            else:
                spread = f"+-{np.std([d.mean() for d in diff_two], ddof=1):.3f} (sd)"
            for kind in ("max", "avg"):
                row = {"responses": "dense Gaussian (control)" if dense else "sparse heavy-tailed",
                       "read-out": readout, "pooling": kind, "img-ret (brain->image)": _mean(per[kind], "ret"),
                       "brain-ret (image->brain)": _mean(per[kind], "ret_back"),
                       "2-way": _mean(per[kind], "two_way"), "seeds": len(seeds)}
                if kind == "max":
                    row.update({"max - avg (2-way)": float(np.mean([d.mean() for d in diff_two])), "95% / sd": spread,
                                "max - avg (img-ret)": _mean(per["max"], "ret") - _mean(per["avg"], "ret")})
                rows.append(row)
    sim = config.simulator
    n_way = min(config.n_way, sim.n_test_stimuli)
    notes = (
        f"Simulated fMRI ({'quick: tiny simulator' if quick else 'full: calibrated simulator'}, voxels {sim.voxels} "
        f"pooled to {config.pooled}, MindBridge's ratio 8192/15724; {sim.n_train_stimuli} train stimuli x "
        f"{sim.n_repeats} repeats per subject, {sim.n_test_stimuli} test stimuli); MindBridge "
        f"hidden {config.hidden}, {config.n_blocks} blocks, {config.train.steps} steps of batch "
        f"{config.train.batch_size}; "
        f"ridge probe: alpha by 5-fold CV. {n_way}-way retrieval (chance {1 / n_way:.1%}), 30 draws, and 2-way "
        f"identification (chance 50 %), mean over subjects and {len(seeds)} seed(s). "
        + ("One seed: the max - avg interval is over test items of every subject (paired), test-set sampling only. "
           if len(seeds) == 1 else f"max - avg spread: sd over the {len(seeds)} seeds. ")
        + f"{time.perf_counter() - start:.0f} s on {len(jax.devices())} {jax.devices()[0].platform} device(s)."
    )
    table = tables.Table("brain_pooling" + ("" if quick else "_full"), "MindBridge adaptive max vs average pooling",
                         COLUMNS, rows, notes)

    return [tables.write_table(table, results_dir, plot=functools.partial(plot, rows), panels=2)]
