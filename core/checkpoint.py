"""Checkpoints: the only code in the project that talks to orbax.

One checkpoint step holds the training state (model + optimizer, any pytree of arrays), the
data iterator's state (grain) and the resolved config (JSON), saved together and asynchronously;
the latest ``keep`` steps are kept. Restores go onto any mesh, or one device, from an abstract
target (``jax.ShapeDtypeStruct`` leaves carrying shardings). A checkpoint that fails to restore
(truncated or half-written files) is skipped with a warning naming it, and the previous step is
used. :func:`load_stack` / :func:`iter_stacks` return checkpoints stacked on a leading axis for
``jax.vmap``, filling preallocated host buffers one checkpoint at a time (bounded memory).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

log = logging.getLogger(__name__)

STATE, DATA, CONFIG = "state", "data", "config"


class CheckpointError(RuntimeError):
    """No usable checkpoint could be restored."""


def _require_dir(directory: str | os.PathLike) -> Path:
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    return path


class Checkpointer:
    """Save and restore training checkpoints in ``directory`` (created if missing)."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep={keep}: expected at least 1 checkpoint to keep")
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            ),
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any = None, config: dict | None = None) -> None:
        """Start saving ``step``; returns once arrays are copied off the device."""
        import grain

        items = {STATE: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items[CONFIG] = ocp.args.JsonSave(config)
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Block until every pending asynchronous save is finished and committed."""
        self._manager.wait_until_finished()

    def restore(
        self,
        target: Any,
        step: int | None = None,
        data_iterator: Any = None,
    ) -> tuple[int, Any]:
        """Restore ``(step, state)`` onto the shardings in ``target`` (an abstract pytree).

        With ``step=None`` the newest restorable step is used: a step that fails is reported
        and skipped. ``data_iterator``, when given, is set to the saved position in place.
        """
        self.wait()
        candidates = self.steps()
        if not candidates:
            raise CheckpointError(f"no checkpoint found in {str(self.directory)!r}")
        if step is not None:
            if step not in candidates:
                raise CheckpointError(
                    f"step={step} not in {str(self.directory)!r}; available steps: {candidates}"
                )
            return step, self._restore_one(step, target, data_iterator)
        failures = []
        for s in reversed(candidates):
            try:
                return s, self._restore_one(s, target, data_iterator)
            except Exception as err:  # any unreadable checkpoint: report it and fall back
                failures.append(f"step {s}: {type(err).__name__}: {err}")
                log.warning(
                    "checkpoint %s is incomplete or corrupt (%s: %s); falling back to the "
                    "previous one",
                    self.directory / str(s),
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
        raise CheckpointError(
            f"no restorable checkpoint in {str(self.directory)!r}:\n" + "\n".join(failures)
        )

    def _restore_one(self, step: int, target: Any, data_iterator: Any) -> Any:
        import grain

        items = {STATE: ocp.args.StandardRestore(target)}
        has_data = (self.directory / str(step) / DATA).is_dir()
        if data_iterator is not None and has_data:
            items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored[STATE]

    def config(self, step: int) -> dict:
        """The resolved config saved with ``step``."""
        return self._manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[
            CONFIG
        ]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_steps(directory: str | os.PathLike) -> list[int]:
    """Steps of the committed checkpoints in ``directory`` (which must exist)."""
    with Checkpointer(_require_dir(directory), async_save=False) as ckpt:
        return ckpt.steps()


def abstract_like(tree: Any, sharding: Any = None) -> Any:
    """Abstract target for :meth:`Checkpointer.restore`: shapes and dtypes of ``tree`` with
    ``sharding`` (one sharding for all leaves, a matching pytree of shardings, or ``None`` to
    keep each array's own sharding)."""
    if sharding is None:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree
        )
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sharding)


def host_target(target: Any) -> Any:
    """``target`` placed on one host (CPU) device: for analyses that need no sharding."""
    device = SingleDeviceSharding(jax.local_devices(backend="cpu")[0]) if _has_cpu() else None
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), target)


def _has_cpu() -> bool:
    try:
        return bool(jax.local_devices(backend="cpu"))
    except RuntimeError:
        return False


def iter_stacks(
    directory: str | os.PathLike,
    steps: Sequence[int],
    target: Any,
    chunk: int,
    sharding: NamedSharding | None = None,
) -> Iterator[tuple[list[int], Any]]:
    """Yield ``(steps, stacked_state)`` for consecutive chunks of ``steps``.

    Each chunk is restored one checkpoint at a time into a preallocated host buffer of
    ``chunk`` rows (the last chunk is padded by repeating its final checkpoint, so every chunk
    has the same shape and a vmapped analysis compiles once; the padded rows' results are to be
    dropped using the returned step list). Peak host memory: one chunk plus one checkpoint.
    """
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: expected a positive chunk size")
    steps = list(steps)
    if not steps:
        raise ValueError("steps: expected at least one checkpoint step")
    path = _require_dir(directory)
    ckpt = Checkpointer(path, keep=max(len(steps), 1), async_save=False)
    available = set(ckpt.steps())
    missing = [s for s in steps if s not in available]
    if missing:
        raise CheckpointError(f"steps {missing} not in {str(path)!r}; available: {sorted(available)}")
    host = host_target(target)
    try:
        for start in range(0, len(steps), chunk):
            part = steps[start : start + chunk]
            buffers = jax.tree.map(lambda x: np.empty((chunk, *x.shape), x.dtype), host)
            for row in range(chunk):
                s = part[min(row, len(part) - 1)]
                _, state = ckpt.restore(host, step=s)
                jax.tree.map(lambda buf, x: buf.__setitem__(row, np.asarray(x)), buffers, state)
                del state
            if sharding is None:
                stacked = jax.tree.map(jnp.asarray, buffers)
            else:
                stacked = jax.tree.map(lambda b: jax.device_put(b, sharding), buffers)
            yield part, stacked
    finally:
        ckpt.close()


def load_stack(
    directory: str | os.PathLike,
    steps: Sequence[int],
    target: Any,
    sharding: NamedSharding | None = None,
) -> Any:
    """Checkpoints ``steps`` of the state in ``directory`` stacked on a new leading axis.

    ``target`` gives the state's structure, shapes and dtypes (shardings are ignored: the stack
    is built on the host and placed with ``sharding``, e.g. the leading axis over ``data``).
    """
    ((_, stacked),) = list(iter_stacks(directory, steps, target, chunk=len(list(steps)), sharding=sharding))
    return stacked


def stack_sharding(mesh: jax.sharding.Mesh, axis: str | None = "data") -> NamedSharding:
    """Sharding that splits a checkpoint stack's leading axis over ``axis`` of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec(axis))
