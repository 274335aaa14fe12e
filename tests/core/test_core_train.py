import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from core import checkpoint, data, mesh as mesh_lib
from core.classifier import ClassifierConfig, MLPClassifier, classification_loss
from core.train import TrainConfig, train

MODEL = ClassifierConfig(hidden=32, depth=2)


def _run(mesh, steps=8, **overrides):
    config = TrainConfig(steps=steps, batch_size=32, log_every=1, progress=False, **overrides)
    iterator = data.batches(data.digits("train"), 32, seed=0)
    return train(
        lambda: MLPClassifier(MODEL, nnx.Rngs(0)), classification_loss, optax.adam(1e-2), iterator, config, mesh
    )


def _losses(result):
    return np.array([h["loss"] for h in result.history])


def test_sharding_changes_layout_not_math():
    one = _run(mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1), devices=jax.devices()[:1]))
    data8 = _run(mesh_lib.make_mesh(mesh_lib.MeshConfig(data=8)))
    mixed = _run(mesh_lib.make_mesh(mesh_lib.MeshConfig(data=2, fsdp=2, tensor=2)))
    assert _losses(one)[-1] < _losses(one)[0]
    np.testing.assert_allclose(_losses(data8), _losses(one), rtol=1e-5)
    np.testing.assert_allclose(_losses(mixed), _losses(one), rtol=1e-5)
    w = mixed.model.layers[0].w.get_value()
    assert w.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_gradient_accumulation_equals_full_batch_and_bf16_is_close():
    mesh = mesh_lib.make_mesh()
    full = _run(mesh)
    accumulated = _run(mesh, grad_accum=4)
    np.testing.assert_allclose(_losses(accumulated), _losses(full), rtol=1e-5)
    bf16 = _run(mesh, compute_dtype="bfloat16")
    np.testing.assert_allclose(_losses(bf16), _losses(full), rtol=5e-2)
    assert not np.array_equal(_losses(bf16), _losses(full))
    assert full.state["params"]["layers"][0]["w"].get_value().dtype == jnp.float32
    with pytest.raises(ValueError, match=r"batch_size / grad_accum=4: expected a positive multiple of the data-parallel size 8"):
        _run(mesh, grad_accum=8)


def test_same_seed_same_numbers_and_in_process_resume(tmp_path):
    mesh = mesh_lib.make_mesh()
    straight = _run(mesh, steps=10)
    again = _run(mesh, steps=10)
    np.testing.assert_array_equal(_losses(straight), _losses(again))
    first = _run(mesh, steps=4, workdir=str(tmp_path), checkpoint_every=2)
    assert first.resumed_from is None
    resumed = _run(mesh, steps=10, workdir=str(tmp_path), checkpoint_every=2)
    assert resumed.resumed_from == 4
    np.testing.assert_array_equal(_losses(resumed), _losses(straight)[4:])
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 11))
    assert list((tmp_path / "tensorboard").iterdir())
    assert checkpoint.list_steps(tmp_path / "checkpoints")[-1] == 10


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    digits = data.digits("train")
    images = digits.arrays["image"].copy()
    images[96:128] = np.nan  # the fourth batch (step index 3) of the unshuffled stream
    source = data.ArraySource({"image": images, "label": digits.arrays["label"]})
    iterator = data.batches(source, 32, shuffle=False)
    config = TrainConfig(steps=8, batch_size=32, log_every=4, progress=False, workdir=str(tmp_path),
                         checkpoint_every=1, keep_checkpoints=10)
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient at step 3;"):
        train(lambda: MLPClassifier(MODEL, nnx.Rngs(0)), classification_loss, optax.adam(1e-3),
              iterator, config, mesh_lib.make_mesh())
    # Nothing computed from the bad step was saved.
    assert checkpoint.list_steps(tmp_path / "checkpoints") == [1, 2, 3]


def test_bad_settings_are_clear_errors():
    mesh = mesh_lib.make_mesh()
    with pytest.raises(ValueError, match=r"batch_size=12: expected a positive multiple of the data-parallel size 8"):
        train(lambda: MLPClassifier(MODEL, nnx.Rngs(0)), classification_loss, optax.adam(1e-3),
              iter([]), TrainConfig(batch_size=12), mesh)
    with pytest.raises(ValueError, match="grad_accum=3"):
        train(lambda: MLPClassifier(MODEL, nnx.Rngs(0)), classification_loss, optax.adam(1e-3),
              iter([]), TrainConfig(batch_size=16, grad_accum=3), mesh)


class _Counted(nnx.Variable):
    pass


class _CountingClassifier(MLPClassifier):
    def __init__(self, config, rngs):
        super().__init__(config, rngs)
        self.seen = _Counted(jnp.zeros((), jnp.float32))


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_non_parameter_state_written_in_the_loss_persists(grad_accum):
    def counting_loss(model, batch, key):
        model.seen[...] = model.seen[...] + batch["label"].shape[0]
        return classification_loss(model, batch, key)

    config = TrainConfig(steps=5, batch_size=32, grad_accum=grad_accum, log_every=5, progress=False)
    result = train(lambda: _CountingClassifier(MODEL, nnx.Rngs(0)), counting_loss, optax.adam(1e-3),
                   data.batches(data.digits("train"), 32), config, mesh_lib.make_mesh())
    assert float(result.model.seen[...]) == 5 * 32


def test_masked_optimizer_states_are_sharded_like_their_parameters():
    def labels(params):
        return jax.tree.map(lambda x: "matrix" if x.ndim > 1 else "vector", params)

    optimizer = optax.multi_transform({"matrix": optax.adam(1e-3), "vector": optax.set_to_zero()}, labels)
    config = TrainConfig(steps=2, batch_size=32, log_every=1, progress=False)
    result = train(lambda: MLPClassifier(MODEL, nnx.Rngs(0)), classification_loss, optimizer,
                   data.batches(data.digits("train"), 32), config, mesh_lib.make_mesh(mesh_lib.MeshConfig(fsdp=2, tensor=2)))
    mu = result.state["opt"].inner_states["matrix"].inner_state[0].mu
    assert mu["layers"][0]["w"].get_value().sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert float(result.model.head.b[...].sum()) == 0.0  # set_to_zero leaves the vectors alone
