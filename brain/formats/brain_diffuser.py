"""Brain-Diffuser (P30, ozcelikfu/brain-diffuser) processed NSD files.

```
<root>/processed_data/subjXX/nsd_{train,test}_fmriavg_nsdgeneral_subN.npy   (N, V) repeat-averaged
<root>/processed_data/subjXX/nsd_{train,test}_stim_subN.npy                 (N, 425, 425, 3) uint8
```

As in Brain-Diffuser's regression scripts, :func:`read_brain_diffuser` z-scores the train and
test betas with the train mean and standard deviation (``ddof=1``, as their ``np.std(...,
ddof=1)``; their prior division by 300 cancels out); ``zscore=False`` returns the file's values.
Stimuli are returned as stored (uint8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from brain.formats.nsd import check_subject, check_voxels, require_file
from brain.trials import zscore_with_train_stats


def _paths(root: Path, subject: int, split: str) -> tuple[Path, Path]:
    folder = Path(root) / "processed_data" / f"subj{subject:02d}"
    return (
        folder / f"nsd_{split}_fmriavg_nsdgeneral_sub{subject}.npy",
        folder / f"nsd_{split}_stim_sub{subject}.npy",
    )


@dataclasses.dataclass(frozen=True)
class BrainDiffuserData:
    train_fmri: np.ndarray
    test_fmri: np.ndarray
    train_stim: np.ndarray | None
    test_stim: np.ndarray | None


def read_brain_diffuser(
    root: str | Path,
    subject: int,
    *,
    zscore: bool = True,
    load_stimuli: bool = True,
    expected_voxels: int | None = None,
) -> BrainDiffuserData:
    subject = check_subject(subject)
    fmri, stim = {}, {}
    for split in ("train", "test"):
        fmri_path, stim_path = _paths(Path(root), subject, split)
        x = np.load(require_file(fmri_path, f"Brain-Diffuser {split} fMRI of subj{subject:02d}"))
        if x.ndim != 2:
            raise ValueError(f"{fmri_path}: shape {x.shape}, expected (N, voxels)")
        check_voxels(str(fmri_path), x.shape[1], subject, expected_voxels)
        fmri[split] = x.astype(np.float32)
        if load_stimuli:
            s = np.load(require_file(stim_path, f"Brain-Diffuser {split} stimuli of subj{subject:02d}"), mmap_mode="r")
            if s.ndim != 4 or s.shape[0] != x.shape[0] or s.shape[-1] != 3:
                raise ValueError(f"{stim_path}: shape {s.shape}, expected ({x.shape[0]}, H, W, 3) to match the fMRI")
            stim[split] = np.asarray(s)
    if zscore:
        fmri["train"], fmri["test"] = zscore_with_train_stats(fmri["train"], fmri["test"], ddof=1)
    return BrainDiffuserData(fmri["train"], fmri["test"], stim.get("train"), stim.get("test"))


def write_brain_diffuser(
    root: str | Path, subject: int, split: str, fmri: np.ndarray, stimuli: np.ndarray
) -> None:
    subject = check_subject(subject)
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    fmri, stimuli = np.asarray(fmri), np.asarray(stimuli)
    if fmri.ndim != 2 or stimuli.ndim != 4 or len(fmri) != len(stimuli):
        raise ValueError(f"fmri {fmri.shape} / stimuli {stimuli.shape}: expected (N, V) and (N, H, W, 3)")
    fmri_path, stim_path = _paths(Path(root), subject, split)
    fmri_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(fmri_path, fmri.astype(np.float32))
    np.save(stim_path, stimuli.astype(np.uint8))
