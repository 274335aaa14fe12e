"""P11 / P24 on our own run: RankMe, alpha-ReQ and mean local intrinsic dimension of a small
GPT's residual stream across training on the standard library's docstrings, and the cost of the
vmapped checkpoint analysis against a per-checkpoint loop (K = 32 checkpoints).

The papers track these curves on large pretrained LMs (P11: OLMo/Pythia, RankMe rising then
collapsing through phases; P24: mean local ID falling as training converges); this is the same
analysis at toy scale, not a reproduction of their numbers.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from core import checkpoint, config as config_lib, mesh as mesh_lib
from core.tables import Table, write_table
from core.train import init_state
from geometry.checkpoint_analysis import analyse_run, spectral_metrics, write_results
from geometry.local_id import local_twonn
from interp import stdlib_lm

LAYER = 1
LOCAL_NEIGHBOURS = 128


def run(quick: bool, results_dir: Path) -> list[Path]:
    preset = "tiny" if quick else "small"
    k = 32
    base = stdlib_lm.PRESETS[preset][1]
    steps = 160 if quick else base.train.steps
    fit_ranks = (5, 60) if quick else (12, 100)
    with tempfile.TemporaryDirectory() as workdir:
        config = config_lib.override(base, {
            "train.workdir": workdir, "train.steps": steps, "train.checkpoint_every": steps // k,
            "train.keep_checkpoints": k, "train.progress": False, "train.eval_every": 0,
        })
        stdlib_lm.run(config)
        directory = Path(workdir) / "checkpoints"
        mesh = mesh_lib.make_mesh(config.mesh)
        model_fn, optimizer = stdlib_lm.model_and_optimizer(config)
        graphdef, state, _ = init_state(mesh_lib.create_sharded(model_fn, mesh), optimizer, mesh)
        target = checkpoint.abstract_like(state)
        tokens = stdlib_lm.probe_tokens(config, 16 if quick else 32)

        def reps_of(model):
            return stdlib_lm.representations(model, tokens, LAYER)

        start = time.perf_counter()
        full = analyse_run(directory, graphdef, target, reps_of, chunk=8, n_neighbors=LOCAL_NEIGHBOURS,
                           fit_ranks=fit_ranks)
        vmapped_seconds = time.perf_counter() - start

        start = time.perf_counter()
        loop_reps = jax.jit(lambda s: reps_of(nnx.merge(graphdef, s["params"], s["rest"])))
        loop_spectral = jax.jit(lambda reps: spectral_metrics(reps, fit_ranks))
        loop_rankme, loop_local = [], []
        with checkpoint.Checkpointer(directory, async_save=False) as ckpt:
            for step in ckpt.steps():
                _, s = ckpt.restore(checkpoint.host_target(target), step=step)
                reps = loop_reps(s)
                loop_rankme.append(float(loop_spectral(reps)["rankme"]))
                loop_local.append(float(np.nanmean(np.asarray(local_twonn(reps, LOCAL_NEIGHBOURS)))))
        loop_seconds = time.perf_counter() - start
        np.testing.assert_allclose(full["rankme"], loop_rankme, rtol=1e-4)
        np.testing.assert_allclose(full["local_id_mean"], loop_local, rtol=1e-4)
    notes = (
        f"GPT preset {preset} ({config.model.n_layers} layers, d={config.model.d_model}) trained {steps} steps on "
        f"stdlib docstrings with core.train, checkpoints every {steps // k} steps; layer {LAYER} residual "
        f"stream of {tokens.shape[0]} held-out sequences x {tokens.shape[1]} tokens; alpha-ReQ fit ranks "
        f"{fit_ranks}; local ID = TwoNN on 128 neighbours. Toy scale: compare trends, not values, with P11/P24."
    )
    timing = Table(
        name="geometry_checkpoint_analysis_speed",
        title=f"Checkpoint analysis over K = {k} checkpoints: vmapped chunks vs a loop",
        columns=["method", "seconds", "speed-up"],
        rows=[
            {"method": "load_stack chunks of 8 + jit(vmap)", "seconds": vmapped_seconds, "speed-up": loop_seconds / vmapped_seconds},
            {"method": "restore (one device) + jit per checkpoint (loop)", "seconds": loop_seconds, "speed-up": 1.0},
        ],
        notes=(f"RankMe, RankMe-PCA, alpha-ReQ and mean local ID (TwoNN, L = {LOCAL_NEIGHBOURS}) of "
               f"the same representations; identical values (rtol 1e-4); both include restoring "
               f"the checkpoints and one compilation. {jax.devices()[0].platform}."),
    )
    return [write_results(full, results_dir, "geometry_lm_checkpoints", notes), write_table(timing, results_dir)]
