import numpy as np
import pytest

from core import data


def test_digits_source_is_a_fixed_split():
    train, test = data.digits("train"), data.digits("test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    example = train[0]
    assert example["image"].shape == (8, 8) and example["image"].dtype == np.float32
    assert 0.0 <= train.arrays["image"].min() and train.arrays["image"].max() <= 1.0
    with pytest.raises(ValueError, match="split='validation'"):
        data.digits("validation")


def test_array_source_validates():
    with pytest.raises(ValueError, match="one common leading length"):
        data.ArraySource({"a": np.zeros(3), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="at least one example"):
        data.ArraySource({"a": np.zeros((0, 2))})


def test_process_slices_tile_the_global_batch():
    source = data.ArraySource({"i": np.arange(50)})
    whole = data.batches(source, 8, seed=3, process_index=0, process_count=1)
    parts = [data.batches(source, 8, seed=3, process_index=p, process_count=2) for p in range(2)]
    for _ in range(10):  # crosses epoch boundaries (50 examples, 6 batches per epoch)
        expected = next(whole)["i"]
        got = np.concatenate([next(p)["i"] for p in parts])
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="global_batch_size=9"):
        data.batches(source, 9, process_index=0, process_count=2)


def test_epochs_are_reshuffled_and_complete():
    source = data.ArraySource({"i": np.arange(12)})
    iterator = data.batches(source, 4, seed=0)
    epoch1 = np.concatenate([next(iterator)["i"] for _ in range(3)])
    epoch2 = np.concatenate([next(iterator)["i"] for _ in range(3)])
    assert sorted(epoch1) == list(range(12)) and sorted(epoch2) == list(range(12))
    assert not np.array_equal(epoch1, epoch2)


def test_iterator_state_resumes_exactly():
    source = data.ArraySource({"i": np.arange(30)})
    iterator = data.batches(source, 4, seed=1)
    for _ in range(5):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator)["i"] for _ in range(4)]
    fresh = data.batches(source, 4, seed=1)
    fresh.set_state(state)
    for e in expected:
        np.testing.assert_array_equal(next(fresh)["i"], e)


def test_tfds_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not prepared under data_dir"):
        data.tfds_source("mnist", "train", data_dir=tmp_path)


def test_generated_source_is_deterministic_per_index():
    def make(rng, index):
        return {"x": rng.normal(size=3).astype(np.float32), "i": np.int32(index)}

    source = data.GeneratedSource(10, make, seed=7)
    np.testing.assert_array_equal(source[4]["x"], data.GeneratedSource(10, make, seed=7)[4]["x"])
    assert not np.array_equal(source[4]["x"], source[5]["x"])
    batch = next(data.batches(source, 4, seed=0))
    assert batch["x"].shape == (4, 3)
    with pytest.raises(IndexError, match="index=10"):
        source[10]
    with pytest.raises(ValueError, match="length=0"):
        data.GeneratedSource(0, make)
