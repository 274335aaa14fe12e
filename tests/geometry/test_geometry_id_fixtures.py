"""Agreement with the reference values shipped in scikit-dimension 0.5.0
(``skdim/tests/reference/fixtures.json``: R intrinsicDimension / ider, DADApy, the original
MATLAB TLE/MOM code) to rtol 1e-6 in float64, on skdim's own deterministic data sets."""


import jax.numpy as jnp
import numpy as np
import pytest

skdim = pytest.importorskip("skdim")

from geometry import intrinsic_dim as gid  # noqa: E402
from geometry import skdim_reference  # noqa: E402
from geometry.knn import knn  # noqa: E402

FX, ID, DUP = skdim_reference.load()
RTOL = 1e-6


def test_fixture_anchor_values_from_the_notes(x64):
    """The headline numbers: MLE k=20 on ball5_in10, CorrInt(10, 20), lPCA FO."""
    x = ID["ball5_in10"]
    assert float(gid.mle(x, 20)) == pytest.approx(4.43582345694338, rel=RTOL)
    assert float(gid.corr_int(x, 10, 20)) == pytest.approx(4.35505695940733, rel=RTOL)
    assert int(gid.lpca(x, "FO")) == 5


@pytest.mark.parametrize("name", sorted(ID))
def test_intrinsic_dimension_package(x64, name):
    x, ref = ID[name], FX["intrinsicDimension"][name]
    assert int(gid.lpca(x, "FO")) == ref["pca_FO"]
    assert int(gid.lpca(x, "Fan")) == ref["pca_fan"]
    assert int(gid.lpca(x, "maxgap")) == ref["pca_maxgap"]
    assert float(gid.mle(x, 20)) == pytest.approx(ref["mle_k20"], rel=RTOL)
    assert float(gid.mle(x, 20, unbiased=True)) == pytest.approx(ref["mle_k20_unbiased"], rel=RTOL)
    assert float(gid.mle(x, 5)) == pytest.approx(ref["mle_k5"], rel=RTOL)
    assert float(gid.mle(x, 20, comb="mean")) == pytest.approx(ref["mle_k20_mean"], rel=RTOL)
    assert float(gid.mle_global(x, 20, 10)) == pytest.approx(ref["mle_k20_K10_global"], rel=RTOL)
    # R's labels are swapped relative to Rozza et al.; skdim's MLk is R's MIND_MLi (fractional)
    assert float(gid.mind_ml(x, 20, 10, ver="MLk")) == pytest.approx(ref["mind_mli_k20_D10"], rel=RTOL)
    assert int(gid.mind_ml(x, 20, 10, ver="MLi")) == ref["mind_mlk_k20_D10"]


@pytest.mark.parametrize("name", sorted(ID))
def test_ider_package(x64, name):
    x, ref = ID[name], FX["ider"][name]
    assert float(gid.corr_int(x, 10, 20)) == pytest.approx(ref["corint_k10_k20"], rel=RTOL)
    dist, _ = knn(x, 20, exclude_duplicates=True)
    np.testing.assert_allclose(gid.mada_pointwise(dist), ref["mada_local_k20"], rtol=RTOL)


@pytest.mark.parametrize("name", sorted(ID) + sorted(DUP))
def test_matlab_tle_mom(x64, name):
    x, ref = {**ID, **DUP}[name], FX["matlab"][name]
    dist, idx = knn(x, ref["n_neighbors"])
    np.testing.assert_allclose(gid.tle_pointwise(jnp.asarray(x), dist, idx), ref["tle_pw"], rtol=RTOL)
    np.testing.assert_allclose(gid.mom_pointwise(dist), ref["mom_pw"], rtol=RTOL)


@pytest.mark.parametrize("name", sorted(ID))
def test_dadapy(x64, name):
    x, ref = ID[name], FX["dadapy"][name]
    assert float(gid.twonn(x, discard_fraction=0.1)) == pytest.approx(ref["twonn_base_mu0.9"], rel=RTOL)
    assert float(gid.twonn(x, method="mle", discard_fraction=0.0)) == pytest.approx(ref["twonn_ml"], rel=RTOL)
    _, dims, errs, _ = gid.gride_multiscale(x, 64)
    np.testing.assert_allclose(dims, ref["gride_range64_ids"], rtol=RTOL)
    np.testing.assert_allclose(errs, ref["gride_range64_errs"], rtol=RTOL)


def test_twonn_on_hyperball_known_value(x64):
    x = skdim.datasets.hyperBall(500, 5, random_state=0)
    assert float(gid.twonn(x)) == pytest.approx(4.159093274086606, rel=RTOL)
