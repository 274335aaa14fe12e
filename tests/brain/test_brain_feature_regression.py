"""P30/P37 ridge stages: per-token ridge equals scikit-learn per token; re-standardisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Ridge

import core  # noqa: F401
from brain.feature_regression import fit_feature_ridge, predict_features, restandardize
from brain.pooling import adaptive_pool, adaptive_windows


def test_per_token_ridge_and_restandardization_match_reference_script():
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.standard_normal((40, 30)), rng.standard_normal((10, 30))
    feats = rng.standard_normal((40, 3, 4)) * 2 + 1
    with jax.enable_x64(True):
        model = fit_feature_ridge(jnp.asarray(x_tr), jnp.asarray(feats), 60.0)
        ours = np.asarray(predict_features(model, jnp.asarray(x_te), jnp.asarray(feats)))
    for tok in range(3):  # the official loop: one Ridge per token, then re-standardise
        pred = Ridge(alpha=60.0).fit(x_tr, feats[:, tok]).predict(x_te)
        z = (pred - pred.mean(0)) / pred.std(0)
        ref = z * feats[:, tok].std(0) + feats[:, tok].mean(0)
        np.testing.assert_allclose(ours[:, tok], ref, atol=1e-8)


def test_restandardize_matches_train_moments():
    rng = np.random.default_rng(1)
    out = np.asarray(restandardize(rng.standard_normal((50, 5)) * 0.01, 3 + 2 * rng.standard_normal((80, 5))))
    assert out.shape == (50, 5)
    with pytest.raises(ValueError, match="feature shapes"):
        restandardize(np.ones((3, 2)), np.ones((3, 4)))


def test_adaptive_pool_windows_follow_pytorch():
    # PyTorch: start = floor(i * L / P), end = ceil((i + 1) * L / P)
    start, stop = adaptive_windows(10, 4)
    np.testing.assert_array_equal(start, [0, 2, 5, 7])
    np.testing.assert_array_equal(stop, [3, 5, 8, 10])
    x = jnp.arange(10.0)[None]
    np.testing.assert_allclose(np.asarray(adaptive_pool(x, 4, "max"))[0], [2, 4, 7, 9])
    np.testing.assert_allclose(np.asarray(adaptive_pool(x, 4, "avg"))[0], [1, 3, 6, 8])
    np.testing.assert_allclose(np.asarray(adaptive_pool(x, 10, "max"))[0], np.arange(10))
    # linear resize with align_corners=False, 4 -> 2: sample positions 0.5 and 2.5
    np.testing.assert_allclose(np.asarray(adaptive_pool(jnp.arange(4.0), 2, "resize")), [0.5, 2.5])
    with pytest.raises(ValueError, match="kind"):
        adaptive_pool(x, 4, "median")
    assert jax.jit(lambda v: adaptive_pool(v, 3, "max"))(jnp.ones((2, 7))).shape == (2, 3)
