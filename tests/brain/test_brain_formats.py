"""Round trips of the published NSD layouts, normalisation with train statistics, clear errors."""

import numpy as np
import pytest

from brain.formats import (
    NSD_VOXELS,
    make_behav,
    read_brain_diffuser,
    read_coco_images,
    read_mindeye1,
    read_mindeye2,
    write_brain_diffuser,
    write_mindeye1,
    write_mindeye2,
)
from brain.formats.mindeye2 import betas_path
from brain.formats.webdataset_tar import read_samples, write_samples
from brain.trials import average_repeats, zscore_per_session, zscore_with_train_stats

V1 = NSD_VOXELS[1]
assert V1 == 15724


def _mindeye2_folder(tmp_path, n_voxels=V1):
    rng = np.random.default_rng(0)
    # two sessions: rows 0..11 (session 0) and 750..761 (session 1); session 1 has an offset/scale
    rows = np.r_[np.arange(12), 750 + np.arange(12)]
    betas = rng.standard_normal((24, n_voxels)).astype(np.float32)
    betas[12:] = 3 * betas[12:] + 5
    is_test = np.zeros(24, bool)
    is_test[[10, 11, 22, 23]] = True
    coco = rng.choice(40, 24, replace=False)
    behav = {
        "train": make_behav(coco[~is_test], rows[~is_test]),
        "test": make_behav(coco[is_test], rows[is_test], shared1000=np.ones(4)),
    }
    images = rng.random((40, 3, 8, 8)).astype(np.float16)
    write_mindeye2(tmp_path, 1, betas, behav, beta_rows=rows, n_rows=1500, images=images, samples_per_shard=7)
    return betas, rows, is_test, coco, images


