"""MindEye1 / MindBridge (P09) directory layout of NSD.

```
<root>/webdataset_avg_split/{train,val,test}/subj0X/sampleNNNNNNNNN.nsdgeneral.npy   (3, V)
                                                    sampleNNNNNNNNN.jpg
                                                    sampleNNNNNNNNN.coco73k.npy
```

``nsdgeneral.npy`` holds the betas of the 3 repeats of the sample's image; samples are read in
sorted key order (as MindBridge's ``NSDDataset``). Images are decoded to float32 in [0, 1],
channels-last. Values are returned as stored (MindBridge feeds them unchanged); z-score with
:func:`brain.trials.zscore_with_train_stats` if wanted.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np

from brain.formats.nsd import check_subject, check_voxels, require_dir

SPLITS = ("train", "val", "test")
EXTENSIONS = ("nsdgeneral.npy", "jpg", "coco73k.npy")


def split_dir(root: Path, split: str, subject: int) -> Path:
    return Path(root) / "webdataset_avg_split" / split / f"subj{subject:02d}"


@dataclasses.dataclass(frozen=True)
class AveragedSplit:
    keys: list[str]
    voxels: np.ndarray  # (n, 3, V)
    images: np.ndarray | None  # (n, H, W, 3) in [0, 1]
    coco_index: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.keys)


def read_mindeye1(
    root: str | Path, subject: int, split: str, *, load_images: bool = True, expected_voxels: int | None = None
) -> AveragedSplit:
    """Read one split of one subject from a MindEye1/MindBridge folder."""
    from PIL import Image

    subject = check_subject(subject)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    directory = require_dir(split_dir(Path(root), split, subject), f"MindEye1 {split} folder of subj{subject:02d}")
    files: dict[str, dict[str, Path]] = {}
    for path in directory.iterdir():
        key, dot, ext = path.name.partition(".")
        if dot and ext in EXTENSIONS:
            files.setdefault(key, {})[ext] = path
    if not files:
        raise FileNotFoundError(f"{directory}: no samples ({', '.join(EXTENSIONS)} files)")
    keys = sorted(files)
    needed = EXTENSIONS if load_images else ("nsdgeneral.npy", "coco73k.npy")
    for key in keys:
        missing = [e for e in needed if e not in files[key]]
        if missing:
            raise FileNotFoundError(f"{directory}: sample {key!r} is missing {', '.join(key + '.' + m for m in missing)}")
    voxels = np.stack([np.load(files[k]["nsdgeneral.npy"]) for k in keys]).astype(np.float32)
    if voxels.ndim != 3:
        raise ValueError(f"{directory}: nsdgeneral.npy arrays have shape {voxels.shape[1:]}, expected (repeats, V)")
    check_voxels(str(directory), voxels.shape[-1], subject, expected_voxels)
    coco = np.array([int(np.load(files[k]["coco73k.npy"]).reshape(-1)[0]) for k in keys])
    images = None
    if load_images:
        images = np.stack(
            [np.asarray(Image.open(io.BytesIO(files[k]["jpg"].read_bytes())).convert("RGB"), np.float32) / 255.0 for k in keys]
        )
    return AveragedSplit(keys, voxels, images, coco)


def write_mindeye1(
    root: str | Path, subject: int, split: str, voxels: np.ndarray, images: np.ndarray, coco_index: np.ndarray
) -> None:
    """Write one split in the MindEye1/MindBridge layout (images in [0, 1], saved as JPEG q=95)."""
    from PIL import Image

    subject = check_subject(subject)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    voxels, images, coco_index = np.asarray(voxels, np.float32), np.asarray(images), np.asarray(coco_index)
    if voxels.ndim != 3 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"voxels {voxels.shape} / images {images.shape}: expected (n, 3, V) and (n, H, W, 3)")
    if not len(voxels) == len(images) == len(coco_index):
        raise ValueError("voxels, images and coco_index: expected the same number of samples")
    directory = split_dir(Path(root), split, subject)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(len(voxels)):
        key = directory / f"sample{i:09d}"
        np.save(f"{key}.nsdgeneral.npy", voxels[i])
        np.save(f"{key}.coco73k.npy", np.array([coco_index[i]], np.int64))
        Image.fromarray(np.clip(np.round(images[i] * 255), 0, 255).astype(np.uint8)).save(f"{key}.jpg", quality=95)
