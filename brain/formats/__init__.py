"""Readers (and writers, for tests and simulated data) of NSD's published layouts."""

from brain.formats.brain_diffuser import BrainDiffuserData, read_brain_diffuser, write_brain_diffuser
from brain.formats.grain_source import SubjectTrialSource, subject_batches
from brain.formats.mindeye1 import AveragedSplit, read_mindeye1, write_mindeye1
from brain.formats.mindeye2 import NSDTrials, make_behav, read_coco_images, read_mindeye2, write_mindeye2
from brain.formats.nsd import NSD_VOXELS, TRIALS_PER_SESSION

__all__ = [
    "AveragedSplit",
    "BrainDiffuserData",
    "NSDTrials",
    "NSD_VOXELS",
    "SubjectTrialSource",
    "TRIALS_PER_SESSION",
    "make_behav",
    "read_brain_diffuser",
    "read_coco_images",
    "read_mindeye1",
    "read_mindeye2",
    "subject_batches",
    "write_brain_diffuser",
    "write_mindeye1",
    "write_mindeye2",
]