def test_mindeye2_round_trip_and_session_zscore(tmp_path):
    betas, rows, is_test, coco, images = _mindeye2_folder(tmp_path)
    assert len(list((tmp_path / "wds" / "subj01" / "train").glob("*.tar"))) == 3  # 20 samples / 7
    raw = read_mindeye2(tmp_path, 1, zscore=False)
    np.testing.assert_array_equal(raw["train"].betas, betas[~is_test])
    np.testing.assert_array_equal(raw["test"].betas, betas[is_test])
    np.testing.assert_array_equal(raw["test"].coco_index, coco[is_test])
    np.testing.assert_array_equal(raw["train"].session, rows[~is_test] // 750)
    assert raw["test"].behav[0, 16] == 1 and raw["train"].extra["past_behav"].shape == (20, 1, 17)

    z = read_mindeye2(tmp_path, 1, splits=("test",))
    assert set(z) == {"test"}
    expected = zscore_per_session(betas, rows // 750, ~is_test)
    np.testing.assert_allclose(z["test"].betas, expected[is_test], rtol=1e-5, atol=1e-5)
    train = read_mindeye2(tmp_path, 1)["train"]
    for s in (0, 1):
        sel = train.session == s
        np.testing.assert_allclose(train.betas[sel].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(train.betas[sel].std(0), 1, atol=1e-4)
    # test rows use train statistics only: their own session mean is not forced to 0
    assert np.abs(z["test"].betas.mean(0)).mean() > 0.3

    imgs = read_coco_images(tmp_path, coco[is_test])
    assert imgs.shape == (4, 8, 8, 3) and imgs.dtype == np.float32
    np.testing.assert_array_equal(imgs, images[coco[is_test]].astype(np.float32).transpose(0, 2, 3, 1))


def test_mindeye2_errors(tmp_path):
    _mindeye2_folder(tmp_path, n_voxels=100)
    with pytest.raises(ValueError, match="100 voxels, expected 15724"):
        read_mindeye2(tmp_path, 1)
    assert len(read_mindeye2(tmp_path, 1, expected_voxels=100)["train"]) == 20
    with pytest.raises(FileNotFoundError, match="new_test"):
        read_mindeye2(tmp_path, 1, splits=("new_test",), expected_voxels=100)
    with pytest.raises(ValueError, match="subject"):
        read_mindeye2(tmp_path, 9)
    betas_path(tmp_path, 1).unlink()
    with pytest.raises(FileNotFoundError, match="betas_all_subj01_fp32_renorm.hdf5"):
        read_mindeye2(tmp_path, 1, expected_voxels=100)


def test_webdataset_tar_round_trip(tmp_path):
    samples = [{"__key__": "a", "x.npy": np.arange(3), "txt": b"hi"}, {"__key__": "b", "x.npy": np.ones((2, 2))}]
    write_samples(tmp_path / "s.tar", samples)
    back = list(read_samples(tmp_path / "s.tar"))
    assert [s["__key__"] for s in back] == ["a", "b"] and back[0]["txt"] == b"hi"
    np.testing.assert_array_equal(back[1]["x.npy"], np.ones((2, 2)))
    (tmp_path / "bad.tar").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="tar"):
        list(read_samples(tmp_path / "bad.tar"))


def test_mindeye1_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    vox = rng.standard_normal((3, 3, V1)).astype(np.float32)
    imgs = np.tile(np.linspace(0, 1, 16)[None, :, None, None], (3, 1, 16, 3))  # smooth: JPEG-friendly
    write_mindeye1(tmp_path, 1, "test", vox, imgs, np.array([5, 7, 9]))
    data = read_mindeye1(tmp_path, 1, "test")
    assert data.keys == ["sample000000000", "sample000000001", "sample000000002"]
    np.testing.assert_array_equal(data.voxels, vox)
    np.testing.assert_array_equal(data.coco_index, [5, 7, 9])
    assert data.images.shape == (3, 16, 16, 3) and np.abs(data.images - imgs).max() < 0.05
    write_mindeye1(tmp_path, 2, "train", vox, imgs, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="15724 voxels, expected 14278"):
        read_mindeye1(tmp_path, 2, "train")
    (tmp_path / "webdataset_avg_split" / "test" / "subj01" / "sample000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="sample000000001.jpg"):
        read_mindeye1(tmp_path, 1, "test")
    assert len(read_mindeye1(tmp_path, 1, "test", load_images=False)) == 3
    with pytest.raises(FileNotFoundError, match="val"):
        read_mindeye1(tmp_path, 1, "val")


def test_brain_diffuser_round_trip_zscore_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    train = (2 + 3 * rng.standard_normal((6, V1))).astype(np.float32)
    test = rng.standard_normal((2, V1)).astype(np.float32)
    stim = rng.integers(0, 256, (6, 425, 425, 3), dtype=np.uint8)
    write_brain_diffuser(tmp_path, 1, "train", train, stim)
    write_brain_diffuser(tmp_path, 1, "test", test, stim[:2])
    assert (tmp_path / "processed_data/subj01/nsd_train_fmriavg_nsdgeneral_sub1.npy").is_file()
    raw = read_brain_diffuser(tmp_path, 1, zscore=False)
    np.testing.assert_array_equal(raw.train_fmri, train)
    np.testing.assert_array_equal(raw.test_stim, stim[:2])
    z = read_brain_diffuser(tmp_path, 1, load_stimuli=False)
    mean, std = train.mean(0), train.std(0, ddof=1)
    np.testing.assert_allclose(z.test_fmri, (test - mean) / std, rtol=1e-4, atol=1e-4)
    assert z.train_stim is None
    with pytest.raises(ValueError, match="expected 13039"):
        read_brain_diffuser(tmp_path, 1, expected_voxels=NSD_VOXELS[5])
    (tmp_path / "processed_data/subj01/nsd_test_stim_sub1.npy").unlink()
    with pytest.raises(FileNotFoundError, match="nsd_test_stim_sub1.npy"):
        read_brain_diffuser(tmp_path, 1)


def test_trial_helpers():
    x = np.arange(12.0).reshape(6, 2)
    ids, mean = average_repeats(x, np.array([2, 1, 2, 1, 0, 0]))
    np.testing.assert_array_equal(ids, [0, 1, 2])
    np.testing.assert_allclose(mean, [[9, 10], [4, 5], [2, 3]])
    with pytest.raises(ValueError, match="training trials"):
        zscore_per_session(x, np.array([0, 0, 0, 1, 1, 1]), np.array([1, 1, 0, 1, 0, 0], bool))
    with pytest.raises(ValueError, match="finite"):
        zscore_with_train_stats(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="voxels"):
        zscore_with_train_stats(x, np.ones((2, 3)))


def test_grain_source_and_subject_batches():
    import grain.python as gp

    from brain.formats.grain_source import SubjectTrialSource, subject_batches

    src = SubjectTrialSource(2, np.arange(20.0).reshape(10, 2), {"target": np.arange(10)})
    item = src[3]
    assert item["subject"] == 2 and item["target"] == 3 and list(item["voxels"]) == [6.0, 7.0]
    loader = gp.DataLoader(data_source=src, sampler=gp.SequentialSampler(len(src), gp.NoSharding()),
                           operations=[gp.Batch(5)], worker_count=0)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["voxels"].shape == (5, 2)
    sched = list(subject_batches({1: 10, 2: 7}, 3, seed=0, epoch=0))
    assert [s for s, _ in sched] == [1, 2, 1, 2, 1]
    seen = np.concatenate([idx for s, idx in sched if s == 1])
    assert len(set(seen)) == 9 and all(len(idx) == 3 for _, idx in sched)
    again = list(subject_batches({1: 10, 2: 7}, 3, seed=0, epoch=0))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(sched, again))
    other = list(subject_batches({1: 10, 2: 7}, 3, seed=0, epoch=1))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(sched, other))
    with pytest.raises(ValueError, match="extra"):
        SubjectTrialSource(1, np.ones((3, 2)), {"t": np.ones(2)})
    with pytest.raises(ValueError, match="batch_size"):
        list(subject_batches([2], 3))
