"""Closed-form ridge against scikit-learn's Ridge / RidgeCV (x64), primal, dual and SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold

import core
import core.mesh
from brain.ridge import fit_ridge, fit_ridge_cv, kfold_slices


def _data(n, p, t, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) + 0.3
    w = rng.standard_normal((p, t))
    y = x @ w + 2.0 + noise * rng.standard_normal((n, t))
    return x, y


@pytest.mark.parametrize("solver,n,p", [("primal", 60, 12), ("dual", 15, 40), ("svd", 30, 30)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_fit_matches_sklearn(solver, n, p, fit_intercept):
    x, y = _data(n, p, 3)
    ref = Ridge(alpha=2.5, fit_intercept=fit_intercept).fit(x, y)
    with jax.enable_x64(True):
        model = fit_ridge(jnp.asarray(x), jnp.asarray(y), 2.5, fit_intercept=fit_intercept, solver=solver)
        np.testing.assert_allclose(np.asarray(model.coef).T, ref.coef_, atol=1e-5)
        np.testing.assert_allclose(np.asarray(model.intercept), np.broadcast_to(ref.intercept_, (3,)), atol=1e-5)
        np.testing.assert_allclose(np.asarray(model.predict(jnp.asarray(x))), ref.predict(x), atol=1e-5)


def test_per_target_alpha_matches_sklearn():
    x, y = _data(25, 40, 4, seed=1)
    alphas = np.array([0.1, 1.0, 10.0, 100.0])
    ref = Ridge(alpha=alphas).fit(x, y)
    with jax.enable_x64(True):
        model = fit_ridge(jnp.asarray(x), jnp.asarray(y), jnp.asarray(alphas))
        np.testing.assert_allclose(np.asarray(model.coef).T, ref.coef_, atol=1e-5)
        np.testing.assert_allclose(np.asarray(model.intercept), ref.intercept_, atol=1e-5)


def test_float32_primal_and_dual_agree():
    x, y = _data(50, 20, 2, seed=2)
    a = fit_ridge(x.astype(np.float32), y.astype(np.float32), 3.0, solver="primal")
    b = fit_ridge(x.astype(np.float32), y.astype(np.float32), 3.0, solver="dual")
    np.testing.assert_allclose(np.asarray(a.coef), np.asarray(b.coef), atol=1e-4)


def test_kfold_slices_match_sklearn():
    for n, k in [(10, 3), (17, 5), (6, 6)]:
        ours = [np.arange(n)[s] for s in kfold_slices(n, k)]
        ref = [val for _, val in KFold(k).split(np.zeros(n))]
        assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_shared_cv_matches_ridgecv(fit_intercept):
    x, y = _data(47, 30, 5, seed=3, noise=3.0)
    grid = [0.01, 0.3, 3.0, 30.0, 300.0, 3000.0]
    ref = RidgeCV(alphas=grid, cv=KFold(5), fit_intercept=fit_intercept).fit(x, y)
    with jax.enable_x64(True):
        res = fit_ridge_cv(jnp.asarray(x), jnp.asarray(y), grid, n_folds=5, per_target=False, fit_intercept=fit_intercept)
        assert float(res.alpha[0]) == ref.alpha_
        assert float(res.scores.mean(1).max()) == pytest.approx(ref.best_score_, abs=1e-8)
        np.testing.assert_allclose(np.asarray(res.model.coef).T, ref.coef_, atol=1e-5)
        np.testing.assert_allclose(np.asarray(res.model.intercept), ref.intercept_, atol=1e-5)


def test_per_target_cv_matches_ridgecv_per_column():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 25))
    # column 0: strong signal (small alpha wins); column 1: pure noise (large alpha wins)
    y = np.stack([x @ rng.standard_normal(25), 5 * rng.standard_normal(60), x[:, 0] + rng.standard_normal(60)], 1)
    grid = [0.01, 1.0, 100.0, 1e4]
    with jax.enable_x64(True):
        res = fit_ridge_cv(jnp.asarray(x), jnp.asarray(y), grid, n_folds=4, per_target=True)
        for t in range(3):
            ref = RidgeCV(alphas=grid, cv=KFold(4)).fit(x, y[:, t])
            assert float(res.alpha[t]) == ref.alpha_
            np.testing.assert_allclose(np.asarray(res.model.coef[:, t]), ref.coef_, atol=1e-5)
    assert float(res.alpha[0]) < float(res.alpha[1])


def test_sharded_targets_equal_unsharded():
    x, y = _data(40, 16, 13, seed=5)  # 13 targets: padded to the mesh axis
    mesh = core.mesh.make_mesh(core.mesh.MeshConfig(data=1, fsdp=1, tensor=8))
    ref = fit_ridge(x, y, 1.5)
    sharded = fit_ridge(x, y, 1.5, mesh=mesh, target_axis="tensor")
    np.testing.assert_allclose(np.asarray(sharded.coef), np.asarray(ref.coef), atol=1e-4)
    cv_ref = fit_ridge_cv(x, y, [0.1, 10.0], n_folds=3)
    cv_sh = fit_ridge_cv(x, y, [0.1, 10.0], n_folds=3, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(cv_ref.alpha), np.asarray(cv_sh.alpha))
    np.testing.assert_allclose(np.asarray(cv_sh.model.coef), np.asarray(cv_ref.model.coef), atol=1e-4)


def test_bad_inputs():
    x, y = _data(10, 3, 2)
    with pytest.raises(ValueError, match="rows"):
        fit_ridge(x, y[:5])
    with pytest.raises(ValueError, match="alpha"):
        fit_ridge(x, y, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        fit_ridge(x, y, np.ones(3))
    with pytest.raises(ValueError, match="shared alpha"):
        fit_ridge(x, y, np.array([1.0, 2.0]), solver="primal")
    with pytest.raises(ValueError, match="n_folds"):
        fit_ridge_cv(x, y, [1.0], n_folds=11)
    with pytest.raises(ValueError, match="finite"):
        fit_ridge(np.full((10, 3), np.nan), y)
    model = fit_ridge(x, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(np.ones((2, 4)))
