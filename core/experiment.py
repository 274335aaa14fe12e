"""The command line of a training experiment: preset + overrides, multi-process start, run,
and the exit status a scheduler expects (143 after a SIGTERM checkpoint)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from core import config as config_lib, mesh as mesh_lib
from core.train import TrainResult

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect from a preempted job


def main(
    presets: Mapping[str, tuple[str, Any]],
    run: Callable[[Any], TrainResult],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    summary: Callable[[TrainResult], str] | None = None,
) -> int:
    """Parse ``PRESET [--overrides]``, start ``jax.distributed`` when the config's
    ``distributed`` flag is set, call ``run(config)`` and return the process exit status."""
    config = config_lib.cli(presets, args=argv, description=description)
    if getattr(config, "distributed", False):
        mesh_lib.initialize_distributed()
    result = run(config)
    if result.preempted:
        print(f"preempted: checkpoint saved at step {result.step}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    if summary is not None and jax.process_index() == 0:
        print(summary(result))
    return 0
