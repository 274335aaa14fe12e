"""Training metrics to JSON lines and TensorBoard, written by process 0 only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax


class MetricWriter:
    """Append ``{"step": s, **metrics}`` lines to ``<workdir>/metrics.jsonl`` and scalars to a
    TensorBoard event file in ``<workdir>/tensorboard``. Without a workdir it only keeps the
    history in memory (``self.history``)."""

    def __init__(self, workdir: str | Path | None, tensorboard: bool = True):
        self.history: list[dict[str, Any]] = []
        self._jsonl = None
        self._tb = None
        if workdir and jax.process_index() == 0:
            path = Path(workdir)
            path.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(path / "metrics.jsonl", "a", encoding="utf-8")
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(path / "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else str(value)
        self.history.append(row)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, float(value), int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
