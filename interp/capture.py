"""Named capture points and interventions for NNX transformers, without mutable callbacks.

A model's forward pass routes every notable activation through a :class:`Hooks` object built
for that one call (the penzai idea of capture/intervention layers, with TransformerLens's names:
``hook_embed``, ``blocks.{l}.hook_resid_pre``, ``blocks.{l}.attn.hook_z``, ...). ``Hooks``
holds a static tuple of names to capture and a pytree of :class:`Intervention` values; it
applies the intervention at a point (if any), records the result when asked, and returns it
to the forward pass. Nothing is registered on the model, so the whole run is a pure function of
(parameters, inputs, intervention values) and compiles once per set of names.

Intervention kinds (``kind`` is static, ``value`` is an array leaf):

- ``replace``: the activation becomes ``value`` (broadcast to its shape);
- ``add``: ``x + value`` (a steering vector of shape ``[d]`` broadcasts over batch and position);
- ``scale``: ``x * value``;
- ``ablate_head``: zero the heads whose indices are in ``value`` (a scalar or a 1-D integer
  array) along the point's head axis (only ``attn.hook_q/k/v/z`` and ``attn.hook_pattern``;
  zeroing ``attn.hook_attn_scores`` would lift the attention mask, so it has no head axis).

Example (names static, values traced; changing ``v`` does not recompile)::

    logits, cache = run_with_hooks(
        model, tokens, capture=("blocks.1.attn.hook_z",),
        interventions={"blocks.0.hook_resid_post": Intervention.add(v),
                       "blocks.1.attn.hook_z": Intervention.ablate_head(3)})

Shapes follow TransformerLens: ``hook_q/k/v/z`` are ``[batch, pos, head, d_head]``,
``hook_attn_scores`` / ``hook_pattern`` ``[batch, head, query_pos, key_pos]``, residual points
``[batch, pos, d_model]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

KINDS = ("replace", "add", "scale", "ablate_head")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["value"], meta_fields=["kind"])
@dataclasses.dataclass(frozen=True)
class Intervention:
    """One intervention at a capture point: a static ``kind`` and an array ``value``."""

    kind: str
    value: Any

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Intervention kind={self.kind!r}: expected one of {KINDS}")

    @classmethod
    def replace(cls, value) -> Intervention:
        return cls("replace", value)

    @classmethod
    def add(cls, value) -> Intervention:
        return cls("add", value)

    @classmethod
    def scale(cls, value) -> Intervention:
        return cls("scale", value)

    @classmethod
    def ablate_head(cls, heads) -> Intervention:
        return cls("ablate_head", jnp.asarray(heads, dtype=jnp.int32))


def as_interventions(interventions: Mapping[str, Any] | None) -> dict[str, Intervention]:
    """Normalise ``{name: Intervention | (kind, value)}`` into ``{name: Intervention}``.

    The tuple form is a convenience outside ``jit``; pass :class:`Intervention` objects (a
    pytree whose kind is static) through a jitted function.
    """
    if interventions is None:
        return {}
    if not isinstance(interventions, Mapping):
        raise TypeError(
            f"interventions: expected a mapping name -> Intervention or (kind, value), got "
            f"{type(interventions).__name__}"
        )
    out = {}
    for name, spec in interventions.items():
        if isinstance(spec, Intervention):
            out[name] = spec
        elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
            kind, value = spec
            if kind == "ablate_head":
                out[name] = Intervention.ablate_head(value)
            else:
                out[name] = Intervention(kind, value)
        else:
            raise TypeError(
                f"interventions[{name!r}]: expected an Intervention or a (kind, value) tuple, "
                f"got {spec!r}"
            )
    return out


def _check_names(what: str, names: Iterable[str], valid: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"{what}: unknown capture point(s) {unknown}; this model has: {list(valid)}"
        )


class Hooks:
    """The capture/intervention state of one forward call (built fresh per call, then dropped).

    ``valid`` lists the names the model defines; ``capture`` the names to record;
    ``interventions`` the edits to apply. Call ``hooks(name, x, head_axis=...)`` at each point.
    """

    def __init__(
        self,
        valid: tuple[str, ...],
        capture: tuple[str, ...] = (),
        interventions: Mapping[str, Any] | None = None,
    ):
        if isinstance(capture, str) or not isinstance(capture, (tuple, list)):
            raise TypeError(f"capture: expected a tuple of capture-point names, got {capture!r}")
        self.capture = tuple(capture)
        self.interventions = as_interventions(interventions)
        _check_names("capture", self.capture, valid)
        _check_names("interventions", self.interventions, valid)
        self.captured: dict[str, jax.Array] = {}
        self.visited: set[str] = set()

    def __call__(self, name: str, x: jax.Array, head_axis: int | None = None) -> jax.Array:
        self.visited.add(name)
        edit = self.interventions.get(name)
        if edit is not None:
            x = _apply(name, edit, x, head_axis)
        if name in self.capture:
            self.captured[name] = x
        return x

    def finish(self, stopped_at: int | None = None) -> dict[str, jax.Array]:
        """Return the captures, failing loudly on a requested point the pass never reached."""
        missed = [n for n in (*self.capture, *self.interventions) if n not in self.visited]
        if missed:
            where = "" if stopped_at is None else f" (the pass stopped before layer {stopped_at})"
            raise ValueError(f"capture points {missed} were never reached{where}")
        return {name: self.captured[name] for name in self.capture}


def _apply(name: str, edit: Intervention, x: jax.Array, head_axis: int | None) -> jax.Array:
    value = jnp.asarray(edit.value)
    if edit.kind == "ablate_head":
        if head_axis is None:
            raise ValueError(
                f"interventions[{name!r}]: ablate_head needs a point with a head axis "
                "(attn.hook_q/k/v/z, attn.hook_pattern)"
            )
        if value.ndim > 1 or not jnp.issubdtype(value.dtype, jnp.integer):
            raise ValueError(
                f"interventions[{name!r}]: ablate_head expects an integer head index or a 1-D "
                f"array of them, got dtype {value.dtype} shape {value.shape}"
            )
        heads = jnp.arange(x.shape[head_axis])
        keep = ~jnp.isin(heads, jnp.atleast_1d(value))
        shape = [1] * x.ndim
        shape[head_axis] = x.shape[head_axis]
        return x * keep.reshape(shape).astype(x.dtype)
    try:
        ok = jnp.broadcast_shapes(value.shape, x.shape) == tuple(x.shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"interventions[{name!r}]: {edit.kind} value of shape {value.shape} does not "
            f"broadcast to the activation's shape {x.shape}"
        )
    if edit.kind == "replace":
        return jnp.broadcast_to(value, x.shape).astype(x.dtype)
    if edit.kind == "add":
        return x + value.astype(x.dtype)
    return x * value.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("graphdef", "capture", "stop_at_layer"))
def _run_split(graphdef, state, inputs, interventions, capture, stop_at_layer):
    model = nnx.merge(graphdef, state)
    return model.run(
        *inputs, capture=capture, interventions=interventions, stop_at_layer=stop_at_layer
    )


def run_with_hooks(
    model: nnx.Module,
    *inputs,
    capture: tuple[str, ...] = (),
    interventions: Mapping[str, Any] | None = None,
    stop_at_layer: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Jitted ``model.run(*inputs, ...)``: returns ``(output, {name: activation})``.

    The model is split once per call into a static graph and an array state; ``capture`` and
    ``stop_at_layer`` are static, intervention values are traced, so changing the values (not
    the names or kinds) does not recompile.
    """
    graphdef, state = nnx.split(model)
    return _run_split(
        graphdef, state, inputs, as_interventions(interventions), tuple(capture), stop_at_layer
    )
