"""Metrics against known answers, scikit-image / numpy / scipy references and chance levels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

import core  # noqa: F401
from brain import metrics


def _images(seed, n=4, size=40):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


def test_identical_images_score_perfectly():
    imgs = _images(0)
    assert float(metrics.pixcorr(imgs, imgs, size=None)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.ssim(imgs, imgs, size=None)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.pixcorr(imgs, imgs)) == pytest.approx(1.0, abs=1e-5)  # 425 x 425 resize


def test_ssim_equals_scikit_image_on_random_images():
    rng = np.random.default_rng(1)
    a = rng.random((3, 37, 45, 3))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)
    ours = float(metrics.ssim(b.astype(np.float32), a.astype(np.float32), size=None))
    ref = np.mean([
        structural_similarity(
            rgb2gray(r), rgb2gray(g), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0,
        )
        for r, g in zip(b, a)
    ])
    assert ours == pytest.approx(ref, abs=2e-6)
    assert 0.05 < ref < 0.95  # a non-trivial case


def test_ssim_x64_matches_to_1e10():
    rng = np.random.default_rng(2)
    a, b = rng.random((20, 23)), rng.random((20, 23))
    with jax.enable_x64(True):
        ours = float(metrics.ssim_gray(jnp.asarray(a), jnp.asarray(b)))
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert ours == pytest.approx(ref, abs=1e-10)


def test_pixcorr_equals_numpy_corrcoef_mean():
    a, b = _images(3), _images(4)
    ref = np.mean([np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)])
    assert float(metrics.pixcorr(a, b, size=None)) == pytest.approx(ref, abs=1e-6)


def test_pixcorr_counts_a_constant_image_as_zero_not_nan():
    a, b = _images(3), _images(4)
    flat = a.copy()
    flat[1] = 1.0  # a prediction clipped to all ones: its correlation is undefined
    per_pair = [0.0 if i == 1 else np.corrcoef(x.ravel(), y.ravel())[0, 1] for i, (x, y) in enumerate(zip(a, b))]
    assert float(metrics.pixcorr(flat, b, size=None)) == pytest.approx(np.mean(per_pair), abs=1e-6)
    assert np.isfinite(float(metrics.pixcorr(flat, b)))  # still constant after the 425 x 425 resize


def _reference_two_way(reals, preds):
    r = np.corrcoef(reals, preds)[: len(reals), len(reals):]
    return np.mean(np.sum(r < np.diag(r), 0)) / (len(reals) - 1)


def test_two_way_identification_matches_reference_and_chance():
    rng = np.random.default_rng(5)
    reals = rng.standard_normal((200, 64))
    noisy = reals + 1.5 * rng.standard_normal(reals.shape)
    assert float(metrics.two_way_identification(noisy, reals)) == pytest.approx(_reference_two_way(reals, noisy), abs=1e-6)
    assert float(metrics.two_way_identification(reals, reals)) == 1.0
    shuffled = reals[rng.permutation(200)]
    assert abs(float(metrics.two_way_identification(shuffled, reals)) - 0.5) < 0.03


def test_correlation_distance_matches_scipy():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((10, 30)), rng.standard_normal((10, 30))
    ref = np.mean([scipy.spatial.distance.correlation(x, y) for x, y in zip(a, b)])
    assert float(metrics.correlation_distance(b, a)) == pytest.approx(ref, abs=1e-6)
    assert float(metrics.correlation_distance(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_retrieval_perfect_chance_and_ci():
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((500, 32)).astype(np.float32)
    out = metrics.retrieval(emb, emb, jax.random.key(0))
    assert float(out["brain_to_image"]["mean"]) == 1.0 and float(out["image_to_brain"]["mean"]) == 1.0
    shuffled = emb[rng.permutation(500)]
    out = metrics.retrieval(shuffled, emb, jax.random.key(1), n_way=300, n_draws=30)
    for direction in ("brain_to_image", "image_to_brain"):
        d = out[direction]
        assert d["draws"].shape == (30,)
        assert float(d["mean"]) < 0.02  # chance 1/300, a few items may coincide by chance
        assert float(d["ci_low"]) <= float(d["mean"]) <= float(d["ci_high"])
        half = 1.959963984540054 * np.std(np.asarray(d["draws"])) / np.sqrt(30)
        assert float(d["ci_high"] - d["mean"]) == pytest.approx(half, abs=1e-6)


def test_retrieval_directions_differ_on_hubs():
    # one brain embedding equal to the mean of all images is a hub: it wins brain->image once but
    # steals the top spot for many images in image->brain.
    rng = np.random.default_rng(8)
    img = rng.standard_normal((300, 16))
    brain = img + 0.8 * rng.standard_normal(img.shape)
    brain[0] = 50 * img.mean(0)
    out = metrics.retrieval(brain, img, jax.random.key(0), n_way=300, n_draws=1)
    s = metrics.cosine_similarity_matrix(jnp.asarray(brain), jnp.asarray(img))
    fwd = np.mean(np.argmax(np.asarray(s), 1) == np.arange(300))
    bwd = np.mean(np.argmax(np.asarray(s), 0) == np.arange(300))
    assert float(out["brain_to_image"]["mean"]) == pytest.approx(fwd)
    assert float(out["image_to_brain"]["mean"]) == pytest.approx(bwd)


def test_topk_accuracy_hand_case():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    # row 0: (0, 0, .71) -> own score 0 ranks third; row 1: ties with column 0 -> pessimistic
    assert float(metrics.topk_accuracy(q, c, k=1)) == pytest.approx(1 / 3)
    assert float(metrics.topk_accuracy(q, c, k=2)) == pytest.approx(2 / 3)
    assert float(metrics.topk_accuracy(q, c, k=3)) == pytest.approx(1.0)


def test_noise_ceiling_recovers_planted_snr():
    rng = np.random.default_rng(9)
    n_img, n_rep, v = 2000, 3, 4
    true_snr = np.array([0.0, 0.3, 1.0, 3.0])
    signal = rng.standard_normal((n_img, 1, v)) * true_snr
    resp = signal + rng.standard_normal((n_img, n_rep, v))
    est = np.asarray(metrics.ncsnr(resp))
    np.testing.assert_allclose(est[1:], true_snr[1:], rtol=0.08)
    assert est[0] < 0.08
    nc3 = np.asarray(metrics.noise_ceiling(resp, n_average=3))
    np.testing.assert_allclose(nc3[1:], true_snr[1:] ** 2 / (true_snr[1:] ** 2 + 1 / 3), atol=0.03)


def test_feature_protocol_and_table():
    imgs = _images(10, n=6, size=24)
    assert isinstance(metrics.PixelFeatures(8), metrics.FeatureExtractor)
    table = metrics.reconstruction_metrics(imgs, imgs, [metrics.PixelFeatures(8)], [metrics.PixelFeatures(4)], size=None)
    assert table["2-way pixels"] == 1.0 and table["SSIM"] == pytest.approx(1.0, abs=1e-6)
    assert table["distance pixels"] == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(TypeError, match="FeatureExtractor"):
        metrics.reconstruction_metrics(imgs, imgs, [lambda x: x], size=None)


def test_bad_inputs_raise_clear_errors():
    imgs = _images(11)
    with pytest.raises(ValueError, match="recons"):
        metrics.pixcorr(imgs[..., 0], imgs)
    with pytest.raises(ValueError, match="rows"):
        metrics.two_way_identification(np.ones((3, 4)), np.ones((4, 4)))
    bad = imgs.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        metrics.ssim(bad, imgs, size=None)
    with pytest.raises(ValueError, match="n_way"):
        metrics.retrieval(np.ones((10, 3)), np.ones((10, 3)), jax.random.key(0))
    with pytest.raises(ValueError, match="repeats"):
        metrics.noise_ceiling(np.ones((10, 3)))
