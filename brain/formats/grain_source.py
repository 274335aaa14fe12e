"""grain data sources over per-subject trials, and per-subject batch schedules.

:class:`SubjectTrialSource` is a grain ``RandomAccessDataSource`` (``__len__``/``__getitem__``)
over one subject's trial arrays (e.g. :class:`brain.formats.mindeye2.NSDTrials` betas, or a
simulated :class:`brain.simulator.SubjectRecording`), returning one dict per trial.
Voxel counts differ across subjects, so a batch holds trials of one subject only (MindBridge's
per-subject chunks, MindEye2's per-subject ridge inputs): :func:`subject_batches` yields
``(subject, indices)`` with subjects interleaved round-robin and fixed batch shapes (the last
incomplete batch of a subject is dropped), reshuffled per epoch from ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from brain.input_checks import check_positive_int


class SubjectTrialSource:
    """Random access to one subject's trials: ``{"voxels", "subject", **extra}`` per index."""

    def __init__(self, subject: int, voxels: np.ndarray, extra: Mapping[str, np.ndarray] | None = None):
        voxels = np.asarray(voxels)
        if voxels.ndim < 2 or len(voxels) == 0:
            raise ValueError(f"voxels: expected a non-empty (trials, ..., voxels) array, got shape {voxels.shape}")
        extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
        for name, value in extra.items():
            if len(value) != len(voxels):
                raise ValueError(f"extra[{name!r}] has {len(value)} rows, expected {len(voxels)} (one per trial)")
        self.subject, self.voxels, self.extra = subject, voxels, extra

    def __len__(self) -> int:
        return len(self.voxels)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} trials")
        return {"voxels": self.voxels[index], "subject": np.int32(self.subject),
                **{k: v[index] for k, v in self.extra.items()}}


def subject_batches(
    lengths: Mapping[int, int] | Sequence[int], batch_size: int, *, seed: int = 0, epoch: int = 0
) -> Iterator[tuple[int, np.ndarray]]:
    """Shuffled single-subject batches, subjects interleaved round-robin, one epoch."""
    batch_size = check_positive_int("batch_size", batch_size)
    lengths = dict(enumerate(lengths)) if not isinstance(lengths, Mapping) else dict(lengths)
    rng = np.random.default_rng([seed, epoch])
    queues = {}
    for subject, n in lengths.items():
        if n < batch_size:
            raise ValueError(f"subject {subject} has {n} trials, fewer than batch_size={batch_size}")
        perm = rng.permutation(n)
        queues[subject] = [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    while any(queues.values()):
        for subject in list(queues):
            if queues[subject]:
                yield subject, queues[subject].pop(0)
