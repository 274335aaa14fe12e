"""Facts about the Natural Scenes Dataset shared by the readers of its published layouts."""

from __future__ import annotations

from pathlib import Path

# nsdgeneral voxel counts of the eight NSD subjects (as in MindEye2's evaluation code)
NSD_VOXELS = {1: 15724, 2: 14278, 3: 15226, 4: 13153, 5: 13039, 6: 17907, 7: 12682, 8: 14386}
TRIALS_PER_SESSION = 750
N_COCO_IMAGES = 73000


def check_subject(subject) -> int:
    if isinstance(subject, bool) or not isinstance(subject, int) or subject not in NSD_VOXELS:
        raise ValueError(f"subject={subject!r}: expected an NSD subject number 1..8")
    return subject


def check_voxels(what: str, n_voxels: int, subject: int, expected: int | None) -> None:
    """Raise ``ValueError`` when ``n_voxels`` is not the expected count (NSD's by default)."""
    expected = NSD_VOXELS[subject] if expected is None else expected
    if n_voxels != expected:
        raise ValueError(
            f"{what}: has {n_voxels} voxels, expected {expected} for subj{subject:02d} "
            f"(nsdgeneral; pass expected_voxels= for another mask)"
        )


def require_file(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: expected a file at {path}")
    return Path(path)


def require_dir(path: Path, what: str) -> Path:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{what} not found: expected a directory at {path}")
    return Path(path)
