"""The main job: run every registered benchmark and write ``REPORT.md`` beside the tables.

    python -m benchmarks                      # quick form of every benchmark -> results/quick/
    python -m benchmarks --full               # the full forms (paper scale where possible) -> results/
    python -m benchmarks --only core_demo nar_steps

A benchmark registers itself by being a module ``benchmarks/<area>_<name>.py`` that defines
``run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]`` (the Markdown tables it
wrote). On a CPU-only machine the host is split into ``--host-devices`` fake devices so that
sharding is exercised; on an accelerator the real devices are used.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Run the registered benchmarks and write results/REPORT.md."""

    full: bool = False
    only: tuple[str, ...] = ()
    results_dir: Path | None = None
    """Default: ``results/quick`` for the quick forms, ``results`` for ``--full``."""
    host_devices: int = 8


def registered() -> list[str]:
    """Names of the benchmark modules, sorted (core first)."""
    import benchmarks

    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (not n.startswith("core"), n))


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.host_devices}".strip()
    import jax
    from tqdm.auto import tqdm

    names = registered()
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        print(f"--only: unknown benchmarks {unknown}; registered: {names}", file=sys.stderr)
        return 2
    if args.only:
        names = [n for n in names if n in args.only]
    results_dir = args.results_dir or (Path("results") if args.full else Path("results/quick"))
    results_dir.mkdir(parents=True, exist_ok=True)
    sections, summary, failed = [], [], []
    for name in tqdm(names, desc="benchmarks", dynamic_ncols=True):
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            paths = module.run(quick=not args.full, results_dir=results_dir)
            status = "ok"
            sections += [Path(p).read_text() for p in paths]
        except Exception:
            status = "FAILED"
            failed.append(name)
            sections.append(f"## {name}: FAILED\n\n```\n{traceback.format_exc()}```\n")
        summary.append(f"| {name} | {status} | {time.perf_counter() - start:.1f} |")

    devices = jax.devices()
    header = [
        "# Benchmark report",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{'full' if args.full else 'quick'} forms; jax {jax.__version__}; "
        f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform}); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores.",
        "",
        "| benchmark | status | seconds |",
        "|---|---|---|",
        *summary,
        "",
    ]
    from core.tables import atomic_write

    report = results_dir / ("REPORT.md" if not args.only else "REPORT-partial.md")
    atomic_write(report, "\n".join(header) + "\n" + "\n".join(sections))
    print(f"wrote {report}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
