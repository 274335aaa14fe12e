"""Device meshes, the logical-axis rule table, sharded model creation and global batches.

Every parameter in the project names its axes logically (``nnx.Param(x, out_sharding=("embed",
"mlp"))``); :data:`LOGICAL_AXIS_RULES` is the one table that maps those names onto the mesh axes
``data``, ``fsdp`` and ``tensor``. A dimension whose size the mesh axis does not divide is
replicated instead (tiny presets on 8 devices), so sharding changes layout, never the math.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or axes, or None = replicated). First matching rule wins.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("classes", None),
    ("length", None),
    ("layers", None),
    ("latent", "tensor"),  # sparse-autoencoder dictionary width
    ("voxels", "tensor"),  # brain: voxel (input) axis of subject front ends
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("norm", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape. ``-1`` on one axis fills the remaining devices.

    ``dcn_*`` give the parallelism across slices (multi-slice pods, data-centre network); the
    plain fields are within a slice (ICI). With every ``dcn_*`` at 1 the mesh is a plain one.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_tensor: int = 1


def _fill(shape: Sequence[int], total: int, what: str) -> tuple[int, ...]:
    shape = list(shape)
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{what}={tuple(shape)}: expected positive sizes or a single -1")
    if shape.count(-1) > 1:
        raise ValueError(f"{what}={tuple(shape)}: at most one axis may be -1 (fill)")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if total % known:
            raise ValueError(
                f"{what}={tuple(shape)}: the fixed axes multiply to {known}, which does not "
                f"divide the {total} available devices"
            )
        shape[shape.index(-1)] = total // known
    if math.prod(shape) != total:
        raise ValueError(
            f"{what}={tuple(shape)} multiplies to {math.prod(shape)} devices, expected exactly "
            f"{total} (the available devices); use -1 on one axis to fill"
        )
    return tuple(shape)


def make_mesh(config: MeshConfig = MeshConfig(), devices: Sequence[Any] | None = None) -> Mesh:
    """Build the ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all devices).

    Axes are ``Auto`` (the compiler propagates shardings from in/out annotations).
    """
    devices = list(jax.devices() if devices is None else devices)
    dcn = (config.dcn_data, config.dcn_fsdp, config.dcn_tensor)
    ici = (config.data, config.fsdp, config.tensor)
    auto = (AxisType.Auto,) * len(MESH_AXES)
    if math.prod(dcn) == 1:
        shape = _fill(ici, len(devices), "mesh (data, fsdp, tensor)")
        if len(devices) == len(jax.devices()):
            return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
        return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)
    from jax.experimental import mesh_utils

    n_slices = math.prod(dcn)
    if len(devices) % n_slices:
        raise ValueError(
            f"dcn (data, fsdp, tensor)={dcn}: {n_slices} slices do not divide the "
            f"{len(devices)} devices"
        )
    ici = _fill(ici, len(devices) // n_slices, "mesh (data, fsdp, tensor) per slice")
    slices = {getattr(d, "slice_index", 0) for d in devices}
    granule_is_process = len(slices) == 1  # no multi-slice hardware: one granule per process
    granules = {d.process_index if granule_is_process else d.slice_index for d in devices}
    if len(granules) != n_slices:
        raise ValueError(
            f"dcn (data, fsdp, tensor)={dcn} asks for {n_slices} slices, but the devices form "
            f"{len(granules)} {'processes' if granule_is_process else 'slices'}"
        )
    grid = mesh_utils.create_hybrid_device_mesh(
        ici, dcn, devices, process_is_granule=granule_is_process
    )
    return Mesh(grid, MESH_AXES, axis_types=auto)


def logical_to_spec(
    names: Sequence[str | None] | None,
    shape: Sequence[int] | None = None,
    mesh: Mesh | None = None,
    rules=LOGICAL_AXIS_RULES,
) -> PartitionSpec:
    """Map logical axis names to a ``PartitionSpec`` through ``rules``.

    With ``shape`` and ``mesh``, a dimension not divisible by its mesh axes is replicated, and a
    mesh axis is used at most once per array.
    """
    if names is None:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    out: list[Any] = []
    for i, name in enumerate(names):
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise ValueError(
                f"logical axis {name!r} has no rule; known names: {sorted(table)}"
            )
        target = table[name]
        axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        axes = tuple(a for a in axes if a not in used)
        if mesh is not None:
            axes = tuple(a for a in axes if mesh.shape[a] > 1)
            if shape is not None and axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
                axes = ()
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while out and out[-1] is None:  # canonical form: jit returns P() for a replicated output
        out.pop()
    return PartitionSpec(*out)


def _variable_names(variable: nnx.Variable) -> Sequence[str | None] | None:
    return variable.get_metadata().get("out_sharding")


def state_shardings(state: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """``NamedSharding`` for every leaf of an (abstract) NNX state, from its logical names."""

    def one(leaf):
        if isinstance(leaf, nnx.Variable):
            value = leaf.get_value()
            spec = logical_to_spec(_variable_names(leaf), value.shape, mesh, rules)
            return leaf.replace(NamedSharding(mesh, spec))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def create_sharded(constructor: Callable[[], nnx.Module], mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """Create ``constructor()`` with every parameter born already sharded on ``mesh``.

    The model is traced abstractly first; ``jax.jit`` with ``out_shardings`` then materialises
    each parameter directly in its shards (no full copy on one device). Call it outside any
    ``jax.set_mesh`` context: it sets ``mesh`` itself.
    """
    if not jax.sharding.get_abstract_mesh().empty:
        raise ValueError(
            "create_sharded: called inside a `jax.set_mesh(...)` context; call it outside (it sets "
            "the mesh itself), or Flax would read the logical axis names as mesh axes"
        )
    abstract = nnx.eval_shape(constructor)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = state_shardings(abstract_state, mesh, rules)

    def init():
        return nnx.split(constructor())[1]

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: leading axis over ``data`` x ``fsdp``, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def batch_divisor(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(mesh: Mesh, global_batch: int, what: str = "batch_size") -> None:
    """Raise a clear error when ``global_batch`` does not split over the data-parallel axes."""
    n = batch_divisor(mesh)
    if global_batch <= 0 or global_batch % n:
        raise ValueError(
            f"{what}={global_batch}: expected a positive multiple of the data-parallel size "
            f"{n} (mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})"
        )


def global_batch(mesh: Mesh, local_batch: Any) -> Any:
    """Turn this process's slice of a batch (a pytree of numpy arrays) into global jax arrays.

    Each process passes its own ``global / process_count`` rows; the result is sharded over
    ``data`` x ``fsdp``.
    """

    def one(x):
        x = np.asarray(x)
        check_batch(mesh, x.shape[0] * jax.process_count(), "global batch (leading axis)")
        return jax.make_array_from_process_local_data(batch_sharding(mesh), x)

    return jax.tree.map(one, local_batch)


def initialize_distributed(auto_detect: bool = False) -> None:
    """Start multi-process JAX from the environment (no hand-made launcher).

    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` start an explicit
    cluster (on CPU with gloo collectives). With ``auto_detect`` and none of them, JAX detects
    the cluster itself (TPU pods, SLURM, ...). Otherwise a single process needs nothing.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        try:
            num = int(os.environ["JAX_NUM_PROCESSES"])
            pid = int(os.environ["JAX_PROCESS_ID"])
        except (KeyError, ValueError) as err:
            raise ValueError(
                "JAX_COORDINATOR_ADDRESS is set: expected integer JAX_NUM_PROCESSES and "
                "JAX_PROCESS_ID in the environment too"
            ) from err
        if os.environ.get("JAX_PLATFORMS", "") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(address, num_processes=num, process_id=pid)
    elif auto_detect:
        jax.distributed.initialize()
