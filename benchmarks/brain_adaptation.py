"""New-subject adaptation on simulated fMRI (brain area, issue benchmark 2).

Sources are pretrained together; the target subject then brings only ``n_target`` trials (its
first ones, i.e. whole sessions, z-scored with their own statistics). Methods, each trained
through ``core`` for the same number of steps (:func:`brain.decoding_experiment.adapt`):
``scratch`` (a per-subject network on the target trials only), ``reset_tuning`` (P09: pretrained
MindBridge, target embedder/builder re-initialised and tuned with the shared translator, source
chunks and source->target cycling in every batch), ``adapters_only`` (P02: a new adapter, the
shared decoder frozen), ``new_linear_only`` (MindEye2-style: a new linear map into the frozen
shared latent); beside them ``scratch_ridge``, closed-form ridge on the target trials only with
alpha chosen by 5-fold CV on those trials (the classic per-subject baseline, no training loop).

The negative control repeats everything on a simulator whose subjects share nothing (``rho = 1``:
every voxel driven by a private latent). What pretraining can still carry over there is
knowledge of the *target space* (the distribution of the CLIP stand-in embeddings, the same for
every subject), not of the brain; so the part of the gap due to shared brain structure is the
gap at small ``rho`` minus the gap at ``rho = 1`` (the ``shared-structure gain`` column).

Metrics on the target's test set (300 stimuli, repeat-averaged): 100-way retrieval top-1
(brain->image, 30 draws of 100 out of 300, the same draws for every method) and 2-way
identification; the gap to scratch is taken on 2-way, the finer-grained of the two at these
sizes. Spreads: with one seed, 95 % intervals over test items (2-way; paired per item for the
gap) and over retrieval draws -- test-set sampling only; with several seeds (full form), mean +-
standard deviation over seeds, each seed a freshly drawn simulated world, pretraining and
adaptation.

The notes' anchor: MindEye2 with one session (750 trials) of a new subject reaches 79.0 % / 57.4 %
300-way retrieval on NSD (recalled, R); MindBridge's reset-tuning uses 4000 target trials.

Run: ``python -m benchmarks --only brain_adaptation`` (quick) or ``--full``.
"""

from __future__ import annotations

import dataclasses
import pathlib
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

COLUMNS = ("rho", "n_target", "method", "source", "img-ret (brain->image)", "img-ret 95% / sd", "2-way",
           "2-way 95% / sd", "gap vs scratch (2-way)", "gap 95% / sd", "shared-structure gain (2-way)", "seeds")
PRETRAINED_KIND = {"reset_tuning": "mindbridge", "adapters_only": "adapters", "new_linear_only": "mindeye2"}
RIDGE_ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
Z_95 = 1.96


@dataclasses.dataclass(frozen=True)
class Plan:
    config: de.DecodingConfig
    pretrain_steps: int
    rhos: tuple[float, ...]
    n_targets: tuple[int, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]


def plan(quick: bool) -> Plan:
    if quick:
        sim = SimulatorConfig.tiny(n_test_stimuli=300)
        cfg = de.DecodingConfig(simulator=sim, n_way=100, mixco_fraction=0.0,
                                train=TrainConfig(steps=100, batch_size=32, log_every=1000, progress=False,
                                                  tensorboard=False))
        return Plan(cfg, 300, (0.2, 1.0), (75,), ("scratch_ridge", "scratch", "reset_tuning", "adapters_only"), (0,))
    base = de.PRESETS["paper"][1]
    cfg = dataclasses.replace(base, hidden=1024, train=dataclasses.replace(base.train, steps=3000, checkpoint_every=0))
    methods = ("scratch_ridge", "scratch", "reset_tuning", "adapters_only", "new_linear_only")
    return Plan(cfg, 6000, (0.2, 1.0), (75, 750, 4000), methods, (0, 1, 2))


def _scores(pred: np.ndarray, target: de.SubjectData, n_way: int) -> dict[str, np.ndarray]:
    """Per-draw retrieval (fixed key: the same draws for every method) and per-item 2-way."""
    ret = retrieval(pred, target.test_target, jax.random.key(0), n_way=min(n_way, len(pred)))
    return {"ret": np.asarray(ret["brain_to_image"]["draws"]),
            "two_way": np.asarray(two_way_identification(pred, target.test_target, per_item=True))}


def _ridge_prediction(target: de.SubjectData) -> np.ndarray:
    fit = fit_ridge_cv(target.train_voxels, target.train_target, RIDGE_ALPHAS, per_target=False)
    return np.asarray(fit.model.predict(target.test_voxels))


def _seed_scores(p: Plan, rho: float, seed: int) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """``{(n_target, method): per-draw / per-item scores}`` for one simulated world."""
    sim_config = dataclasses.replace(p.config.simulator, rho=rho, seed=seed)
    cfg = dataclasses.replace(p.config, simulator=sim_config, train=dataclasses.replace(p.config.train, seed=seed))
    sim = Simulation(sim_config)
    *source_ids, target_id = range(len(sim_config.voxels))
    sources = [de.subject_data(sim, s) for s in source_ids]
    pretrain_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=p.pretrain_steps))
    pretrained = {
        kind: de.train_subjects(dataclasses.replace(pretrain_cfg, model=kind), sources).model
        for kind in sorted({PRETRAINED_KIND[m] for m in p.methods if m in PRETRAINED_KIND})
    }
    out = {}
    for n_target in p.n_targets:
        target = de.subject_data(sim, target_id, n_train=n_target)
        for method in tqdm(p.methods, desc=f"brain_adaptation rho={rho} n={n_target} seed={seed}", leave=False):
            if method == "scratch_ridge":
                pred = _ridge_prediction(target)
            else:
                model = de.train_adapted(cfg, method, target, sources,
                                         pretrained=pretrained.get(PRETRAINED_KIND.get(method))).model
                pred = de.predict(model, target.test_voxels, target.subject)
            out[n_target, method] = _scores(pred, target, cfg.n_way)
    return out


