"""P33 DSE / DSMI: known answers and parity with the official dse-dsmi package."""

import jax
import numpy as np
import pytest

from geometry import dse

official = pytest.importorskip("dse_dsmi")


def _blobs(k=4, per=60, d=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per)
    return rng.normal(size=(k, d))[labels] * 100 + rng.normal(size=(k * per, d)) * 0.05, labels


@pytest.mark.parametrize("sigma, t", [(10.0, 1), (3.0, 2), (1.0, 1)])
def test_dse_matches_official(x64, sigma, t):
    x = np.random.default_rng(0).normal(size=(300, 20))
    ref = official.diffusion_spectral_entropy(x, gaussian_kernel_sigma=sigma, t=t)
    assert float(dse.dse(x, sigma, t)) == pytest.approx(ref, rel=1e-9)


def test_dse_small_sigma_gives_log2_n():
    x = np.random.default_rng(1).normal(size=(200, 8))
    assert float(dse.dse(x, 1e-3)) == pytest.approx(np.log2(200), rel=1e-5)


def test_dse_large_sigma_goes_to_zero():
    x = np.random.default_rng(2).normal(size=(200, 8))
    assert float(dse.dse(x, 1e4, t=2)) < 0.05


def test_dse_separated_blobs_give_log2_k(x64):
    x, _ = _blobs(k=4)
    assert float(dse.dse(x, 1.0, t=10)) == pytest.approx(2.0, abs=1e-6)


def test_dsmi_true_and_shuffled_labels(x64):
    x, labels = _blobs(k=4)
    assert dse.dsmi(x, labels, 1.0, 10)[0] == pytest.approx(2.0, abs=1e-6)
    shuffled = np.random.default_rng(0).permutation(labels)
    assert abs(dse.dsmi(x, shuffled, 1.0, 10)[0]) < 0.05


@pytest.mark.parametrize("reference", ["labels", "scalar", "vector"])
def test_dsmi_matches_official_with_its_sampler(x64, reference):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(240, 12))
    ref_var = {
        "labels": rng.integers(0, 3, 240)[:, None],
        "scalar": x[:, :1] + 0.1 * rng.normal(size=(240, 1)),
        "vector": x[:, :3] + 0.1 * rng.normal(size=(240, 3)),
    }[reference]
    want, want_labels = official.diffusion_spectral_mutual_information(x, ref_var, gaussian_kernel_sigma=4.0)
    got, got_labels = dse.dsmi(x, ref_var, 4.0, sampler="official")
    np.testing.assert_array_equal(np.ravel(got_labels), np.ravel(want_labels))
    assert got == pytest.approx(want, rel=1e-8, abs=1e-10)


def test_dse_subsamples_above_max_n():
    x = np.random.default_rng(4).normal(size=(300, 5))
    assert float(dse.dse(x, 1e-3, max_n=100)) == pytest.approx(np.log2(100), rel=1e-5)


def test_dse_kernel_vmaps():
    xs = jax.random.normal(jax.random.key(0), (3, 50, 4))
    values = jax.vmap(lambda x: dse.dse_from_eigenvalues(dse.diffusion_eigenvalues(x, 1e-3)))(xs)
    np.testing.assert_allclose(values, np.log2(50), rtol=1e-5)


def test_dse_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        dse.dse(np.zeros(10))
    with pytest.raises(ValueError, match="sigma"):
        dse.dse(np.zeros((10, 2)), sigma=0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        dse.dse(np.full((10, 2), np.inf))
    with pytest.raises(ValueError, match="same N"):
        dse.dsmi(np.zeros((10, 2)), np.arange(9))
