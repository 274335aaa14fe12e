import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from core import checkpoint, data, mesh as mesh_lib
from core.classifier import ClassifierConfig, MLPClassifier, classification_loss
from core.train import TrainConfig, init_state, train
from geometry.checkpoint_analysis import analyse_run, spectral_metrics, write_results
from geometry.local_id import local_twonn

MODEL = ClassifierConfig(hidden=32, depth=2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=15, batch_size=32, log_every=5, checkpoint_every=3, keep_checkpoints=10,
                         workdir=str(workdir), progress=False)
    train(lambda: MLPClassifier(MODEL, nnx.Rngs(0)), classification_loss, optax.adam(3e-3),
          data.batches(data.digits("train"), 32), config, mesh_lib.make_mesh())
    return workdir / "checkpoints"


def test_analysis_equals_a_loop_and_compiles_once_per_chunk(run_dir, tmp_path):
    mesh = mesh_lib.make_mesh()
    graphdef, state, _ = init_state(mesh_lib.create_sharded(lambda: MLPClassifier(MODEL, nnx.Rngs(0)), mesh),
                                    optax.adam(3e-3), mesh)
    target = checkpoint.abstract_like(state)
    images = jnp.asarray(data.digits("test").arrays["image"][:200])

    @chex.assert_max_traces(n=1)
    def features(model):
        return model.features(images)

    results = analyse_run(run_dir, graphdef, target, features, chunk=5, n_neighbors=20, fit_ranks=(2, 20))
    assert list(results["step"]) == [3, 6, 9, 12, 15]

    with checkpoint.Checkpointer(run_dir) as ckpt:
        for i, step in enumerate(results["step"]):
            _, s = ckpt.restore(target, step=int(step))
            reps = nnx.merge(graphdef, s["params"], s["rest"]).features(images)
            expected = spectral_metrics(reps, (2, 20))
            for name, value in expected.items():
                np.testing.assert_allclose(results[name][i], float(value), rtol=2e-4, err_msg=name)
            local = np.asarray(local_twonn(reps, n_neighbors=20))
            np.testing.assert_allclose(results["local_id_mean"][i], np.nanmean(local), rtol=1e-4)
    assert len(set(np.round(results["rankme"], 6))) == 5  # each row comes from its own checkpoint
    md = write_results(results, tmp_path, "geometry_demo", "test")
    assert (tmp_path / "geometry_demo.png").exists() and "| 15 |" in md.read_text()


def test_analysis_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analyse_run(tmp_path / "missing", None, None, lambda m: m)
