"""Memory plan: parameter and optimizer bytes per device for a preset on a mesh, from abstract
shapes only (``jax.eval_shape``; nothing is allocated), so a user sees whether a ``paper``
preset fits before launching it on a pod.

    python -m core.plan --experiment core.demo --preset full --devices 256 --mesh.fsdp 16

An experiment module exposes ``PRESETS`` (name -> (description, config)) and
``model_and_optimizer(config) -> (model constructor, optax optimizer)``. Activations are not
counted (they depend on batch, remat and fusion); the report says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
import tyro
from flax import nnx
from jax.sharding import AbstractMesh, AxisType

from core.mesh import LOGICAL_AXIS_RULES, MESH_AXES, MeshConfig, _fill, logical_to_spec


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    devices: int
    mesh_shape: dict[str, int]
    parameters: int
    param_bytes_total: int
    param_bytes_per_device: int
    optimizer_bytes_per_device: int

    @property
    def total_per_device(self) -> int:
        return self.param_bytes_per_device + self.optimizer_bytes_per_device

    def report(self, device_memory_gib: float | None = None) -> str:
        gib = 1024**3
        lines = [
            f"mesh {self.mesh_shape} on {self.devices} devices",
            f"parameters: {self.parameters:,} ({_human(self.param_bytes_total)} total)",
            f"per device: params {_human(self.param_bytes_per_device)} + optimizer "
            f"{_human(self.optimizer_bytes_per_device)} = {_human(self.total_per_device)} "
            f"(activations not included)",
        ]
        if device_memory_gib is not None:
            verdict = "fits" if self.total_per_device / gib < device_memory_gib else "does NOT fit"
            lines.append(f"{verdict} in {device_memory_gib} GiB per device before activations")
        return "\n".join(lines)


def _human(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def _shard_bytes(shape, dtype, spec, mesh_shape: dict[str, int]) -> int:
    local = list(shape)
    for i, axes in enumerate(spec):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        local[i] = math.ceil(local[i] / math.prod(mesh_shape[a] for a in axes))
    return int(np.prod(local, dtype=np.int64)) * np.dtype(dtype).itemsize


def plan_memory(
    model_fn: Callable[[], nnx.Module],
    optimizer: optax.GradientTransformation,
    mesh_config: MeshConfig,
    devices: int,
    rules=LOGICAL_AXIS_RULES,
) -> MemoryPlan:
    """Per-device parameter and optimizer-state bytes of ``model_fn()`` on a mesh of
    ``devices`` devices (which need not exist here)."""
    if devices < 1:
        raise ValueError(f"devices={devices}: expected a positive device count")
    dcn = (mesh_config.dcn_data, mesh_config.dcn_fsdp, mesh_config.dcn_tensor)
    slices = math.prod(dcn)
    if devices % slices:
        raise ValueError(f"devices={devices}: not divisible by the {slices} slices of dcn={dcn}")
    ici = _fill((mesh_config.data, mesh_config.fsdp, mesh_config.tensor), devices // slices, "mesh")
    shape = tuple(i * d for i, d in zip(ici, dcn))
    mesh = AbstractMesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    mesh_shape = dict(zip(MESH_AXES, shape))

    abstract = nnx.eval_shape(model_fn)
    params = nnx.state(abstract, nnx.Param)
    specs = jax.tree.map(
        lambda v: v.replace(
            logical_to_spec(v.get_metadata().get("out_sharding"), v.get_value().shape, mesh, rules)
        ),
        params,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    param_leaves = jax.tree.leaves(params)
    param_local = sum(_shard_bytes(p.shape, p.dtype, s, mesh_shape) for p, s in zip(param_leaves, spec_leaves))
    opt_abstract = jax.eval_shape(optimizer.init, params)
    opt_specs = optax.tree_map_params(
        optimizer,
        lambda _, s: s,
        opt_abstract,
        specs,
        transform_non_params=lambda _: jax.sharding.PartitionSpec(),
        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec),
    )
    opt_leaves = jax.tree.leaves(opt_abstract)
    opt_spec_leaves = jax.tree.leaves(opt_specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    opt_local = sum(_shard_bytes(o.shape, o.dtype, s, mesh_shape) for o, s in zip(opt_leaves, opt_spec_leaves))
    return MemoryPlan(
        devices=devices,
        mesh_shape=mesh_shape,
        parameters=sum(int(np.prod(p.shape)) for p in param_leaves),
        param_bytes_total=sum(int(np.prod(p.shape)) * np.dtype(p.dtype).itemsize for p in param_leaves),
        param_bytes_per_device=param_local,
        optimizer_bytes_per_device=opt_local,
    )


@dataclasses.dataclass(frozen=True)
class PlanArgs:
    """Report per-device memory of an experiment preset on a (possibly absent) mesh."""

    experiment: str = "core.demo"
    preset: str = "tiny"
    devices: int = 8
    mesh: MeshConfig = MeshConfig()
    device_memory_gib: float | None = None


def plan_experiment(args: PlanArgs) -> MemoryPlan:
    module: Any = importlib.import_module(args.experiment)
    if not hasattr(module, "PRESETS") or not hasattr(module, "model_and_optimizer"):
        raise ValueError(
            f"experiment={args.experiment!r}: expected a module with PRESETS and model_and_optimizer()"
        )
    if args.preset not in module.PRESETS:
        raise ValueError(f"preset={args.preset!r}: expected one of {sorted(module.PRESETS)}")
    model_fn, optimizer = module.model_and_optimizer(module.PRESETS[args.preset][1])
    return plan_memory(model_fn, optimizer, args.mesh, args.devices)


def main(argv: list[str] | None = None) -> None:
    args = tyro.cli(PlanArgs, args=argv)
    print(plan_experiment(args).report(args.device_memory_gib))


if __name__ == "__main__":
    main()
