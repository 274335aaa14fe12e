"""The benchmark-manifold generator: shapes, determinism, and skdim's definitions."""

import numpy as np
import pytest

from geometry import manifolds


@pytest.mark.parametrize("name", sorted(manifolds.SUITE))
def test_shapes_and_determinism(name):
    d, dim, _ = manifolds.SUITE[name]
    x = manifolds.generate(name, 200, seed=3)
    assert x.shape == (200, dim)
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_array_equal(x, manifolds.generate(name, 200, seed=3))
    assert not np.array_equal(np.asarray(x), np.asarray(manifolds.generate(name, 200, seed=4)))


def test_planted_geometry():
    sphere = np.asarray(manifolds.generate("M1_Sphere", 500))
    np.testing.assert_allclose(np.linalg.norm(sphere, axis=1), 1.0, rtol=1e-5)
    assert np.all(sphere[:, 11:] == 0)
    cube = np.asarray(manifolds.generate("M10a_Cubic", 500))
    on_face = np.any((cube[:, :11] == 0) | (cube[:, :11] == 1), axis=1)
    assert on_face.all()
    affine = np.asarray(manifolds.generate("M9_Affine", 500))
    assert np.linalg.matrix_rank(affine - affine.mean(0)) == 20
    para = np.asarray(manifolds.generate("Mp1_Paraboloid", 300))
    np.testing.assert_allclose(para[:, 3], (para[:, :3] ** 2).sum(1), rtol=1e-5)


def test_mle_recovers_low_intrinsic_dimensions(x64):
    from geometry.intrinsic_dim import mle

    for name in ("M2_Affine_3to5", "M5a_Helix1d", "M7_Roll", "M11_Moebius", "M3_Nonlinear_4to6"):
        d = manifolds.SUITE[name][0]
        assert float(mle(manifolds.generate(name, 2000))) == pytest.approx(d, rel=0.15), name


def test_noise_and_errors():
    clean = manifolds.generate("M7_Roll", 100, seed=0)
    noisy = manifolds.generate("M7_Roll", 100, seed=0, noise=0.1)
    assert 0 < float(np.abs(np.asarray(noisy) - np.asarray(clean)).max()) <= 0.05 + 1e-6
    with pytest.raises(ValueError, match="name"):
        manifolds.generate("M99", 10)
    with pytest.raises(ValueError, match="n="):
        manifolds.generate("M7_Roll", 0)
