import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from core import mesh as mesh_lib
from core.classifier import ClassifierConfig, MLPClassifier
from core.plan import PlanArgs, plan_experiment, plan_memory


def test_make_mesh_fills_and_validates():
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(fsdp=2, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert dict(mesh_lib.make_mesh().shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    one = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1), devices=jax.devices()[:1])
    assert one.size == 1
    with pytest.raises(ValueError, match=r"fixed axes multiply to 3.*8 available devices"):
        mesh_lib.make_mesh(mesh_lib.MeshConfig(fsdp=3))
    with pytest.raises(ValueError, match=r"multiplies to 4 devices, expected exactly 8"):
        mesh_lib.make_mesh(mesh_lib.MeshConfig(data=2, fsdp=2, tensor=1))
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        mesh_lib.make_mesh(mesh_lib.MeshConfig(data=-1, fsdp=-1))


def test_hybrid_mesh_groups_slices():
    # One process is one granule here, so only a single "slice" exists: dcn > 1 must fail clearly.
    with pytest.raises(ValueError, match=r"asks for 2 slices, but the devices form 1 processes"):
        mesh_lib.make_mesh(mesh_lib.MeshConfig(data=-1, dcn_data=2))
    # A single granule with dcn 1 on every axis is a plain mesh.
    assert mesh_lib.make_mesh(mesh_lib.MeshConfig(dcn_data=1)).size == 8


def test_logical_rules_replicate_what_does_not_divide():
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=2, fsdp=2, tensor=2))
    assert mesh_lib.logical_to_spec(("embed", "mlp"), (8, 6), mesh) == P("fsdp", "tensor")
    assert mesh_lib.logical_to_spec(("embed", "mlp"), (7, 6), mesh) == P(None, "tensor")
    assert mesh_lib.logical_to_spec(("mlp", "embed"), (6, 7), mesh) == P("tensor")
    assert mesh_lib.logical_to_spec(("batch", "embed"), (8, 8), mesh) == P(("data", "fsdp"))
    with pytest.raises(ValueError, match="logical axis 'nonsense' has no rule"):
        mesh_lib.logical_to_spec(("nonsense",))


def test_create_sharded_places_parameters():
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=2, fsdp=2, tensor=2))
    model = mesh_lib.create_sharded(lambda: MLPClassifier(ClassifierConfig(), nnx.Rngs(0)), mesh)
    w = model.layers[0].w.get_value()
    assert w.sharding.spec == P("fsdp", "tensor")
    assert w.addressable_shards[0].data.shape == (32, 64)
    reference = MLPClassifier(ClassifierConfig(), nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(w), np.asarray(reference.layers[0].w.get_value()))


def test_global_batch_and_divisibility():
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=4, fsdp=2))
    batch = mesh_lib.global_batch(mesh, {"x": np.arange(16.0).reshape(16, 1)})
    assert batch["x"].sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(batch["x"]).ravel(), np.arange(16.0))
    with pytest.raises(ValueError, match=r"batch_size=12: expected a positive multiple of the data-parallel size 8"):
        mesh_lib.check_batch(mesh, 12)
    with pytest.raises(ValueError, match="global batch"):
        mesh_lib.global_batch(mesh, {"x": np.zeros((6, 2))})


def test_initialize_distributed_requires_complete_environment(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        mesh_lib.initialize_distributed()


def test_plan_counts_bytes_per_device_without_allocating():
    config = ClassifierConfig(in_features=64, hidden=512, depth=2, num_classes=10)
    model_fn = lambda: MLPClassifier(config, nnx.Rngs(0))  # noqa: E731
    single = plan_memory(model_fn, optax.adam(1e-3), mesh_lib.MeshConfig(), devices=1)
    n_params = 64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert single.parameters == n_params
    assert single.param_bytes_per_device == 4 * n_params
    assert single.optimizer_bytes_per_device == 2 * 4 * n_params + 4  # mu, nu + int32 count
    # 1024 devices, fsdp 16 x tensor 4: each weight matrix splits 64 ways; biases over tensor or fsdp.
    big = plan_memory(model_fn, optax.adam(1e-3), mesh_lib.MeshConfig(fsdp=16, tensor=4), devices=1024)
    expected = 4 * (64 * 512 // 64 + 512 // 4 + 512 * 512 // 64 + 512 // 16 + 512 * 10 // 16 + 10)
    assert big.mesh_shape == {"data": 16, "fsdp": 16, "tensor": 4}
    assert big.param_bytes_per_device == expected
    assert "fits" in big.report(device_memory_gib=16)
    report = plan_experiment(PlanArgs(preset="full", devices=256, mesh=mesh_lib.MeshConfig(fsdp=16)))
    assert report.devices == 256
    with pytest.raises(ValueError, match="preset='nope'"):
        plan_experiment(PlanArgs(preset="nope"))


def test_create_sharded_inside_a_mesh_context_is_a_clear_error():
    mesh = mesh_lib.make_mesh()
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="outside"):
        mesh_lib.create_sharded(lambda: MLPClassifier(ClassifierConfig(), nnx.Rngs(0)), mesh)
