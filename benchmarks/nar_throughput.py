"""P01 NAR: decoding throughput of NAR vs PAR-4X vs raster-AR on the same backbone and batch.

All samplers run in one process on the same device, preset, batch, grid, dtype and CFG
setting (batch [cond; uncond]); images/s are reported as ratios against NAR, beside the paper's
(NAR-B 419.7 img/s = 2.4x PAR-B-4X 174.1 and 3.6x LlamaGen-B 117.9, one A100). NAR runs
twice: one scan padded to the widest ring, and ring widths rounded up to 4 ("NAR-b4", less
padded work, several scans). ``slots fed`` counts the padded token slots all steps process
(the image has N tokens). Also: time per
decode step relative to one full teacher-forced forward pass over the whole sequence (same
batch), i.e. how far each step is from the cost of a full pass.

Run another size on an accelerator::

    python -m benchmarks.nar_throughput --preset B --batch 64 --dtype bfloat16

or call :func:`measure` (``measure("L", batch=32, grid=(16, 16))``). Weights are random: speed
does not depend on them.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from tqdm.auto import tqdm

from core.tables import Table, write_table
from nar_jax import loss, model, order, sample

# name -> (order, PAR regions k, NAR bucket); "NAR-b4": ring widths rounded up to 4, not to R.
ORDERS = {"NAR": ("nar", None, None), "NAR-b4": ("nar", None, 4), "PAR-4X": ("par", 4, None),
          "raster": ("raster", None, None)}
PAPER_IMG_S = {"NAR": 419.7, "PAR-4X": 174.1, "raster": 117.9}  # NAR-B / PAR-B-4X / LlamaGen-B


def _timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(preset: str = "tiny", batch: int = 8, grid: tuple[int, int] = (16, 16),
            dtype: str = "float32", cfg: bool = True, repeats: int = 3,
            progress: bool = True) -> list[dict]:
    """One row per order: steps, images/s, NAR's speed-up, step cost vs one full forward."""
    if batch <= 0 or repeats <= 0:
        raise ValueError(f"batch={batch}, repeats={repeats}: expected positive integers")
    rows = []
    labels = jnp.arange(batch) % model.preset(preset).num_classes
    for name, (kind, k, bucket) in tqdm(ORDERS.items(), desc="nar throughput",
                                        disable=not progress):
        plan = order.make_plan(kind, grid, k=k, bucket=bucket)
        config = model.for_plan(preset, plan, dtype=dtype)
        net = model.Transformer(config, rngs=nnx.Rngs(0))
        sampler = sample.Sampler(net, plan, cfg=cfg)
        t_decode = _timed(lambda: sampler(net, labels, jax.random.key(0), 2.0 if cfg else 1.0),
                          repeats)
        nb = 2 * batch if cfg else batch
        tokens = jnp.zeros((nb, plan.num_tokens), jnp.int32)
        full = nnx.jit(loss.plan_head_logits, static_argnums=(3,))
        all_labels = jnp.arange(nb) % config.num_classes
        t_full = _timed(lambda: full(net, tokens, all_labels, plan), repeats)
        rows.append({
            "order": name,
            "steps": plan.num_steps,
            "slots fed": sum(p.steps * p.feed_raster.shape[1] for p in plan.phases),
            "images/s": batch / t_decode,
            "step ms": 1e3 * t_decode / plan.num_steps,
            "step / full forward": t_decode / plan.num_steps / t_full,
            "decode / full forward": t_decode / t_full,
        })
    nar = max(r["images/s"] for r in rows if r["order"].startswith("NAR"))
    for row in rows:
        row["best NAR speed-up (ours)"] = nar / row["images/s"]
        paper = PAPER_IMG_S.get(row["order"])
        row["NAR speed-up (paper)"] = PAPER_IMG_S["NAR"] / paper if paper else None
    return rows


COLUMNS = ["order", "steps", "slots fed", "images/s", "best NAR speed-up (ours)",
           "NAR speed-up (paper)", "step ms", "step / full forward", "decode / full forward"]


def write(rows, results_dir: Path, name: str, notes: str) -> Path:
    table = Table(name=name, title="P01 NAR: decoding throughput, NAR vs PAR-4X vs raster",
                  columns=COLUMNS, rows=rows, notes=notes)

    def plot(ax):
        ax.bar([r["order"] for r in rows], [r["images/s"] for r in rows])
        ax.set_ylabel("images / s")

    return write_table(table, results_dir, plot=plot)


def _notes(preset, batch, grid, dtype, cfg):
    dev = jax.devices()[0]
    return (f"preset {preset} (random weights), batch {batch}{' x2 for CFG' if cfg else ''}, "
            f"grid {grid[0]}x{grid[1]}, {dtype}, one {dev.platform} device ({dev.device_kind}); "
            "same process, median of repeats after a compile run. Paper: ImageNet 256, one A100, "
            "max batch, B-size models.")


def run(quick: bool, results_dir: Path) -> list[Path]:
    preset, batch, grid = ("tiny", 8, (8, 8)) if quick else ("tiny", 32, (16, 16))
    rows = measure(preset, batch, grid, repeats=2 if quick else 5)
    return [write(rows, results_dir, "nar_throughput",
                  _notes(preset, batch, grid, "float32", True) + " Tiny CPU scale: per-step "
                  "overhead, not FLOPs, dominates, so ratios differ from the GPU paper's.")]


@dataclasses.dataclass(frozen=True)
class Args:
    """Measure NAR / PAR-4X / raster decoding throughput for one model size."""

    preset: str = "B"
    batch: int = 64
    grid: tuple[int, int] = (16, 16)
    dtype: str = "bfloat16"
    cfg: bool = True
    repeats: int = 3
    results_dir: Path = Path("results")


if __name__ == "__main__":
    import tyro

    args = tyro.cli(Args)
    rows = measure(args.preset, args.batch, args.grid, args.dtype, args.cfg, args.repeats)
    path = write(rows, args.results_dir, f"nar_throughput_{args.preset}",
                 _notes(args.preset, args.batch, args.grid, args.dtype, args.cfg))
    print(path.read_text())
