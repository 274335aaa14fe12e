"""Result tables: Markdown + JSON (+ an optional PNG plot) under ``results/``.

A table is a list of row dicts with named columns. Where a published figure exists, put it in
a ``paper`` column beside ``ours`` so a reader compares them on one line; ``notes`` says the
scale, data and hardware honestly. Files are written atomically (temp file + rename), so a
crashed benchmark never leaves a half-written table behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Table:
    """One result table. ``name`` is the file stem; ``columns`` fixes the column order."""

    name: str
    title: str
    columns: Sequence[str]
    rows: Sequence[Mapping[str, Any]]
    notes: str = ""

    def __post_init__(self):
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name={self.name!r}: expected a file stem without slashes or spaces")
        if not self.columns:
            raise ValueError("columns: expected at least one column name")
        for i, row in enumerate(self.rows):
            unknown = set(row) - set(self.columns)
            if unknown:
                raise ValueError(
                    f"rows[{i}] has keys {sorted(unknown)} not in columns={list(self.columns)}"
                )


def format_value(value: Any) -> str:
    """Human formatting for a Markdown cell: 4 significant digits for floats, '' for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def to_markdown(table: Table, image: str | None = None) -> str:
    """Render a table (and a link to its plot, if any) as a Markdown section."""
    lines = [f"## {table.title}", ""]
    if table.notes:
        lines += [table.notes, ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    for row in table.rows:
        lines.append("| " + " | ".join(format_value(row.get(c)) for c in table.columns) + " |")
    if image:
        lines += ["", f"![{table.title}]({image})"]
    return "\n".join(lines) + "\n"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(
    table: Table,
    results_dir: str | os.PathLike,
    plot: Callable[[Any], None] | None = None,
    panels: int | None = None,
) -> Path:
    """Write ``<name>.md`` and ``<name>.json`` (and ``<name>.png`` when ``plot`` is given).

    ``plot`` receives a matplotlib ``Axes`` and draws on it; with ``panels`` (an int) it receives a
    list of that many ``Axes`` in a row (shared y axis). Returns the Markdown path.
    """
    if panels is not None and (isinstance(panels, bool) or not isinstance(panels, int) or panels < 1):
        raise ValueError(f"panels={panels!r}: expected None or a positive int")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    image = None
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = panels or 1
        fig, axes = plt.subplots(1, n, figsize=(6.4 if n == 1 else 3.6 * n, 4.2), sharey=True, squeeze=False)
        try:
            if panels is None:
                plot(axes[0, 0])
                axes[0, 0].set_title(table.title, fontsize=10)
            else:
                plot(list(axes[0]))
                fig.suptitle(table.title, fontsize=10)
            fig.tight_layout()
            png = results_dir / f"{table.name}.png"
            fd, tmp = tempfile.mkstemp(dir=results_dir, suffix=".png")
            os.close(fd)
            fig.savefig(tmp, dpi=120)
            os.replace(tmp, png)
            image = png.name
        finally:
            plt.close(fig)
    payload = {
        "name": table.name,
        "title": table.title,
        "notes": table.notes,
        "columns": list(table.columns),
        "rows": [dict(r) for r in table.rows],
    }
    atomic_write(results_dir / f"{table.name}.json", json.dumps(payload, indent=2, default=_json_default))
    md = results_dir / f"{table.name}.md"
    atomic_write(md, to_markdown(table, image))
    return md
