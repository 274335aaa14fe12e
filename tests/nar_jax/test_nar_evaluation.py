"""Sample-quality metrics: Frechet distance against scipy's sqrtm formula, the evaluation
classifier on real digits."""

import jax
import numpy as np
import pytest
import scipy.linalg

from core import mesh as mesh_lib
from nar_jax import data as data_lib
from nar_jax import evaluation


def _scipy_frechet(a, b):
    """pytorch-fid's formula: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_identical_feature_sets_have_zero_distance():
    x = np.random.default_rng(0).normal(size=(300, 24)) @ np.random.default_rng(1).normal(size=(24, 24))
    value = float(evaluation.frechet_distance(x, x))
    assert abs(value) < 1e-4 * np.trace(np.cov(x, rowvar=False))


@pytest.mark.parametrize("n, m, d", [(400, 300, 16), (60, 80, 32)])  # second: rank-deficient covs
def test_matches_scipy_sqrtm_formula(n, m, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) * 0.7 + rng.normal(size=d)
    ours = float(evaluation.frechet_distance(a.astype(np.float32), b.astype(np.float32)))
    np.testing.assert_allclose(ours, _scipy_frechet(a, b), rtol=2e-3)


def test_equal_covariances_leave_the_mean_term():
    rng = np.random.default_rng(3)
    cov = np.cov(rng.normal(size=(100, 8)), rowvar=False)
    mu_a, mu_b = rng.normal(size=8), rng.normal(size=8)
    value = evaluation.frechet_distance_from_stats(mu_a, cov, mu_b, cov)
    np.testing.assert_allclose(value, ((mu_a - mu_b) ** 2).sum(), rtol=1e-3, atol=1e-4)


def test_jit_matches_eager():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) + 1.0
    np.testing.assert_allclose(jax.jit(evaluation.frechet_distance)(a, b),
                               evaluation.frechet_distance(a, b), rtol=1e-5)


def test_bad_inputs_raise():
    good = np.zeros((10, 4))
    with pytest.raises(ValueError, match="features_a"):
        evaluation.frechet_distance(np.zeros(10), good)
    with pytest.raises(ValueError, match="same feature dimension"):
        evaluation.frechet_distance(good, np.zeros((10, 5)))
    with pytest.raises(ValueError, match="NaN"):
        evaluation.frechet_distance(np.full((10, 4), np.nan), good)
    with pytest.raises(ValueError, match="at least 2"):
        evaluation.frechet_distance(np.zeros((1, 4)), good)
    with pytest.raises(ValueError, match="mean_a"):
        evaluation.frechet_distance_from_stats(np.zeros(3), np.eye(4), np.zeros(4), np.eye(4))


def test_classifier_separates_real_digits_and_detects_wrong_labels():
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1), devices=jax.devices()[:1])
    train = data_lib.digit_images("train", size=8)
    test = data_lib.digit_images("test", size=8)
    config = evaluation.ClassifierTrainConfig(hidden=64, steps=150, batch_size=64)
    model = evaluation.train_classifier(train, 10, config, mesh)
    images, labels = test.arrays["image"], test.arrays["label"]
    half = len(labels) // 2
    real = evaluation.sample_quality(model, images[:half], labels[:half], images[half:])
    assert real["accuracy"] > 0.85
    wrong = evaluation.sample_quality(model, images[:half], (labels[:half] + 1) % 10, images[half:])
    assert wrong["accuracy"] < 0.2
    # One class only (mode collapse) lies farther from the real test set than real images do.
    collapsed = images[:half][labels[:half] == 3]
    far = evaluation.sample_quality(model, collapsed, np.full(len(collapsed), 3), images[half:])
    assert far["frechet_distance"] > 2 * real["frechet_distance"]
    with pytest.raises(ValueError, match="labels"):
        evaluation.sample_quality(model, images[:4], labels[:3], images[half:])
