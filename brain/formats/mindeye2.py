"""MindEye2's NSD layout (MedARC-AI/MindEyeV2, the ``pscotti/mindeyev2`` data release).

```
<root>/wds/subj0X/{train/<N>.tar, test/0.tar, new_test/0.tar}   webdataset shards
<root>/betas_all_subj0X_fp32_renorm.hdf5                      dataset "betas" (750*sessions, V)
<root>/coco_images_224_float16.hdf5                           dataset "images" (73000, 3, 224, 224)
```

Each shard sample holds ``behav.npy`` (1 x 17: column 0 = 73k COCO index, column 5 = row into
the betas file, column 16 = shared1000 flag), and ``past_behav.npy``, ``future_behav.npy``,
``olds_behav.npy`` (kept raw). Betas are read for the rows the samples name; the session of a row
is ``row // 750`` (NSD sessions of 750 trials, concatenated in order). :func:`read_mindeye2`
z-scores each session with the statistics of that session's *training* trials only
(:func:`brain.trials.zscore_per_session`); pass ``zscore=False`` for the file's values.

Deviation: tar shards are read with the standard library (:mod:`brain.formats.webdataset_tar`)
instead of the ``webdataset`` package; the bytes on disk are the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from brain.formats.nsd import (
    N_COCO_IMAGES,
    TRIALS_PER_SESSION,
    check_subject,
    check_voxels,
    require_dir,
    require_file,
)
from brain.formats.webdataset_tar import read_samples, write_samples
from brain.trials import zscore_per_session

SPLITS = ("train", "test", "new_test")
BEHAV_COCO, BEHAV_BETA_ROW, BEHAV_SHARED1000 = 0, 5, 16
EXTRA_BEHAV = ("past_behav", "future_behav", "olds_behav")


def betas_path(root: Path, subject: int) -> Path:
    return Path(root) / f"betas_all_subj{subject:02d}_fp32_renorm.hdf5"


def images_path(root: Path) -> Path:
    return Path(root) / "coco_images_224_float16.hdf5"


def shard_dir(root: Path, subject: int, split: str) -> Path:
    return Path(root) / "wds" / f"subj{subject:02d}" / split


@dataclasses.dataclass(frozen=True)
class NSDTrials:
    """Single trials of one split: betas (trials, V) and their behavioural columns."""

    betas: np.ndarray
    behav: np.ndarray  # (trials, 17)
    coco_index: np.ndarray  # (trials,)
    beta_row: np.ndarray  # (trials,)
    session: np.ndarray  # (trials,)
    extra: Mapping[str, np.ndarray]  # past/future/olds behav, stacked per trial

    def __len__(self) -> int:
        return len(self.coco_index)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    return split


def _read_split_behav(root: Path, subject: int, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    directory = require_dir(shard_dir(root, subject, split), f"MindEye2 {split} shards of subj{subject:02d}")
    shards = sorted(directory.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    if not shards:
        raise FileNotFoundError(f"MindEye2 {split} shards of subj{subject:02d}: no .tar files in {directory}")
    behav, extra = [], {name: [] for name in EXTRA_BEHAV}
    for shard in shards:
        for sample in read_samples(shard):
            if "behav.npy" not in sample:
                raise ValueError(f"{shard}: sample {sample['__key__']!r} has no behav.npy")
            b = np.asarray(sample["behav.npy"])
            if b.shape != (1, 17):
                raise ValueError(f"{shard}: sample {sample['__key__']!r} behav.npy has shape {b.shape}, expected (1, 17)")
            behav.append(b[0])
            for name in EXTRA_BEHAV:
                extra[name].append(np.asarray(sample.get(f"{name}.npy", np.full((1, 17), -1.0))))
    extra_arrays = {}
    for name, values in extra.items():
        shapes = {v.shape for v in values}
        extra_arrays[name] = np.stack(values) if len(shapes) == 1 else np.asarray(values, dtype=object)
    return np.stack(behav), extra_arrays


def read_mindeye2(
    root: str | Path,
    subject: int,
    splits: Sequence[str] = ("train", "test"),
    *,
    zscore: bool = True,
    expected_voxels: int | None = None,
) -> dict[str, NSDTrials]:
    """Read the trials of ``splits`` for NSD ``subject`` from a MindEye2 data folder."""
    import h5py

    subject = check_subject(subject)
    splits = tuple(_check_split(s) for s in splits)
    root = Path(root)
    path = require_file(betas_path(root, subject), f"MindEye2 betas of subj{subject:02d}")
    needed = tuple(dict.fromkeys(("train",) + splits if zscore else splits))
    behav = {s: _read_split_behav(root, subject, s) for s in needed}
    with h5py.File(path, "r") as f:
        if "betas" not in f:
            raise ValueError(f"{path}: expected a dataset named 'betas'")
        dset = f["betas"]
        if dset.ndim != 2:
            raise ValueError(f"{path}: 'betas' has shape {dset.shape}, expected (trials, voxels)")
        check_voxels(str(path), dset.shape[1], subject, expected_voxels)
        rows = np.concatenate([behav[s][0][:, BEHAV_BETA_ROW].astype(np.int64) for s in needed])
        if rows.size and (rows.min() < 0 or rows.max() >= dset.shape[0]):
            raise ValueError(f"{path}: behav column 5 names rows outside 0..{dset.shape[0] - 1}")
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        betas = np.asarray(dset[unique_rows], np.float32)[inverse]
    sizes = [len(behav[s][0]) for s in needed]
    owner = np.repeat(np.arange(len(needed)), sizes)
    session = rows // TRIALS_PER_SESSION
    if zscore:
        betas = zscore_per_session(betas, session, owner == 0)
    out = {}
    for i, split in enumerate(needed):
        if split not in splits:
            continue
        mask = owner == i
        b, extra = behav[split]
        out[split] = NSDTrials(
            betas=betas[mask],
            behav=b,
            coco_index=b[:, BEHAV_COCO].astype(np.int64),
            beta_row=rows[mask],
            session=session[mask],
            extra=extra,
        )
    return out


def read_coco_images(root: str | Path, coco_index: np.ndarray) -> np.ndarray:
    """Images ``(n, 224, 224, 3)`` float32 in [0, 1] (channels-last) for 73k COCO indices."""
    import h5py

    path = require_file(images_path(Path(root)), "MindEye2 COCO images")
    coco_index = np.asarray(coco_index, np.int64)
    with h5py.File(path, "r") as f:
        if "images" not in f:
            raise ValueError(f"{path}: expected a dataset named 'images'")
        dset = f["images"]
        if dset.ndim != 4 or dset.shape[1] != 3:
            raise ValueError(f"{path}: 'images' has shape {dset.shape}, expected (N, 3, H, W)")
        if coco_index.size and (coco_index.min() < 0 or coco_index.max() >= dset.shape[0]):
            raise ValueError(f"coco_index: values must lie in 0..{dset.shape[0] - 1}")
        unique, inverse = np.unique(coco_index, return_inverse=True)
        images = np.asarray(dset[unique], np.float32)[inverse]
    return images.transpose(0, 2, 3, 1)


def write_mindeye2(
    root: str | Path,
    subject: int,
    betas: np.ndarray,
    behav: Mapping[str, np.ndarray],
    *,
    beta_rows: np.ndarray | None = None,
    n_rows: int | None = None,
    images: np.ndarray | None = None,
    samples_per_shard: int = 1000,
) -> None:
    """Write a MindEye2 folder (for tests and simulated data): ``behav[split]`` is (n, 17).

    ``betas`` fills the whole file, or only ``beta_rows`` of an ``n_rows``-row file (chunked per
    row, so unwritten rows take no space). ``images`` (N, 3, H, W) is written as float16
    (MindEye2's dtype); N is 73000 in the release.
    """
    import h5py

    subject = check_subject(subject)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    betas = np.asarray(betas, np.float32)
    if betas.ndim != 2:
        raise ValueError(f"betas: expected (trials, voxels), got shape {betas.shape}")
    with h5py.File(betas_path(root, subject), "w") as f:
        if beta_rows is None:
            f.create_dataset("betas", data=betas)
        else:
            beta_rows = np.asarray(beta_rows, np.int64)
            if beta_rows.shape != (len(betas),) or n_rows is None or beta_rows.max() >= n_rows:
                raise ValueError("beta_rows: expected one row index < n_rows per row of betas")
            dset = f.create_dataset("betas", shape=(n_rows, betas.shape[1]), dtype=np.float32,
                                    chunks=(1, betas.shape[1]))
            order = np.argsort(beta_rows)
            dset[beta_rows[order]] = betas[order]
    for split, rows in behav.items():
        _check_split(split)
        rows = np.asarray(rows, np.float64)
        if rows.ndim != 2 or rows.shape[1] != 17:
            raise ValueError(f"behav[{split!r}]: expected shape (n, 17), got {rows.shape}")
        samples = [
            {
                "__key__": f"sample{i:09d}",
                "behav.npy": row[None, :],
                **{f"{name}.npy": np.full((1, 17), -1.0) for name in EXTRA_BEHAV},
            }
            for i, row in enumerate(rows)
        ]
        for n, start in enumerate(range(0, max(len(samples), 1), samples_per_shard)):
            write_samples(shard_dir(root, subject, split) / f"{n}.tar", samples[start : start + samples_per_shard])
    if images is not None:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (N, 3, H, W), got shape {images.shape}")
        with h5py.File(images_path(root), "w") as f:
            f.create_dataset("images", data=images.astype(np.float16))


def make_behav(coco_index: np.ndarray, beta_row: np.ndarray, shared1000: np.ndarray | None = None) -> np.ndarray:
    """Behaviour rows (n, 17) with the columns MindEye2 reads filled (others -1)."""
    coco_index, beta_row = np.asarray(coco_index), np.asarray(beta_row)
    if coco_index.shape != beta_row.shape or coco_index.ndim != 1:
        raise ValueError(f"coco_index {coco_index.shape} and beta_row {beta_row.shape}: expected equal 1-D shapes")
    if coco_index.size and (coco_index.min() < 0 or coco_index.max() >= N_COCO_IMAGES):
        raise ValueError(f"coco_index: expected values in 0..{N_COCO_IMAGES - 1}")
    behav = np.full((len(coco_index), 17), -1.0)
    behav[:, BEHAV_COCO] = coco_index
    behav[:, BEHAV_BETA_ROW] = beta_row
    behav[:, BEHAV_SHARED1000] = 0 if shared1000 is None else np.asarray(shared1000, float)
    return behav
