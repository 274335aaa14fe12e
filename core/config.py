"""Frozen-dataclass configs, named presets and the command line (tyro).

An experiment defines a frozen dataclass and a dict of named presets (at least ``tiny``, which
runs on two CPU cores, and ``paper``, the paper's scale). :func:`cli` picks a preset by name and
applies command-line overrides (``--train.steps 200``); :func:`override` does the same from
Python with dotted keys. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import tyro

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_type(key, value, option)
            except TypeError:
                pass
        raise TypeError(f"config key {key!r}: {value!r} does not match {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise TypeError(f"config key {key!r}: expected None, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(annotation):
            return value
        raise TypeError(f"config key {key!r}: expected one of {typing.get_args(annotation)}, got {value!r}")
    if origin in (tuple, list, Sequence):
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"config key {key!r}: expected a sequence, got {value!r}")
        return tuple(value) if origin is tuple else value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(annotation, type):
        if annotation in (int, float) and isinstance(value, bool):
            raise TypeError(f"config key {key!r}: expected {annotation.__name__}, got {value!r}")
        if not isinstance(value, annotation):
            raise TypeError(
                f"config key {key!r}: expected {annotation.__name__}, got "
                f"{type(value).__name__} {value!r}"
            )
    return value


def override(config: T, overrides: Mapping[str, Any]) -> T:
    """Return ``config`` with dotted-key ``overrides`` applied (``{"train.steps": 10}``).

    Raises ``KeyError`` for an unknown key (listing the valid ones) and ``TypeError`` for a value
    of the wrong type.
    """
    for dotted, value in overrides.items():
        config = _set(config, dotted.split("."), value, dotted)
    return config


def _set(config: Any, path: list[str], value: Any, dotted: str) -> Any:
    if not dataclasses.is_dataclass(config):
        raise KeyError(f"unknown config key {dotted!r}: {type(config).__name__} has no fields")
    names = [f.name for f in dataclasses.fields(config)]
    head = path[0]
    if head not in names:
        raise KeyError(f"unknown config key {dotted!r}; valid keys here: {names}")
    if len(path) > 1:
        value = _set(getattr(config, head), path[1:], value, dotted)
    else:
        value = _check_type(dotted, value, _field_types(type(config))[head])
    return dataclasses.replace(config, **{head: value})


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (saved beside every checkpoint)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output; unknown keys are errors."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise KeyError(f"unknown config keys {sorted(unknown)} for {cls.__name__}; valid: {sorted(names)}")
    hints = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation) and isinstance(value, Mapping):
            value = from_dict(annotation, value)
        else:
            value = _check_type(key, value, annotation)
        kwargs[key] = value
    return cls(**kwargs)


def cli(
    presets: Mapping[str, tuple[str, T]],
    args: Sequence[str] | None = None,
    description: str | None = None,
) -> T:
    """Choose a preset by name on the command line and apply overrides (tyro).

    ``presets`` maps a name to ``(one-line description, config)``. Unknown flags and wrong types
    make tyro print the usage with the offending flag and exit with status 2.
    """
    if not presets:
        raise ValueError("presets: expected at least one named preset")
    return tyro.extras.overridable_config_cli(dict(presets), args=args, description=description)
