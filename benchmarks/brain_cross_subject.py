"""Cross-subject decoding on simulated fMRI (brain area, issue benchmark 1).

Per-subject models (independent MindEye2-style networks) vs one MindBridge model (P09) vs subject
adapters + shared decoder (P02) vs the MindEye2-style shared-subject model, all trained through
``core`` on the same multi-subject batches and scored on each subject's repeat-averaged test set:
n-way retrieval top-1 (MindEye's protocol: 30 random draws; brain->image and image->brain) and
2-way identification on the predicted embedding (the notes' "CLIP" 2-way column), mean over
subjects (and seeds in the full form). A per-subject ridge (MindEye2's new-subject map, alpha by
CV) is the linear reference. The ``paper`` rows are the notes' NSD anchors (recalled values, R):
real data and 257 x 768 / 256 x 1664 CLIP tokens, shown beside ours, not comparable one to one.

Why MindBridge trails at the CPU size (seed 0 of the full form, 300-way brain->image top-1): max
pooling ~1300-1600 voxels to 512 values and the embedder's dropout 0.5 together cost it ~0.26.
Pooled 512 (max): .28 with dropout 0.5, .31 with 0; pooled 2000 (avg, nothing dropped): .39 with
0.5, .54 with 0 -- beside MindEye2-style's .51 on the same seed. Its reconstruction and cycle terms
(off: .27), the MSE term (off: .28), the embedder's LayerNorm + GELU (linear: .31) and a lower
learning rate (3e-4: .24) do not explain it. The table's ablation row is that lossless-pooling,
no-dropout variant.

Run: ``python -m benchmarks --only brain_cross_subject`` (quick) or ``--full --host-devices 1`` (CPU-sized:
calibrated simulator with 3000 training stimuli per subject, hidden 256, 2 blocks, 2000 steps, 3 seeds).
"""

from __future__ import annotations

import dataclasses
import pathlib
import textwrap
import time

import jax
import numpy as np
from tqdm import tqdm

from brain import decoding_experiment as de
from brain.metrics import retrieval, two_way_identification
from brain.ridge import fit_ridge_cv
from brain.simulator import Simulation, SimulatorConfig
from core import tables
from core.train import TrainConfig

COLUMNS = ("method", "source", "img-ret (brain->image)", "brain-ret (image->brain)", "2-way", "n-way", "seeds")
LABELS = {"per_subject": "per-subject models (baseline)", "mindbridge": "MindBridge, one model (P09)",
          "adapters": "subject adapters + shared decoder (P02)", "mindeye2": "MindEye2-style shared subject",
          "mindbridge_unpooled": "MindBridge, lossless pooling + embedder dropout 0 (ablation)",
          "ridge": "ridge per subject (linear reference)"}
ANCHORS = (  # notes' anchor table, NSD, mean of subjects 1, 2, 5, 7 (recalled, R); 2-way = CLIP column
    ("MindEye2 (40 h)", 0.988, 0.983, 0.930),
    ("MindEye2 (1 h)", 0.790, 0.574, 0.792),
    ("MindBridge", None, None, 0.947),
)


def ridge_metrics(datas, n_way: int, seed: int) -> dict[str, float]:
    out = []
    for d in datas:
        model = fit_ridge_cv(d.train_voxels, d.train_target, (1e1, 1e2, 1e3, 1e4), n_folds=3).model
        pred = np.asarray(model.predict(d.test_voxels))
        ret = retrieval(pred, d.test_target, jax.random.key(seed + d.subject), n_way=min(n_way, len(pred)))
        out.append((float(ret["brain_to_image"]["mean"]), float(ret["image_to_brain"]["mean"]),
                    float(two_way_identification(pred, d.test_target))))
    return dict(zip(("brain_to_image", "image_to_brain", "two_way"), np.mean(out, 0)))


def unpooled_mindbridge(config: de.DecodingConfig) -> de.DecodingConfig:
    """MindBridge without its two losses of information at this scale: every subject average-pooled
    to the largest voxel count (windows of one or two voxels: nothing dropped) and no dropout after
    the embedder (the reference's 0.5 is set for hidden 2048 and 600 epochs)."""
    return dataclasses.replace(config, model="mindbridge", pooled=max(config.simulator.voxels), pool_kind="avg",
                               embedder_dropout=0.0)


def configs(quick: bool) -> tuple[de.DecodingConfig, list[int]]:
    if quick:
        return de.DecodingConfig(n_way=100, mixco_fraction=0.0, train=TrainConfig(steps=200, batch_size=32, log_every=100,
                                                              progress=False, tensorboard=False)), [0]
    # CPU-sized full form (~15 min on two cores): the calibrated simulator with 3000 training stimuli per subject,
    # small networks; the paper's scale (hidden 2048, 4 blocks, 20000 steps) is de.PRESETS["paper"], an accelerator job
    return de.DecodingConfig(simulator=SimulatorConfig.calibrated(n_train_stimuli=3000), hidden=256, n_blocks=2,
                             pooled=512, mixco_fraction=0.0,
                             train=TrainConfig(steps=2000, batch_size=32, log_every=1000, progress=False,
                                               tensorboard=False)), [0, 1, 2]


