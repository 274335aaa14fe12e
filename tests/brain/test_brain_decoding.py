"""Decoding experiment on the simulator: batch layout, and a short training that beats chance."""


import numpy as np
import pytest

import core  # noqa: F401
from brain import decoding_experiment as de
from brain.simulator import Simulation, SimulatorConfig
from core.train import TrainConfig

SIM = SimulatorConfig.tiny(voxels=(150, 120), n_train_stimuli=300, n_test_stimuli=100, n_reference=512)


@pytest.fixture(scope="module")
def datas():
    return de.load_subjects(de.DecodingConfig(simulator=SIM), Simulation(SIM))


def test_subject_data_and_multi_subject_batches(datas):
    assert [d.n_voxels for d in datas] == [150, 120]
    assert datas[0].train_voxels.shape == (900, 150) and datas[0].test_voxels.shape == (100, 150)
    np.testing.assert_allclose(np.linalg.norm(datas[0].train_target, axis=1), 1.0, rtol=1e-5)
    source = de.MultiSubjectSource(datas, seed=0)
    example = source[5]
    assert example["voxels"].shape == (2, 150) and example["target"].shape == (2, 64)
    assert not example["voxels"][1, 120:].any()  # padding of the smaller subject
    row = source.perms[1][5]
    np.testing.assert_array_equal(example["voxels"][1, :120], datas[1].train_voxels[row])
    np.testing.assert_array_equal(example["target"][1], datas[1].train_target[row])
    batch = next(iter(de.data_lib.batches(source, 16)))
    assert batch["voxels"].shape == (16, 2, 150)
    with pytest.raises(ValueError, match="n_train"):
        de.subject_data(Simulation(SIM), 0, n_train=-1)


@pytest.mark.parametrize("kind", ["mindbridge", "adapters"])
def test_short_training_beats_chance_retrieval(datas, kind):
    cfg = de.DecodingConfig(simulator=SIM, model=kind, n_way=100,
                            train=TrainConfig(steps=150, batch_size=32, log_every=50, progress=False,
                                              tensorboard=False))
    _, metrics = de.run(cfg, datas)
    chance = 1 / 100
    assert metrics["brain_to_image"] > 5 * chance and metrics["image_to_brain"] > 5 * chance, metrics
    assert metrics["two_way"] > 0.7, metrics


def test_untrained_model_is_at_chance(datas):
    cfg = de.DecodingConfig(simulator=SIM, model="adapters", n_way=100)
    model = de.make_model_fn(cfg, "adapters", SIM.voxels, 64)()
    metrics = de.evaluate(model, datas, 100)
    assert metrics["brain_to_image"] < 0.05 and 0.35 < metrics["two_way"] < 0.65, metrics
