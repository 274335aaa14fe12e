"""An on-disk store of model activations: a resumable harvest into shards, served through grain.

:func:`harvest` runs a model's jitted forward (``model.run(tokens, capture=names,
stop_at_layer=...)``, compiled once for the corpus's batch shape, stopping after the last block a
capture needs) over a corpus of token batches, flattens each capture ``[batch, pos, ...]`` to
``[tokens, d]`` (row order: batch-major, then position; trailing axes such as ``hook_z``'s
``[head, d_head]`` are concatenated, as P12 wants), optionally drops the first position (BOS)
and the padded positions of an attention mask, and appends the rows to fixed-size shards, one
``.npy`` file per shard and capture (``float32``, or ``bfloat16`` stored as its ``uint16`` bit
pattern). ``manifest.json`` lists the finished shards, their rows, ``d`` and dtype per capture,
the model (class, config, a digest of its parameters), the user's corpus description and how
far through the corpus the shards reach. Every file is written to a temporary name and moved
into place with ``os.replace``, shard first, then the manifest, so a killed harvest leaves the
previous manifest intact: calling :func:`harvest` again with the same arguments skips the
consumed batches (without running the model) and writes byte-identical shards to an
uninterrupted run. Calling it again with a longer corpus extends a finished store the same way
(its last, partial shard is refilled). Host memory holds one shard plus one batch.

:class:`ActivationStore` opens a store; ``store.source(capture)`` is a grain random-access
source of memory-mapped rows ``{"activations": float32 [d]}``, so
``core.data.batches(store.source(), batch_size, seed)`` gives shuffled, checkpointable batches.
``store.mean_norm(capture)`` / ``store.input_scale(capture)`` stream over the shards for the SAE
input scaling ``s = sqrt(d) / E||x||`` (SAELens ``expected_average_only_in``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

FORMAT = "interp.activation_store/1"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
DTYPES = ("float32", "bfloat16")
_STORED = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(np.uint16)}
# Capture points whose axis 1 is heads, not positions: they have no per-token rows.
_NOT_PER_TOKEN = ("hook_pattern", "hook_attn_scores")
_EMBED_POINTS = ("hook_embed", "hook_pos_embed", "hook_token_type_embed")
_BLOCK = re.compile(r"blocks\.(\d+)\.")
# Keys of the manifest that must match for a harvest to resume into an existing store.
_CONFIG_KEYS = (
    "format", "captures", "dtype", "shard_rows", "drop_first", "batch_shape", "masked", "model",
    "model_digest", "description",
)


# ----------------------------------------------------------------------------- atomic files


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, then move it into place."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _save_npy(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def _save_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    text = json.dumps(manifest, indent=1).encode()
    _write_atomic(directory / MANIFEST, lambda f: f.write(text))


def _shard_file(index: int, capture: str) -> str:
    return f"shard-{index:05d}.{capture}.npy"


# ----------------------------------------------------------------------------- harvest


def _check_model(model) -> tuple[str, ...]:
    if not all(callable(getattr(model, attr, None)) for attr in ("run", "hook_names")):
        raise TypeError(
            f"model: expected a model with .run(tokens, capture=..., stop_at_layer=...) and "
            f".hook_names() (interp.models), got {type(model).__name__}"
        )
    return tuple(model.hook_names())


def _check_captures(capture, valid: tuple[str, ...]) -> tuple[str, ...]:
    names = (capture,) if isinstance(capture, str) else capture
    if not isinstance(names, Sequence) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"capture: expected a capture-point name or a non-empty sequence of them, "
                        f"got {capture!r}")
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError(f"capture: duplicate names in {names}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"capture: unknown capture point(s) {unknown}; this model has: {list(valid)}")
    no_rows = [n for n in names if n.endswith(_NOT_PER_TOKEN)]
    if no_rows:
        raise ValueError(f"capture: {no_rows} are [batch, head, query, key] maps with no "
                         "per-token rows; store per-token points (residuals, hook_z, mlp, ...)")
    return names


def _stop_at_layer(names: tuple[str, ...]) -> int | None:
    """The fewest blocks that reach every capture (``None``: the whole model)."""
    layers = []
    for name in names:
        match = _BLOCK.match(name)
        if match:
            layers.append(int(match.group(1)) + 1)
        elif name in _EMBED_POINTS:
            layers.append(0)
        else:
            return None
    return max(layers)


def _model_description(model) -> dict[str, Any]:
    config = getattr(model, "config", None)
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config)
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}", "config": config}


def _model_digest(state) -> str:
    """SHA-256 of the model's arrays (paths, shapes, dtypes and bytes; RNG state excluded)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _split_batch(batch, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(tokens int32 [batch, pos], mask bool [batch, pos] | None)`` from one corpus item."""
    if isinstance(batch, Mapping):
        key = "input_ids" if "input_ids" in batch else "tokens"
        if key not in batch:
            raise ValueError(f"batches[{index}]: expected a mapping with 'input_ids' or 'tokens' "
                             f"(and optionally 'attention_mask'), got keys {sorted(batch)}")
        tokens, mask = batch[key], batch.get("attention_mask")
    elif isinstance(batch, tuple):
        if len(batch) != 2:
            raise ValueError(f"batches[{index}]: expected a (tokens, attention_mask) pair, got a "
                             f"tuple of {len(batch)}")
        tokens, mask = batch
    else:
        tokens, mask = batch, None
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"batches[{index}]: expected integer tokens [batch, pos], got "
                         f"{tokens.dtype} shape {tokens.shape}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != tokens.shape:
            raise ValueError(f"batches[{index}]: attention_mask shape {mask.shape} differs from "
                             f"the tokens' {tokens.shape}")
        mask = mask > 0
    return tokens.astype(np.int32), mask