def run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]:
    config, seeds = configs(quick)
    start = time.perf_counter()
    scores: dict[str, list[dict]] = {name: [] for name in LABELS}
    for seed in seeds:
        sim_config = dataclasses.replace(config.simulator, seed=seed)
        cfg = dataclasses.replace(config, simulator=sim_config, train=dataclasses.replace(config.train, seed=seed))
        datas = de.load_subjects(cfg, Simulation(sim_config))
        scores["ridge"].append(ridge_metrics(datas, cfg.n_way, seed))
        runs = {kind: dataclasses.replace(cfg, model=kind) for kind in de.MODEL_KINDS}
        runs["mindbridge_unpooled"] = unpooled_mindbridge(cfg)
        for name, run_cfg in tqdm(runs.items(), desc=f"brain_cross_subject seed {seed}"):
            scores[name].append(de.run(run_cfg, datas)[1])
    n_test = config.simulator.n_test_stimuli
    n_way = min(config.n_way, n_test)
    rows = []
    for name, runs in scores.items():
        mean = {k: float(np.mean([r[k] for r in runs])) for k in ("brain_to_image", "image_to_brain", "two_way")}
        rows.append({"method": LABELS[name], "source": "simulated (ours)",
                     "img-ret (brain->image)": mean["brain_to_image"], "brain-ret (image->brain)": mean["image_to_brain"],
                     "2-way": mean["two_way"], "n-way": n_way, "seeds": len(seeds)})
    for method, img, brain, two in ANCHORS:
        rows.append({"method": method, "source": "paper (NSD, recalled R)", "img-ret (brain->image)": img,
                     "brain-ret (image->brain)": brain, "2-way": two, "n-way": 300, "seeds": None})
    sim = config.simulator
    notes = (
        f"Simulated fMRI ({'quick: tiny simulator' if quick else 'full: calibrated simulator'}: {len(sim.voxels)} subjects "
        f"with {sim.voxels} voxels, {sim.n_train_stimuli} train stimuli x {sim.n_repeats} repeats per subject (disjoint "
        f"across subjects), {n_test} shared test stimuli averaged over repeats, rho={sim.rho}); models hidden "
        f"{config.hidden}, {config.n_blocks} blocks, {config.train.steps} steps of batch {config.train.batch_size} per "
        f"subject; {n_way}-way retrieval{' (the tiny test set has only 100 items; chance 1 %)' if n_way < 300 else ''}, "
        f"30 draws; mean over subjects and {len(seeds)} seed(s); {time.perf_counter() - start:.0f} s on "
        f"{len(jax.devices())} {jax.devices()[0].platform} device(s). 'paper' rows: published NSD numbers from the notes "
        "(recalled, R), anchors only."
        + (" MindEye2's BiMixCo phase (first third of training, temperature 0.006) is off for the MindEye2-style and "
           "per-subject networks: at short schedules it costs them (300 steps: 5 % vs 17 % 100-way)."
           if config.mixco_fraction == 0 else "")
        + ("" if quick else " Full form sized for two CPU cores (paper scale: hidden 2048, 4 blocks, 20000 steps).")
        + f" The ablation row is MindBridge with every subject average-pooled to {max(sim.voxels)} values (the largest"
        " voxel count: nothing dropped) and no dropout after the embedder (the reference's 0.5 suits its hidden 2048"
        " and 600 epochs); the gap between the two MindBridge rows is what its max pooling and embedder dropout cost"
        " at this scale."
    )
    table = tables.Table("brain_cross_subject", "Cross-subject decoding on simulated fMRI", COLUMNS, rows, notes)

    def plot(ax):
        ours = [r for r in rows if r["source"].startswith("simulated")]
        pos = np.arange(len(ours))
        ax.bar(pos - 0.2, [r["img-ret (brain->image)"] for r in ours], 0.4, label="brain->image")
        ax.bar(pos + 0.2, [r["brain-ret (image->brain)"] for r in ours], 0.4, label="image->brain")
        ax.axhline(1 / n_way, color="k", lw=0.8, ls=":", label="chance")
        ax.set_xticks(pos, [textwrap.fill(r["method"].split(" (")[0], 16) for r in ours], fontsize=6)
        ax.set_ylabel(f"{n_way}-way top-1")
        ax.legend(fontsize=7)

    return [tables.write_table(table, results_dir, plot=plot)]
