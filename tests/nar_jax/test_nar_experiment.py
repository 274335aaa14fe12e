"""The NAR experiment: CLI end to end (train, sample PNG, evaluate), resume, LlamaGen codes,
the paper preset through core.plan, config validation."""

import dataclasses
import json
import shutil

import matplotlib.image
import numpy as np
import pytest

from core import plan as plan_lib
from core.train import TrainConfig
from nar_jax import __main__ as cli
from nar_jax import data as data_lib
from nar_jax import experiment, model, order

MICRO_TOKENIZER = {"channels": (8, 16), "codebook_size": 32, "code_dim": 4, "norm_groups": 4}
# digits at 8x8 px -> 4x4 tokens, one device (sharded training is tested in test_nar_train.py).
FLAGS = ["--data.image-size", "8", "--tokenizer.channels", "8", "16", "--tokenizer.codebook-size",
         "32", "--tokenizer.code-dim", "4", "--tokenizer.norm-groups", "4",
         "--tokenizer-train.steps", "3", "--tokenizer-train.batch-size", "16",
         "--tokenizer-train.no-progress", "--train.steps", "3", "--train.batch-size", "16",
         "--train.no-progress", "--sample.num-per-class", "2", "--sample.batch-size", "8",
         "--evaluation.steps", "5", "--evaluation.hidden", "32", "--num-devices", "1"]


def _config(workdir, steps=3, **overrides):
    base = experiment.PRESETS["tiny"][1]
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, image_size=8),
        tokenizer=dataclasses.replace(base.tokenizer, **MICRO_TOKENIZER),
        tokenizer_train=TrainConfig(steps=3, batch_size=16, progress=False, tensorboard=False,
                                    async_checkpoint=False),
        train=TrainConfig(steps=steps, batch_size=16, log_every=1, checkpoint_every=2,
                          progress=False, tensorboard=False, async_checkpoint=False),
        num_devices=1, workdir=str(workdir), **overrides,
    )


