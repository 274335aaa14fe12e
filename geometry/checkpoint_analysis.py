"""Geometry of one layer's representations across every checkpoint of a training run.

Given a run written by ``core`` (``<workdir>/checkpoints``), an experiment module and probe
inputs, the checkpoints are stacked in memory-bounded chunks (``core.checkpoint.iter_stacks``)
and the representation function is ``jax.vmap``-ed over each chunk (one compile per chunk
shape); the spectral metrics (RankMe, alpha-ReQ) and the local intrinsic dimension (exact kNN +
TwoNN on every neighbourhood, :func:`geometry.knn.knn_unchecked`) are computed inside the same
vmapped function. Writes a table and a metric-vs-step plot.

    python -m geometry.checkpoint_analysis --workdir runs/stdlib_lm --experiment interp.stdlib_lm \\
        --preset tiny --layer 1

An experiment module exposes ``PRESETS``, ``model_and_optimizer(config)``,
``probe_tokens(config, n)`` (or ``probe_inputs``) and ``representations(model, inputs, layer)``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from flax import nnx
from tqdm.auto import tqdm

from core import checkpoint, config as config_lib, mesh as mesh_lib
from core.tables import Table, write_table
from core.train import init_state
from geometry.knn import knn_unchecked
from geometry.local_id import local_twonn_from_neighbours
from geometry.spectra import alpha_req, rankme, rankme_pca

METRICS = ("rankme", "rankme_pca", "alpha_req", "alpha_req_r2", "local_id_mean", "local_id_std")


def spectral_metrics(reps: jax.Array, fit_ranks: tuple[int, int]) -> dict[str, jax.Array]:
    """RankMe (both definitions) and alpha-ReQ of one representation matrix; vmap-able."""
    fit = alpha_req(reps, fit_ranks=fit_ranks)
    return {
        "rankme": rankme(reps),
        "rankme_pca": rankme_pca(reps),
        "alpha_req": fit["alpha"],
        "alpha_req_r2": fit["r2"],
    }


def analyse_run(
    directory: str | Path,
    graphdef: nnx.GraphDef,
    target: Any,
    representation_fn: Callable[[nnx.Module], jax.Array],
    steps: Sequence[int] | None = None,
    chunk: int = 8,
    n_neighbors: int = 128,
    fit_ranks: tuple[int, int] = (12, 100),
    local_id: bool = True,
) -> dict[str, np.ndarray]:
    """Metrics of ``representation_fn(model)`` ([N, D]) for every checkpoint in ``directory``.

    ``target`` is the abstract training state (``core.checkpoint.abstract_like``). Returns
    ``{"step": [K], metric: [K]}``; the local ID columns are nan without ``local_id`` (and for a
    checkpoint whose representations are not finite).
    """
    steps = list(steps) if steps is not None else checkpoint.list_steps(directory)
    if not steps:
        raise ValueError(f"directory={str(directory)!r}: no checkpoints to analyse")

    def per_state(state):
        reps = representation_fn(nnx.merge(graphdef, state["params"], state["rest"]))
        metrics = spectral_metrics(reps, fit_ranks)
        local = jnp.full((reps.shape[0],), jnp.nan, reps.dtype)
        if local_id:
            finite = jnp.isfinite(reps).all()
            clean = jnp.where(finite, reps, 0.0)
            _, idx = knn_unchecked(clean, min(n_neighbors, reps.shape[0] - 1))
            local = jnp.where(finite, local_twonn_from_neighbours(clean, idx), jnp.nan)
        return {**metrics, "local_id_mean": jnp.nanmean(local), "local_id_std": jnp.nanstd(local)}

    batched = jax.jit(jax.vmap(per_state))
    results: dict[str, list] = {name: [] for name in ("step", *METRICS)}
    with tqdm(total=len(steps), desc="checkpoints", dynamic_ncols=True) as bar:
        for part, stack in checkpoint.iter_stacks(directory, steps, target, chunk=chunk):
            metrics = jax.device_get(batched(stack))
            results["step"] += list(part)
            for name in METRICS:
                results[name] += [float(v) for v in metrics[name][: len(part)]]
            bar.update(len(part))
    return {k: np.asarray(v) for k, v in results.items()}


def write_results(results: dict[str, np.ndarray], results_dir: str | Path, name: str, notes: str) -> Path:
    """Table (one row per checkpoint) and a plot of every metric against the step."""
    rows = [{k: (int(v[i]) if k == "step" else float(v[i])) for k, v in results.items()} for i in range(len(results["step"]))]
    table = Table(name=name, title="Representation geometry across training", columns=["step", *METRICS],
                  rows=rows, notes=notes)

    def plot(ax):
        steps = results["step"]
        for metric, style in (("rankme", "o-"), ("rankme_pca", "s-"), ("local_id_mean", "^-")):
            ax.plot(steps, results[metric], style, label=metric)
        ax.set_xlabel("training step")
        ax.set_ylabel("effective rank / dimension")
        twin = ax.twinx()
        twin.plot(steps, results["alpha_req"], "d--", color="tab:red", label="alpha-ReQ")
        twin.set_ylabel("alpha-ReQ")
        ax.legend(loc="upper left", fontsize=8)
        twin.legend(loc="upper right", fontsize=8)

    return write_table(table, results_dir, plot=plot)


@dataclasses.dataclass(frozen=True)
class AnalysisArgs:
    """Analyse the representation geometry of every checkpoint of a core training run."""

    workdir: str
    experiment: str = "interp.stdlib_lm"
    preset: str = "tiny"
    layer: int = 0
    n_sequences: int = 16
    chunk: int = 8
    n_neighbors: int = 128
    fit_ranks: tuple[int, int] = (12, 100)
    results_dir: str = "results"
    name: str = "checkpoint_geometry"


def analyse_experiment(args: AnalysisArgs) -> tuple[dict[str, np.ndarray], Path]:
    """Build the experiment's model, restore its checkpoints and analyse them (the CLI's work)."""
    module: Any = importlib.import_module(args.experiment)
    for needed in ("PRESETS", "model_and_optimizer", "representations", "probe_tokens"):
        if not hasattr(module, needed):
            raise ValueError(f"experiment={args.experiment!r}: expected a module defining {needed}")
    if args.preset not in module.PRESETS:
        raise ValueError(f"preset={args.preset!r}: expected one of {sorted(module.PRESETS)}")
    directory = Path(args.workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist")
    config = config_lib.from_dict(type(module.PRESETS[args.preset][1]), checkpoint_config(directory))
    mesh = mesh_lib.make_mesh(config.mesh)
    model_fn, optimizer = module.model_and_optimizer(config)
    graphdef, state, _ = init_state(mesh_lib.create_sharded(model_fn, mesh), optimizer, mesh)
    inputs = module.probe_tokens(config, args.n_sequences)
    results = analyse_run(
        directory,
        graphdef,
        checkpoint.abstract_like(state),
        lambda model: module.representations(model, inputs, args.layer),
        chunk=args.chunk,
        n_neighbors=args.n_neighbors,
        fit_ranks=args.fit_ranks,
    )
    notes = (f"{args.experiment} preset {args.preset}, layer {args.layer} residual stream on "
             f"{args.n_sequences} held-out sequences; alpha-ReQ fit ranks {args.fit_ranks}; local ID = "
             f"TwoNN on each point's {args.n_neighbors} nearest neighbours (P24).")
    return results, write_results(results, args.results_dir, args.name, notes)


def checkpoint_config(directory: Path) -> dict:
    """The resolved config saved with the newest checkpoint of ``directory``."""
    with checkpoint.Checkpointer(directory, async_save=False) as ckpt:
        steps = ckpt.steps()
        if not steps:
            raise ValueError(f"directory={str(directory)!r}: no checkpoints")
        return ckpt.config(steps[-1])


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(AnalysisArgs, args=argv)
    _, path = analyse_experiment(args)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
