"""Overhead of ``core.train`` against a bare hand-written ``jax.jit`` loop, and the cost of
restoring + stacking K = 32 checkpoints with ``load_stack`` against a loop of plain restores.

Both loops train the same model on the same grain batches with the same optimizer; each rate
is the difference of two run lengths (compile time cancels), measured in one process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from core import checkpoint, data, mesh as mesh_lib
from core.classifier import ClassifierConfig, MLPClassifier, classification_loss
from core.tables import Table, write_table
from core.train import MAX_STEPS_IN_FLIGHT, TrainConfig, init_state, make_train_step, train

# CPU: a step of a few ms; accelerator: a wide MLP so that a step is compute, not dispatch.
SIZES = {"cpu": (ClassifierConfig(hidden=512, depth=3), 256), "accelerator": (ClassifierConfig(hidden=4096, depth=4), 4096)}


def _size():
    return SIZES["cpu" if jax.devices()[0].platform == "cpu" else "accelerator"]


def _model(config: ClassifierConfig | None = None):
    return MLPClassifier(config or _size()[0], nnx.Rngs(0))


def _core_seconds(mesh, steps: int) -> float:
    batch = _size()[1]
    config = TrainConfig(steps=steps, batch_size=batch, log_every=50, progress=True)
    iterator = data.batches(data.digits("train"), batch, seed=0)
    start = time.perf_counter()
    result = train(_model, classification_loss, optax.adam(1e-3), iterator, config, mesh)
    jax.block_until_ready(result.state)
    return time.perf_counter() - start


def _bare_seconds(mesh, steps: int) -> float:
    start = time.perf_counter()
    optimizer = optax.adam(1e-3)
    model = mesh_lib.create_sharded(_model, mesh)
    graphdef, state, shardings = init_state(model, optimizer, mesh)
    step = jax.jit(make_train_step(graphdef, classification_loss, optimizer, 0), out_shardings=(shardings, None), donate_argnums=0)
    iterator = data.batches(data.digits("train"), _size()[1], seed=0)
    pending = []
    with jax.set_mesh(mesh):
        for _ in range(steps):
            state, metrics = step(state, mesh_lib.global_batch(mesh, next(iterator)))
            pending.append(metrics)
            if len(pending) > MAX_STEPS_IN_FLIGHT:
                jax.block_until_ready(pending.pop(0))
    jax.block_until_ready(state)
    return time.perf_counter() - start


def _rate(fn, mesh, short: int, long: int, repeats: int) -> float:
    best = []
    for _ in range(repeats):
        best.append((long - short) / max(fn(mesh, long) - fn(mesh, short), 1e-9))
    return float(np.median(best))


def _stack_seconds(k: int) -> tuple[float, float, float]:
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig())
    optimizer = optax.adam(1e-3)
    _, state, _ = init_state(mesh_lib.create_sharded(lambda: _model(SIZES["cpu"][0]), mesh), optimizer, mesh)
    target = checkpoint.abstract_like(state)
    with tempfile.TemporaryDirectory() as tmp:
        with checkpoint.Checkpointer(tmp, keep=k, async_save=False) as ckpt:
            for s in range(k):
                ckpt.save(s, state)
        start = time.perf_counter()
        stacked = checkpoint.load_stack(tmp, list(range(k)), target)
        jax.block_until_ready(stacked)
        stack_time = time.perf_counter() - start
        start = time.perf_counter()
        with checkpoint.Checkpointer(tmp, keep=k, async_save=False) as ckpt:
            states = [jax.device_get(ckpt.restore(target, step=s)[1]) for s in range(k)]
        reference = jax.tree.map(lambda *xs: np.stack(xs), *states)
        loop_time = time.perf_counter() - start
        np.testing.assert_array_equal(jax.tree.leaves(reference)[0], np.asarray(jax.tree.leaves(stacked)[0]))
    megabytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) * k / 2**20
    return stack_time, loop_time, megabytes


def run(quick: bool, results_dir: Path) -> list[Path]:
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig())
    short, long, repeats = (10, 60, 1) if quick else (100, 1000, 5)
    bare = _rate(_bare_seconds, mesh, short, long, repeats)
    core_rate = _rate(_core_seconds, mesh, short, long, repeats)
    k = 32
    stack_time, loop_time, megabytes = _stack_seconds(k)
    device = f"{len(jax.devices())} x {jax.devices()[0].device_kind}"
    loop_table = Table(
        name="core_loop",
        title="Training-loop overhead: core.train vs a bare jax.jit loop",
        columns=["loop", "steps/s", "ratio to bare", "overhead %", "goal"],
        rows=[
            {"loop": "bare jax.jit loop", "steps/s": bare, "ratio to bare": 1.0, "overhead %": 0.0, "goal": ""},
            {
                "loop": "core.train",
                "steps/s": core_rate,
                "ratio to bare": core_rate / bare,
                "overhead %": 100 * (1 - core_rate / bare),
                "goal": "< 5 %",
            },
        ],
        notes=(
            f"MLP {_size()[0].depth}x{_size()[0].hidden} on digits, global batch {_size()[1]}, Adam, on {device}, mesh "
            f"{dict(mesh.shape)}; rate = (long - short steps) / (time difference), {short} vs {long} "
            f"steps, median of {repeats}. core.train includes its progress bar, metrics every 50 "
            f"steps and the NaN guard; the bare loop uses the same step function, data and in-flight bound."
        ),
    )
    stack_table = Table(
        name="core_load_stack",
        title=f"Restore + stack K = {k} checkpoints",
        columns=["method", "seconds", "MiB/s", "ratio to loop"],
        rows=[
            {"method": "core.checkpoint.load_stack", "seconds": stack_time, "MiB/s": megabytes / stack_time, "ratio to loop": loop_time / stack_time},
            {"method": "loop of restores + np.stack", "seconds": loop_time, "MiB/s": megabytes / loop_time, "ratio to loop": 1.0},
        ],
        notes=f"{megabytes:.1f} MiB in all (model + Adam state of the {SIZES['cpu'][0].depth}x{SIZES['cpu'][0].hidden} MLP), local disk, {device}.",
    )
    return [write_table(loop_table, results_dir), write_table(stack_table, results_dir)]
