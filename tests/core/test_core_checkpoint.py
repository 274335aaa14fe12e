import logging
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from core import checkpoint, mesh as mesh_lib
from core.classifier import ClassifierConfig, MLPClassifier
from core.train import init_state

CONFIG = ClassifierConfig(hidden=32, depth=2)


def _state(mesh, seed=0):
    model = mesh_lib.create_sharded(lambda: MLPClassifier(CONFIG, nnx.Rngs(seed)), mesh)
    return init_state(model, optax.adam(1e-3), mesh)


def _save_steps(directory, states):
    with checkpoint.Checkpointer(directory, keep=len(states)) as ckpt:
        for step, state in states.items():
            ckpt.save(step, state, config={"step": step})


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_onto_another_mesh_and_one_device(tmp_path):
    mesh_a = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=2, fsdp=2, tensor=2))
    _, state, _ = _state(mesh_a)
    _save_steps(tmp_path, {3: state})

    mesh_b = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1, fsdp=4, tensor=2))
    _, target_state, _ = _state(mesh_b, seed=1)
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        step, restored = ckpt.restore(checkpoint.abstract_like(target_state))
        assert step == 3 and ckpt.config(3) == {"step": 3}
        w = restored["params"]["layers"][0]["w"].get_value()
        assert w.sharding.spec == P("fsdp", "tensor") and dict(w.sharding.mesh.shape)["fsdp"] == 4
        _assert_equal(restored, state)

        one = SingleDeviceSharding(jax.devices()[0])
        _, single = ckpt.restore(checkpoint.abstract_like(state, one))
        assert single["params"]["layers"][0]["w"].get_value().sharding == one
        _assert_equal(single, state)


def test_corrupt_latest_checkpoint_falls_back_with_message(tmp_path, caplog):
    mesh = mesh_lib.make_mesh()
    _, state5, _ = _state(mesh, seed=5)
    _, state10, _ = _state(mesh, seed=10)
    _save_steps(tmp_path, {5: state5, 10: state10})
    truncated = 0
    for root, _, files in os.walk(tmp_path / "10" / "state"):
        for name in files:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(size // 2)
            truncated += 1
    assert truncated
    # A half-written save (orbax's temporary directory of an unfinished step) is never listed.
    (tmp_path / "15.orbax-checkpoint-tmp-1234").mkdir()
    with caplog.at_level(logging.WARNING, logger="core.checkpoint"):
        with checkpoint.Checkpointer(tmp_path) as ckpt:
            step, restored = ckpt.restore(checkpoint.abstract_like(state5))
    assert step == 5
    _assert_equal(restored, state5)
    assert any(str(tmp_path / "10") in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)


def test_missing_directory_and_step_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint directory '.*nowhere' does not exist"):
        checkpoint.load_stack(tmp_path / "nowhere", [1], {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.list_steps(tmp_path / "nowhere")
    mesh = mesh_lib.make_mesh()
    _, state, _ = _state(mesh)
    _save_steps(tmp_path, {1: state})
    with pytest.raises(checkpoint.CheckpointError, match=r"steps \[2\] not in"):
        checkpoint.load_stack(tmp_path, [1, 2], checkpoint.abstract_like(state))
    with checkpoint.Checkpointer(tmp_path / "empty") as ckpt:
        with pytest.raises(checkpoint.CheckpointError, match="no checkpoint found"):
            ckpt.restore(checkpoint.abstract_like(state))


def test_load_stack_vmap_equals_loop_and_compiles_once(tmp_path):
    mesh = mesh_lib.make_mesh()
    graphdef, _, _ = _state(mesh)
    states = {s: _state(mesh, seed=s)[1] for s in range(1, 6)}
    _save_steps(tmp_path, states)
    target = checkpoint.abstract_like(states[1])
    x = jax.random.normal(jax.random.key(0), (16, 8, 8))

    @chex.assert_max_traces(n=1)
    def logits_sum(state):
        model = nnx.merge(graphdef, state["params"], state["rest"])
        return jnp.sum(model(x) ** 2) + optax.global_norm(state["params"])

    batched = jax.jit(jax.vmap(logits_sum))
    replicated = checkpoint.stack_sharding(mesh, None)
    stack = checkpoint.load_stack(tmp_path, [1, 2, 3, 4], target, sharding=replicated)
    assert jax.tree.leaves(stack)[0].shape[0] == 4
    loop = np.array([float(jax.jit(logits_sum.__wrapped__)(states[s])) for s in [1, 2, 3, 4]])
    np.testing.assert_allclose(np.asarray(batched(stack)), loop, rtol=1e-5)

    chex.clear_trace_counter()  # the chunks have a new leading size (2): one more compile
    chunked, seen = [], []
    for steps, chunk in checkpoint.iter_stacks(tmp_path, [1, 2, 3, 4, 5], target, chunk=2, sharding=replicated):
        chunked.extend(np.asarray(batched(chunk))[: len(steps)])
        seen.extend(steps)
    assert seen == [1, 2, 3, 4, 5]
    expected = np.concatenate([loop, [float(jax.jit(logits_sum.__wrapped__)(states[5]))]])
    np.testing.assert_allclose(chunked, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="chunk=0"):
        next(checkpoint.iter_stacks(tmp_path, [1], target, chunk=0))


def test_stack_can_be_sharded_over_data(tmp_path):
    mesh = mesh_lib.make_mesh()
    states = {s: _state(mesh, seed=s)[1] for s in range(8)}
    _save_steps(tmp_path, states)
    stack = checkpoint.load_stack(tmp_path, list(range(8)), checkpoint.abstract_like(states[0]),
                                  sharding=NamedSharding(mesh, P("data")))
    leaf = stack["params"]["head"]["w"].get_value()
    assert leaf.sharding.spec == P("data") and leaf.addressable_shards[0].data.shape[0] == 1
    np.testing.assert_array_equal(np.asarray(leaf[3]), np.asarray(states[3]["params"]["head"]["w"].get_value()))
