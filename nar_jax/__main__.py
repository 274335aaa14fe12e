"""P01 NAR command line: ``python -m nar_jax {train,sample,evaluate} PRESET [--overrides]``.

    python -m nar_jax train tiny --workdir runs/nar --order nar      # train (resumes if present)
    python -m nar_jax sample tiny --workdir runs/nar                  # PNG grid, one row per class
    python -m nar_jax evaluate tiny --workdir runs/nar                # class accuracy, Frechet distance

Presets and options are those of :mod:`nar_jax.experiment` (``--help`` after the preset lists
them). ``sample`` and ``evaluate`` read the trained run's config from its newest checkpoint; from
the command line they take only ``--sample.*``, ``--evaluation.*``, ``--mesh.*`` and
``--num-devices``.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from core import config as config_lib
from core import mesh as mesh_lib
from nar_jax import experiment

COMMANDS = ("train", "sample", "evaluate")
RUNTIME_FIELDS = ("sample", "evaluation", "mesh", "num_devices", "workdir", "distributed")


def _trained_config(config: experiment.NARExperimentConfig) -> experiment.NARExperimentConfig:
    if not config.workdir:
        raise ValueError("workdir: expected --workdir of a trained run")
    saved = experiment.saved_config(config.workdir)
    differ = [f.name for f in dataclasses.fields(config)
              if f.name not in RUNTIME_FIELDS and getattr(config, f.name) != getattr(saved, f.name)]
    if differ:
        print(f"note: using the trained run's settings for {differ}", file=sys.stderr)
    return dataclasses.replace(saved, **{k: getattr(config, k) for k in RUNTIME_FIELDS})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m nar_jax {{{','.join(COMMANDS)}}} PRESET [--overrides]\n"
              f"presets: {sorted(experiment.PRESETS)}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    config = config_lib.cli(experiment.PRESETS, args=rest,
                            description=f"nar_jax {command}: " + __doc__.splitlines()[0])
    if config.distributed:
        mesh_lib.initialize_distributed()
    if command == "train":
        return experiment.train_and_report(config)
    config = _trained_config(config)
    if command == "sample":
        result = experiment.sample_images(config)
        print(f"step {result['step']}: tokens -> {result['tokens_path']}"
              + (f", images -> {result['png']}" if "png" in result else ""))
        return 0
    print(json.dumps(experiment.evaluate(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