@partial(jax.jit, static_argnames=("graphdef", "names", "stop_at_layer", "pass_mask",
                                   "drop_first", "dtype"))
def _forward(graphdef, state, tokens, mask, names, stop_at_layer, pass_mask, drop_first, dtype):
    """Captures flattened to ``{name: [rows, d]}`` in the stored dtype, and their finiteness."""
    model = nnx.merge(graphdef, state)
    inputs = (tokens, mask.astype(jnp.int32)) if pass_mask else (tokens,)
    _, captured = model.run(*inputs, capture=names, stop_at_layer=stop_at_layer)
    rows, finite = {}, {}
    for name in names:
        x = captured[name]
        if drop_first:
            x = x[:, 1:]
        x = x.reshape(x.shape[0] * x.shape[1], -1)
        finite[name] = jnp.isfinite(x).all()
        rows[name] = x.astype(dtype)
    return rows, finite


def _capture_widths(model, names, stop, tokens, mask, pass_mask) -> dict[str, int]:
    """``d`` per capture (product of its trailing axes), checking it has per-token rows."""
    inputs = (tokens, mask.astype(np.int32)) if pass_mask else (tokens,)
    shapes = jax.eval_shape(
        lambda *args: model.run(*args, capture=names, stop_at_layer=stop)[1], *inputs)
    widths = {}
    for name in names:
        shape = shapes[name].shape
        if len(shape) < 3 or tuple(shape[:2]) != tokens.shape:
            raise ValueError(f"capture: {name!r} has shape {shape}, not [batch, pos, ...] = "
                             f"{tokens.shape} + (...); it has no per-token rows")
        widths[name] = int(np.prod(shape[2:]))
    return widths


