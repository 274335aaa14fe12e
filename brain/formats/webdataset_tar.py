"""Minimal reader/writer of webdataset tar shards with the standard library's ``tarfile``.

A webdataset shard is a plain tar whose members are ``<key>.<extension>``; members sharing a key
form one sample (the extension is everything after the first dot of the base name). ``.npy``
members are NumPy files. The ``webdataset`` package is not needed for this.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np


def read_samples(path: Path) -> Iterator[dict[str, object]]:
    """Yield ``{"__key__": key, ext: value}`` per sample in archive order; ``.npy`` decoded."""
    samples: dict[str, dict[str, object]] = {}
    order: list[str] = []
    try:
        archive = tarfile.open(path, "r")
    except tarfile.TarError as err:
        raise ValueError(f"{path}: not a readable tar shard ({err})") from err
    with archive:
        for member in archive:
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            key, dot, ext = base.partition(".")
            if not dot:
                continue
            key = f"{directory}/{key}" if directory else key
            data = archive.extractfile(member).read()
            if key not in samples:
                samples[key] = {"__key__": key}
                order.append(key)
            samples[key][ext] = np.load(io.BytesIO(data), allow_pickle=False) if ext.endswith("npy") else data
    for key in order:
        yield samples[key]


def write_samples(path: Path, samples: list[Mapping[str, object]]) -> None:
    """Write samples (``__key__`` plus ``ext -> array or bytes``) as one tar shard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for sample in samples:
            key = sample["__key__"]
            for ext, value in sample.items():
                if ext == "__key__":
                    continue
                if isinstance(value, (bytes, bytearray)):
                    data = bytes(value)
                else:
                    buf = io.BytesIO()
                    np.save(buf, np.asarray(value), allow_pickle=False)
                    data = buf.getvalue()
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