def _summary(per_seed: list[np.ndarray]) -> tuple[float, str]:
    """Mean and spread: a 95 % interval over items/draws for one seed, else +- sd over seeds."""
    if len(per_seed) == 1:
        v = per_seed[0]
        return float(v.mean()), f"+-{Z_95 * v.std() / np.sqrt(len(v)):.3f} (95%)"
    means = np.array([v.mean() for v in per_seed])
    return float(means.mean()), f"+-{means.std(ddof=1):.3f} (sd)"


def run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]:
    p = plan(quick)
    start = time.perf_counter()
    scores = {(rho, seed): _seed_scores(p, rho, seed) for rho in p.rhos for seed in p.seeds}
    rows, gaps = [], {}
    for rho in p.rhos:
        for n_target in p.n_targets:
            for method in p.methods:
                per = [scores[rho, s][n_target, method] for s in p.seeds]
                base = [scores[rho, s][n_target, "scratch"] for s in p.seeds]
                ret, ret_spread = _summary([x["ret"] for x in per])
                two, two_spread = _summary([x["two_way"] for x in per])
                gap, gap_spread = _summary([x["two_way"] - b["two_way"] for x, b in zip(per, base)])
                gaps[rho, n_target, method] = gap
                rows.append({"rho": rho, "n_target": n_target, "method": method, "source": "simulated (ours)",
                             "img-ret (brain->image)": ret, "img-ret 95% / sd": ret_spread, "2-way": two,
                             "2-way 95% / sd": two_spread, "gap vs scratch (2-way)": gap, "gap 95% / sd": gap_spread,
                             "seeds": len(p.seeds)})
    control = max(p.rhos)
    for row in rows:
        if row["rho"] != control and row["method"] != "scratch":
            row["shared-structure gain (2-way)"] = row["gap vs scratch (2-way)"] - gaps[control, row["n_target"],
                                                                                       row["method"]]
    rows.append({"rho": None, "n_target": 750, "method": "MindEye2 (1 h), new-subject fine-tune",
                 "source": "paper (NSD, recalled R)", "img-ret (brain->image)": 0.790, "2-way": 0.792})
    sim, cfg = p.config.simulator, p.config
    n_way = min(cfg.n_way, sim.n_test_stimuli)
    notes = (
        f"Simulated fMRI ({'quick: tiny simulator' if quick else 'full: calibrated simulator'}, voxels {sim.voxels}: "
        f"subjects {tuple(range(len(sim.voxels) - 1))} are the sources, the last one the target; "
        f"{sim.n_train_stimuli} train stimuli x {sim.n_repeats} repeats per source, {sim.n_test_stimuli} test stimuli). "
        f"Pretraining {p.pretrain_steps} steps, adaptation {cfg.train.steps} steps of batch {cfg.train.batch_size}, "
        f"hidden {cfg.hidden}; {n_way}-way retrieval (chance {1 / n_way:.1%}, 30 draws) and 2-way identification "
        f"(chance 50 %). rho = weight of the private component (1 = subjects share nothing: the negative control); "
        f"'shared-structure gain' = gap at this rho minus the gap of the same method at rho = {control}. "
        + ("Quick form (sized for the main job's time budget): n_target = 75 only, one seed, so the spreads are 95 % "
           "intervals over test items (2-way; paired per item for the gap) and retrieval draws: test-set sampling "
           "only, not training-seed variation; new-linear-only in the full form only. " if len(p.seeds) == 1 else
           f"{len(p.seeds)} seeds (each a new simulated world, pretraining and adaptation): mean +- sd over seeds. ")
        + f"{time.perf_counter() - start:.0f} s on {len(jax.devices())} {jax.devices()[0].platform} device(s). "
        "The 'paper' row is the notes' recalled NSD anchor (real data, 300-way), not comparable one to one."
        + (" MindEye2's BiMixCo phase is off (too short a schedule for it)." if cfg.mixco_fraction == 0 else "")
    )
    table = tables.Table("brain_adaptation", "New-subject adaptation on simulated fMRI", COLUMNS, rows, notes)

    def plot(ax):
        for rho in p.rhos:
            for method in p.methods:
                pts = [(r["n_target"], r["2-way"]) for r in rows if r["rho"] == rho and r["method"] == method]
                ax.plot(*zip(*pts), marker="o", ls="-" if rho < control else "--", label=f"{method} (rho={rho})")
        ax.axhline(0.5, color="k", lw=0.8, ls=":", label="chance")
        ax.set_xscale("log")
        ax.set_xlabel("target trials")
        ax.set_ylabel("2-way identification (target test set)")
        ax.legend(fontsize=6)

    return [tables.write_table(table, results_dir, plot=plot)]