class _ShardWriter:
    """Per-capture buffers of ``shard_rows`` rows, written out as shards with their manifest.

    Resuming from ``previous`` keeps its full shards and reloads its last partial shard (if
    any) into the buffers; :meth:`skip` says which rows of the corpus are already stored.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any],
                 previous: Mapping[str, Any] | None):
        self.directory, self.manifest = directory, manifest
        self.names = tuple(manifest["captures"])
        self.shard_rows = manifest["shard_rows"]
        stored = _STORED[manifest["dtype"]]
        self.buffers = {n: np.empty((self.shard_rows, c["d"]), stored)
                        for n, c in manifest["captures"].items()}
        self.shards: list[dict[str, Any]] = []
        self.fill = 0
        self.reloaded: dict[str, Any] | None = None  # a partial shard in the buffers, unchanged
        self.skip = (0, 0)  # (batches fully stored, rows of the next batch stored)
        if previous is not None:
            _check_same_config(previous, manifest, directory)
            self.shards = list(previous["shards"])
            self.skip = (previous["batches_consumed"], previous["rows_into_next_batch"])
            if self.shards and self.shards[-1]["rows"] < self.shard_rows:
                self.reloaded = self.shards.pop()
                self.fill = self.reloaded["rows"]
                for name in self.names:
                    self.buffers[name][: self.fill] = _open_shard(directory, self.reloaded, name)

    def append(self, batch_index: int, rows: Mapping[str, np.ndarray], start: int) -> None:
        """Add ``rows[start:]`` of batch ``batch_index``, writing every shard that fills up."""
        n_rows = len(rows[self.names[0]])
        pos = start
        while pos < n_rows:
            take = min(self.shard_rows - self.fill, n_rows - pos)
            for name in self.names:
                self.buffers[name][self.fill : self.fill + take] = rows[name][pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.shard_rows:
                consumed = (batch_index + 1, 0) if pos == n_rows else (batch_index, pos)
                self._write_shard()
                self._save(*consumed, finished=False)

    def finish(self, n_batches: int) -> None:
        """Write the last (partial) shard and mark the store finished after ``n_batches``."""
        if n_batches < self.skip[0] + (self.skip[1] > 0):
            raise ValueError(
                f"batches: the store already holds rows of {self.skip[0] + (self.skip[1] > 0)} "
                f"batches, more than the {n_batches} given; was the corpus shortened?")
        if self.reloaded is not None and self.fill == self.reloaded["rows"]:  # nothing new
            self.shards.append(self.reloaded)
        elif self.fill:
            self._write_shard()
        if not self.shards:
            raise ValueError("batches: no rows to store (every position was masked or dropped)")
        self._save(n_batches, 0, finished=True)

    def _write_shard(self) -> None:
        files = {name: _shard_file(len(self.shards), name) for name in self.names}
        for name, file in files.items():
            _save_npy(self.directory / file, self.buffers[name][: self.fill])
        self.shards.append({"rows": self.fill, "files": files})
        self.fill, self.reloaded = 0, None

    def _save(self, batches_consumed: int, rows_into_next: int, finished: bool) -> None:
        self.manifest.update(
            shards=self.shards, rows=sum(s["rows"] for s in self.shards),
            batches_consumed=batches_consumed, rows_into_next_batch=rows_into_next,
            finished=finished)
        _save_manifest(self.directory, self.manifest)


def harvest(
    model: nnx.Module,
    batches: Iterable[Any],
    directory: str | os.PathLike,
    capture: str | Sequence[str],
    *,
    shard_rows: int = 65536,
    dtype: str = "float32",
    drop_first: bool = False,
    description: Mapping[str, Any] | str | None = None,
    max_batches: int | None = None,
    progress: bool = True,
) -> ActivationStore:
    """Harvest the activations at ``capture`` over ``batches`` into shards under ``directory``.

    ``batches`` yields token batches of one shape ``[batch, pos]`` (an integer array, a
    ``(tokens, attention_mask)`` pair as :func:`interp.models.minilm.tokenize` returns, or a
    mapping with ``input_ids``/``tokens`` and ``attention_mask``); a rank-3 array
    ``[n_batches, batch, pos]`` works too. It is iterated from the start on every call and must
    yield the same batches in the same order. Positions where the mask is 0 are dropped (the
    mask is also passed to models whose ``run`` takes an ``attention_mask``, e.g. MiniLM);
    ``drop_first`` drops position 0 (BOS). ``max_batches`` stops after that many batches (for
    endless iterators). ``description`` (JSON-serialisable: corpus, tokenizer, ...) is stored and
    must match on resume, like every other setting and the model's parameters.
    """
    valid = _check_model(model)
    names = _check_captures(capture, valid)
    if not isinstance(shard_rows, int) or isinstance(shard_rows, bool) or shard_rows <= 0:
        raise ValueError(f"shard_rows={shard_rows!r}: expected a positive int")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {DTYPES}")
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches <= 0):
        raise ValueError(f"max_batches={max_batches!r}: expected a positive int or None")
    try:
        description = json.loads(json.dumps(description))
    except (TypeError, ValueError) as err:
        raise TypeError(f"description: expected JSON-serialisable data ({err})") from err
    if isinstance(batches, (np.ndarray, jax.Array)) and batches.ndim != 3:
        raise ValueError(f"batches: expected an array [n_batches, batch, pos] or an iterable of "
                         f"[batch, pos] batches, got shape {batches.shape}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(TMP_PREFIX + "*"):  # left by a killed harvest
        stale.unlink(missing_ok=True)
    previous = _read_manifest(directory) if (directory / MANIFEST).exists() else None

    graphdef, state = nnx.split(model)
    pass_mask = "attention_mask" in inspect.signature(model.run).parameters
    stop = _stop_at_layer(names)
    stored = _STORED[dtype]
    total = len(batches) if hasattr(batches, "__len__") else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    writer: _ShardWriter | None = None
    n_batches = 0
    with tqdm(total=total, unit="batch", desc=f"harvest {directory.name}",
              disable=not progress) as bar:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            n_batches = i + 1
            tokens, mask = _split_batch(batch, i)
            full_mask = np.ones(tokens.shape, bool) if mask is None else mask
            if writer is None:  # the first batch fixes the configuration
                if drop_first and tokens.shape[1] < 2:
                    raise ValueError(f"drop_first=True needs at least 2 positions, got batches "
                                     f"of shape {tokens.shape}")
                widths = _capture_widths(model, names, stop, tokens, full_mask, pass_mask)
                writer = _ShardWriter(directory, {
                    "format": FORMAT,
                    "captures": {n: {"d": widths[n], "file_dtype": str(stored)} for n in names},
                    "dtype": dtype, "shard_rows": shard_rows, "drop_first": bool(drop_first),
                    "batch_shape": list(tokens.shape), "masked": mask is not None,
                    "model": _model_description(model),
                    "model_digest": _model_digest(nnx.state(model, nnx.Not(nnx.RngState))),
                    "description": description,
                }, previous)
                bar.update(min(writer.skip[0], total or writer.skip[0]))
            config = writer.manifest
            if [*tokens.shape, mask is not None] != [*config["batch_shape"], config["masked"]]:
                raise ValueError(
                    f"batches[{i}]: shape {tokens.shape} (mask: {mask is not None}) differs "
                    f"from the corpus's {tuple(config['batch_shape'])} (mask: "
                    f"{config['masked']}); pad every batch to one shape and pass a mask")
            if i < writer.skip[0]:
                continue
            rows, finite = _forward(
                graphdef, state, tokens, full_mask, names=names, stop_at_layer=stop,
                pass_mask=pass_mask, drop_first=bool(drop_first),
                dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
            bad = [n for n in names if not bool(finite[n])]
            if bad:
                raise ValueError(f"batches[{i}]: non-finite activations at {bad}")
            rows = {n: np.asarray(r).view(stored) for n, r in rows.items()}
            if mask is not None:
                keep = (mask[:, 1:] if drop_first else mask).reshape(-1)
                rows = {n: r[keep] for n, r in rows.items()}
            writer.append(i, rows, start=writer.skip[1] if i == writer.skip[0] else 0)
            bar.update(1)
            bar.set_postfix(shards=len(writer.shards), rows=writer.manifest.get("rows", 0))
        if writer is None:
            raise ValueError("batches: expected at least one batch, got none")
        writer.finish(n_batches)
    return ActivationStore(directory)


def _check_same_config(previous: Mapping[str, Any], current: Mapping[str, Any], directory: Path):
    differ = [k for k in _CONFIG_KEYS if previous.get(k) != current.get(k)]
    if differ:
        detail = "; ".join(f"{k}: stored {previous.get(k)!r} vs now {current.get(k)!r}"
                           for k in differ if k != "model_digest")
        if "model_digest" in differ:
            detail += ("; " if detail else "") + "model parameters differ"
        raise ValueError(f"directory={str(directory)!r} holds a store with a different "
                         f"configuration ({detail}); use a new directory or delete it")


# ----------------------------------------------------------------------------- reading


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise FileNotFoundError(f"directory={str(directory)!r}: no such directory")
    if not path.is_file():
        raise FileNotFoundError(f"directory={str(directory)!r}: no {MANIFEST}; not an activation "
                                "store (harvest into it first)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def _open_shard(directory: Path, shard: Mapping[str, Any], capture: str) -> np.ndarray:
    """The shard's rows for ``capture``, memory-mapped (a file may hold more rows than listed,
    when a crash fell between rewriting a partial shard and its manifest)."""
    path = directory / shard["files"][capture]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard listed in {MANIFEST} is missing")
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 2 or array.shape[0] < shard["rows"]:
        raise ValueError(f"{path}: shape {array.shape}, expected at least {shard['rows']} rows "
                         f"({MANIFEST} says so); the store is corrupt")
    return array[: shard["rows"]]


class ActivationStore:
    """A harvested store: its manifest, grain sources and norm statistics."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.manifest = _read_manifest(self.directory)

    @property
    def captures(self) -> tuple[str, ...]:
        return tuple(self.manifest["captures"])

    @property
    def rows(self) -> int:
        return self.manifest["rows"]

    @property
    def finished(self) -> bool:
        return self.manifest["finished"]

    def d(self, capture: str | None = None) -> int:
        return self.manifest["captures"][self._capture(capture)]["d"]

    def _capture(self, capture: str | None) -> str:
        if capture is None:
            if len(self.captures) != 1:
                raise ValueError(f"capture: the store holds {list(self.captures)}; name one")
            return self.captures[0]
        if capture not in self.manifest["captures"]:
            raise ValueError(f"capture={capture!r}: not in this store; it holds "
                             f"{list(self.captures)}")
        return capture

    def source(self, capture: str | None = None) -> ActivationSource:
        """A grain random-access source over ``capture``'s rows (default: the only capture)."""
        return ActivationSource(self.directory, self.manifest, self._capture(capture))

    def chunks(self, capture: str | None = None, chunk_rows: int = 65536):
        """Yield the rows in order as float32 arrays of at most ``chunk_rows`` rows."""
        capture = self._capture(capture)
        for shard in self.manifest["shards"]:
            array = _open_shard(self.directory, shard, capture)
            for start in range(0, len(array), chunk_rows):
                yield _to_float32(array[start:start + chunk_rows], self.manifest["dtype"])

    def mean_norm(self, capture: str | None = None) -> float:
        """``E||x||`` over every stored row, streamed shard by shard (float64 sums)."""
        total = 0.0
        for chunk in self.chunks(capture):
            total += np.sqrt(np.square(chunk, dtype=np.float64).sum(-1)).sum()
        if self.rows == 0:
            raise ValueError(f"directory={str(self.directory)!r}: the store has no rows")
        return float(total / self.rows)

    def input_scale(self, capture: str | None = None) -> float:
        """``s = sqrt(d) / E||x||``, so that the scaled rows have mean norm ``sqrt(d)``."""
        norm = self.mean_norm(capture)
        if not norm > 0:
            raise ValueError(f"capture={capture!r}: every row is zero; no input scale exists")
        return float(np.sqrt(self.d(capture)) / norm)


def _to_float32(rows: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return rows.view(jnp.bfloat16).astype(np.float32)
    return np.asarray(rows, np.float32)


class ActivationSource:
    """grain random-access source: row ``i`` of one capture as ``{"activations": float32 [d]}``.

    Shards are memory-mapped on first use in each process (the source pickles without them).
    """

    def __init__(self, directory: Path, manifest: Mapping[str, Any], capture: str):
        self.directory, self.capture, self.dtype = Path(directory), capture, manifest["dtype"]
        self.shards = list(manifest["shards"])
        self.offsets = np.cumsum([0] + [s["rows"] for s in self.shards])
        if self.offsets[-1] == 0:
            raise ValueError(f"directory={str(directory)!r}: the store has no rows")
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index={index}: expected 0 <= index < {len(self)}")
        if self._arrays is None:
            self._arrays = [_open_shard(self.directory, s, self.capture) for s in self.shards]
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        row = self._arrays[shard][index - self.offsets[shard]]
        return {"activations": _to_float32(row, self.dtype)}