def test_cli_train_sample_evaluate_end_to_end(tmp_path, capsys):
    flags = FLAGS + ["--workdir", str(tmp_path), "--order", "raster"]
    assert cli.main(["train", "tiny", *flags]) == 0
    assert (tmp_path / "generator" / "checkpoints" / "3").is_dir()
    assert (tmp_path / "tokenizer" / "checkpoints" / "3").is_dir()
    # sample reads the trained run's order (raster) even though --order is not repeated
    assert cli.main(["sample", "tiny", *FLAGS, "--workdir", str(tmp_path)]) == 0
    png = matplotlib.image.imread(tmp_path / "samples.png")
    assert png.shape[:2] == (10 * 9 + 1, 2 * 9 + 1)  # 10 classes x 2 samples of 8x8 px + gaps
    saved = np.load(tmp_path / "samples.npz")
    np.testing.assert_array_equal(saved["labels"], np.repeat(np.arange(10), 2))
    assert saved["tokens"].shape == (20, 16) and saved["tokens"].max() < 32
    capsys.readouterr()
    assert cli.main(["evaluate", "tiny", *FLAGS, "--workdir", str(tmp_path)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["step"] == 3
    for key in ("sample_accuracy", "real_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert np.isfinite(metrics["sample_frechet_distance"]) and metrics["real_frechet_distance"] >= -1e-3
    assert cli.main(["fly", "tiny"]) == 2


def _codes_config(tmp_path, workdir, steps, order="nar"):
    """LlamaGen-layout codes (12 files x 2 augmentations, 4x4 tokens, 32 codes, 3 classes)."""
    codes = tmp_path / "codes"
    if not codes.is_dir():
        rng = np.random.default_rng(0)
        data_lib.write_llamagen_codes(codes, rng.integers(0, 32, (12, 2, 16)),
                                      rng.integers(0, 3, 12), image_size=64)
    return dataclasses.replace(
        _config(tmp_path / workdir, steps=steps, order=order),
        data=experiment.DataConfig(source="llamagen", code_path=str(codes), code_image_size=64,
                                   downsample=16, num_classes=3, codebook_size=32),
        sample=experiment.SampleConfig(num_per_class=2, batch_size=6, cfg_scale=1.5),
    )


def test_resume_on_llamagen_codes_matches_an_uninterrupted_run(tmp_path):
    out = experiment.run(_codes_config(tmp_path, "a", steps=4, order="par4"))
    straight = out["generator"]
    assert out["tokenizer"] is None and straight.resumed_from is None and straight.step == 4
    assert out["plan"].num_steps == order.decode_steps("par", (4, 4), 4)
    # A run killed after its step-2 checkpoint: same workdir without the step-4 checkpoint.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "generator" / "checkpoints" / "4")
    resumed = experiment.run(_codes_config(tmp_path, "b", steps=4, order="par4"))["generator"]
    assert resumed.resumed_from == 2 and resumed.step == 4
    np.testing.assert_allclose([h["loss"] for h in resumed.history],
                               [h["loss"] for h in straight.history[2:]], rtol=1e-5)
    # sampling restores the newest checkpoint; codes have no tokenizer: tokens only, no PNG
    config = _codes_config(tmp_path, "a", steps=4, order="par4")
    result = experiment.sample_images(config)
    assert result["step"] == 4 and "png" not in result and result["tokens"].shape == (6, 16)
    assert set(np.unique(result["labels"])) == {0, 1, 2} and result["tokens"].max() < 32
    restored, _ = experiment.restore_generator(config, experiment.make_mesh(config))
    np.testing.assert_allclose(restored.outputs[0][...], resumed.model.outputs[0][...], rtol=1e-5)
    with pytest.raises(ValueError, match="embedded"):
        experiment.evaluate(config)


def test_paper_preset_is_nar_b_on_imagenet_codes():
    config = experiment.PRESETS["paper"][1]
    assert experiment.grid(config) == (16, 16) and experiment.vocab_size(config) == 16384
    memory = plan_lib.plan_experiment(plan_lib.PlanArgs(
        experiment="nar_jax.experiment", preset="paper", devices=64,
        mesh=plan_lib.MeshConfig(fsdp=8)))
    expected = model.count_params(model.for_plan("B", order.nar_plan((16, 16))))
    assert memory.parameters == expected
    assert abs(memory.parameters - 130e6) / 130e6 < 0.01  # the paper's NAR-B
    assert memory.mesh_shape == {"data": 8, "fsdp": 8, "tensor": 1}
    tiny = experiment.PRESETS["tiny"][1]
    raster = experiment.model_config(dataclasses.replace(tiny, order="raster"))
    par = experiment.model_config(dataclasses.replace(tiny, order="par16"))
    assert experiment.model_config(tiny).out_heads == 2 and raster.out_heads == 1
    assert par.num_transition == 15 and par.vocab_size == tiny.tokenizer.codebook_size


def test_bad_configs_raise(tmp_path):
    tiny = experiment.PRESETS["tiny"][1]
    with pytest.raises(ValueError, match="code_path"):
        experiment.check_config(experiment.PRESETS["paper"][1])
    with pytest.raises(ValueError, match="image_channels"):
        experiment.check_config(dataclasses.replace(tiny, data=experiment.DataConfig(source="shapes")))
    with pytest.raises(ValueError, match="train.workdir"):
        experiment.check_config(dataclasses.replace(tiny, train=TrainConfig(workdir="x")))
    with pytest.raises(ValueError):  # PAR-16X needs grid sides divisible by 4: 12 px -> 6x6
        experiment.check_config(dataclasses.replace(
            tiny, order="par16", data=experiment.DataConfig(image_size=12)))
    with pytest.raises(FileNotFoundError, match="train"):
        experiment.saved_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        experiment.restore_tokenizer(_config(tmp_path), mesh=None)


def test_png_grid_places_each_image_in_its_tile(tmp_path):
    images = np.stack([np.full((3, 4, 1), v) for v in np.linspace(-1, 1, 6)]).astype(np.float32)
    path = experiment.write_png_grid(images, rows=2, path=tmp_path / "g.png")
    png = matplotlib.image.imread(path)[..., 0]
    assert png.shape == (2 * 4 + 1, 3 * 5 + 1)
    for i, value in enumerate((np.linspace(-1, 1, 6) + 1) / 2):
        r, c = divmod(i, 3)
        tile = png[1 + r * 4:1 + r * 4 + 3, 1 + c * 5:1 + c * 5 + 4]
        np.testing.assert_allclose(tile, value, atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="rows"):
        experiment.write_png_grid(images, rows=4, path=tmp_path / "bad.png")


def test_cli_video_train_sample_evaluate(tmp_path, capsys):
    """Moving-shape clips (2 frames of 8x8 px -> 2 x 4 x 4 tokens): three heads, PNG of frames."""
    flags = FLAGS + ["--workdir", str(tmp_path), "--data.frames", "2",
                                  "--data.num-examples", "64"]
    assert cli.main(["train", "video", *flags]) == 0
    config = experiment.saved_config(tmp_path)
    assert config.data.source == "videos" and experiment.grid(config) == (2, 4, 4)
    assert experiment.model_config(config).out_heads == 3
    assert cli.main(["sample", "video", *flags]) == 0
    png = matplotlib.image.imread(tmp_path / "samples.png")
    # 6 classes x (2 clips x 2 frames) of 8x8 px + 1 px gaps
    assert png.shape[:2] == (6 * 9 + 1, 4 * 9 + 1)
    saved = np.load(tmp_path / "samples.npz")
    assert saved["tokens"].shape == (12, 32) and saved["tokens"].max() < 32
    capsys.readouterr()
    assert cli.main(["evaluate", "video", *flags]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= metrics["sample_accuracy"] <= 1.0 and np.isfinite(metrics["sample_frechet_distance"])
