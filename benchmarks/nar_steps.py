"""P01 NAR: generation steps (model forward passes) of raster-AR, PAR-4X, PAR-16X and NAR.

Counted from the decode plans that the sampler runs (prefill + scan steps), not from formulas;
the ``formula`` column is the paper's count (raster N, PAR-kX k + N/k - 1, NAR h + w - 1,
video t + h + w - 2) and ``paper`` the figure published where there is one.
"""

from __future__ import annotations

from pathlib import Path

from core.tables import Table, write_table
from nar_jax import order

GRIDS = [(16, 16), (24, 24), (32, 32), (4, 16, 16)]
# Published step counts (NAR paper tables; PAR paper for PAR-16X at 16 x 16).
PAPER = {
    ((16, 16), "raster"): 256,
    ((16, 16), "PAR-4X"): 67,
    ((16, 16), "PAR-16X"): 31,
    ((16, 16), "NAR"): 31,
    ((32, 32), "NAR"): 63,
    ((4, 16, 16), "NAR"): 34,
}
ORDERS = [("raster", "raster", None), ("PAR-4X", "par", 4), ("PAR-16X", "par", 16),
          ("NAR", "nar", None)]


def run(quick: bool, results_dir: Path) -> list[Path]:
    rows = []
    for grid in GRIDS:
        for label, kind, k in ORDERS:
            if kind == "par" and len(grid) == 3:
                continue  # PAR's video split is not a square-region split of one frame
            plan = order.make_plan(kind, grid, k=k)
            rows.append({
                "grid": "x".join(map(str, grid)),
                "order": label,
                "tokens": plan.num_tokens,
                "ours": plan.num_steps,
                "formula": order.decode_steps(kind, grid, k),
                "paper": PAPER.get((grid, label)),
                "widest step (tokens)": max([1] + [p.feed_raster.shape[1] for p in plan.phases]),
            })
    table = Table(
        name="nar_steps",
        title="P01 NAR: decoding steps per image/video (forward passes incl. prefill)",
        columns=["grid", "order", "tokens", "ours", "formula", "paper", "widest step (tokens)"],
        rows=rows,
        notes="Steps counted from the static decode plans the sampler executes (1 prefill + "
              "scan steps). PAR-kX on video grids is not built here (image-only region split).",
    )
    return [write_table(table, results_dir)]
