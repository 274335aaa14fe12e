"""Cross-subject decoders: shapes, logical names, input errors, 8-device vs 1-device training,
checkpoint resume, and which parameters new-subject adaptation may touch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import core  # noqa: F401
from brain import decoding_experiment as de
from brain.losses import l2_normalize, soft_clip_loss
from brain.models import mindbridge
from brain.models.blocks import BottleneckAdapter
from core import mesh as mesh_lib
from core.train import TrainConfig

VOXELS = (24, 20, 16)
DIM = 8
CFG = de.DecodingConfig(
    simulator=de.SimulatorConfig.tiny(voxels=VOXELS),
    hidden=16, n_blocks=1, pooled=12, bottleneck=4, n_way=16,
    train=TrainConfig(steps=3, batch_size=16, log_every=1, progress=False, tensorboard=False),
)


def fake_datas(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return [de.SubjectData(s, rng.standard_normal((n, v)).astype(np.float32),
                           rng.standard_normal((n, DIM)).astype(np.float32),
                           rng.standard_normal((16, v)).astype(np.float32),
                           rng.standard_normal((16, DIM)).astype(np.float32))
            for s, v in enumerate(VOXELS)]


def build(kind):
    return de.make_model_fn(CFG, kind, VOXELS, DIM)()


@pytest.mark.parametrize("kind", de.MODEL_KINDS)
def test_shapes_and_logical_names_for_subjects_of_different_sizes(kind):
    model = build(kind)
    for s, v in enumerate(VOXELS):
        out = model(jnp.ones((5, v)), s)
        assert out.shape == (5, DIM) and bool(jnp.all(jnp.isfinite(out)))
    params = nnx.state(model, nnx.Param)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        names = leaf.get_metadata().get("out_sharding")
        assert names is not None and len(names) == leaf.get_value().ndim, path


@pytest.mark.parametrize("kind", de.MODEL_KINDS)
def test_clear_errors_for_wrong_voxel_count_and_unknown_subject(kind):
    model = build(kind)
    with pytest.raises(ValueError, match="subject 1 expects shape"):
        model(jnp.ones((2, VOXELS[0])), 1)
    with pytest.raises(ValueError, match="unknown subject"):
        model(jnp.ones((2, VOXELS[0])), 3)
    with pytest.raises(ValueError, match="unknown subject"):
        model(jnp.ones((2, VOXELS[0])), -1)


def test_fresh_bottleneck_adapter_is_identity():
    x = jax.random.normal(jax.random.key(0), (3, 10))
    np.testing.assert_array_equal(BottleneckAdapter(10, 4, "voxels", nnx.Rngs(0))(x), x)


def test_mindbridge_loss_terms_match_their_definitions():
    cfg = mindbridge.MindBridgeConfig(VOXELS, DIM, pooled=12, hidden=16, n_blocks=1, bottleneck=4,
                                      embedder_dropout=0.0, translator_dropout=0.0)
    model = mindbridge.MindBridge(cfg, nnx.Rngs(0))
    batch = next(iter(de.data_lib.batches(de.MultiSubjectSource(fake_datas()), 8)))
    loss, m = mindbridge.mindbridge_loss(model, batch, jax.random.key(1), (0, 1, 2), mse_mult=2.0, rec_mult=3.0,
                                         cyc_mult=0.0)
    clip = mse = rec = 0.0
    for s, v in enumerate(VOXELS):
        pooled = model.pool(jnp.asarray(batch["voxels"][:, s, :v]), s)
        e = model.embedders[s](pooled)
        pred, target = l2_normalize(model.decode(e)), l2_normalize(jnp.asarray(batch["target"][:, s]))
        clip += soft_clip_loss(pred, target) / 3
        mse += jnp.mean((pred - target) ** 2) / 3
        rec += jnp.mean((pooled - model.builders[s](e)) ** 2) / 3
    np.testing.assert_allclose(float(loss), float(clip + 2 * mse + 3 * rec), rtol=1e-5)
    # the default MSE weight keeps the reference's balance: 1e4 on 257 x 768 elements, per unit |p - t|^2
    default, _ = mindbridge.mindbridge_loss(model, batch, jax.random.key(1), (0, 1, 2), rec_mult=3.0, cyc_mult=0.0)
    np.testing.assert_allclose(float(default), float(clip + 1e4 * DIM / (257 * 768) * mse + 3 * rec), rtol=1e-5)
    assert mindbridge.reference_mse_mult(257 * 768) == 1e4
    # the cycle term: with two subjects the pair is (0, 1) or (1, 0)
    _, m = mindbridge.mindbridge_loss(model, batch, jax.random.key(2), (0, 1), cyc_mult=1.0)
    e = [model.embedders[s](model.pool(jnp.asarray(batch["voxels"][:, s, :v]), s)) for s, v in enumerate(VOXELS[:2])]
    options = [float(jnp.mean((e[a] - model.embedders[b](model.builders[b](e[a]))) ** 2)) for a, b in ((0, 1), (1, 0))]
    assert min(abs(float(m["cyc"]) - o) for o in options) < 1e-6 * max(options)


@pytest.mark.parametrize("kind", [
    "mindbridge", "adapters", "mindeye2",
    # the same MindEye2 networks side by side; slow on a shared 2-core machine
    pytest.param("per_subject", marks=pytest.mark.slow),
])
def test_training_on_8_devices_matches_one_device(kind):
    datas = fake_datas()
    cfg = dataclasses.replace(CFG, model=kind)
    histories = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=len(devices)), devices=devices)
        result = de.train_model(cfg, de.make_model_fn(cfg, kind, VOXELS, DIM), de.make_loss_fn(cfg, kind, (0, 1, 2)),
                                datas, mesh=mesh)
        histories.append([h["loss"] for h in result.history])
    assert len(histories[0]) == 3 and len(jax.devices()) == 8
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)


def test_checkpoint_resume_reproduces_uninterrupted_training(tmp_path):
    datas = fake_datas()
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=8))
    make = lambda steps, workdir="": dataclasses.replace(
        CFG, train=dataclasses.replace(CFG.train, steps=steps, workdir=workdir, checkpoint_every=2,
                                       async_checkpoint=False))
    def run(cfg):
        return de.train_model(cfg, de.make_model_fn(cfg, "mindbridge", VOXELS, DIM),
                              de.make_loss_fn(cfg, "mindbridge", (0, 1, 2)), datas, mesh=mesh)

    full = run(make(4))
    run(make(2, str(tmp_path)))
    resumed = run(make(4, str(tmp_path)))
    assert resumed.resumed_from == 2
    for a, b in zip(jax.tree.leaves(nnx.state(full.model)), jax.tree.leaves(nnx.state(resumed.model))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _leaves(model):
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("method,kind,shared_trained", [
    ("reset_tuning", "mindbridge", True),
    ("adapters_only", "adapters", False),
    ("new_linear_only", "mindeye2", False),
    ("full_finetune", "mindeye2", True),
])
def test_adaptation_touches_only_the_new_subject(method, kind, shared_trained):
    datas = fake_datas()
    cfg = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, seed=3))
    pretrained = de.train_model(cfg, de.make_model_fn(cfg, kind, VOXELS, DIM), de.make_loss_fn(cfg, kind, (0, 1)),
                                datas[:2])
    before = _leaves(pretrained.model)
    result, _ = de.adapt(cfg, method, datas[2], datas[:2], pretrained=pretrained.model)
    after = _leaves(result.model)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    front = de.FRONT_ENDS[kind]
    target = {k for k in before if k.startswith(tuple(f"['{n}'][2]" for n in front))}
    others = {k for k in before if k.startswith(tuple(f"['{n}'][{s}]" for n in front for s in (0, 1)))}
    shared = set(before) - target - others
    assert target and others and shared
    assert target <= changed  # re-initialised and trained
    assert not others & changed  # the source subjects' front ends are bitwise unchanged
    assert bool(shared & changed) == shared_trained
    if not shared_trained:
        assert changed == target


def test_adaptation_rejects_wrong_inputs():
    datas = fake_datas()
    with pytest.raises(TypeError, match="pretrained"):
        de.adapt(CFG, "reset_tuning", datas[2], datas[:2], pretrained=build("adapters"))
    with pytest.raises(ValueError, match="method"):
        de.adapt(CFG, "finetune_all", datas[2], datas[:2], pretrained=build("mindbridge"))
    with pytest.raises(ValueError, match="target subject"):
        de.adapt(CFG, "reset_tuning", datas[2], datas, pretrained=build("mindbridge"))


@pytest.mark.parametrize("voxels", [(), (100, 0)])
def test_model_configs_reject_bad_voxel_counts(voxels):
    from brain.models import adapters, mindeye2

    for config in (mindbridge.MindBridgeConfig, mindeye2.MindEye2Config, adapters.AdapterConfig):
        with pytest.raises(ValueError, match="one positive voxel count per subject"):
            config(voxels=voxels, out_dim=8)


@pytest.mark.parametrize("field, rate", [("embedder_dropout", 1.0), ("translator_dropout", -0.1)])
def test_mindbridge_config_rejects_bad_dropout(field, rate):
    with pytest.raises(ValueError, match=rf"{field}={rate}: expected a drop probability in \[0, 1\)"):
        mindbridge.MindBridgeConfig(voxels=(100, 120), out_dim=8, **{field: rate})
