"""The core layer end to end: digits classifier trained across all local devices with
checkpoints, interrupted and resumed, then a ``vmap`` analysis over every saved checkpoint."""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax

from core import config as config_lib
from core import demo
from core.tables import Table, write_table


def run(quick: bool, results_dir: Path) -> list[Path]:
    base = demo.PRESETS["tiny" if quick else "full"][1]
    with tempfile.TemporaryDirectory() as workdir:
        config = config_lib.override(base, {"train.workdir": workdir, "train.progress": False})
        half = config_lib.override(config, {"train.steps": config.train.steps // 2})
        first = demo.run(half)
        second = demo.run(config)
        analysis = demo.analyse_checkpoints(config)
    rows = [
        {
            "step": int(s),
            "test accuracy": float(a),
            "test loss": float(l),
            "parameter norm": float(n),
        }
        for s, a, l, n in zip(analysis["step"], analysis["accuracy"], analysis["loss"], analysis["param_norm"])
    ]
    mesh = config.mesh
    notes = (
        f"MLP {config.model.depth}x{config.model.hidden} on scikit-learn digits (1437 train / 360 test), "
        f"{len(jax.devices())} {jax.devices()[0].platform} devices, mesh data={mesh.data} fsdp={mesh.fsdp} "
        f"tensor={mesh.tensor}. Trained to step {first.step}, stopped, resumed from checkpoint "
        f"{second.resumed_from} to step {second.step}. The rows come from one jitted `vmap` over "
        f"the {len(rows)} checkpoints stacked by `core.checkpoint.load_stack`."
    )
    table = Table(
        name="core_demo",
        title="Core demo: accuracy and parameter norm per checkpoint (vmap over checkpoints)",
        columns=["step", "test accuracy", "test loss", "parameter norm"],
        rows=rows,
        notes=notes,
    )

    def plot(ax):
        steps = [r["step"] for r in rows]
        ax.plot(steps, [r["test accuracy"] for r in rows], "o-", label="test accuracy")
        ax.set_xlabel("step")
        ax.set_ylabel("test accuracy")
        ax.axvline(first.step, color="grey", ls=":", label="resume point")
        twin = ax.twinx()
        twin.plot(steps, [r["parameter norm"] for r in rows], "s--", color="tab:orange", label="parameter norm")
        twin.set_ylabel("parameter norm")
        ax.legend(loc="lower right")

    return [write_table(table, results_dir, plot=plot)]

