"""P01 NAR: Neighboring Autoregressive Modeling for Efficient Visual Generation — the experiment.

Class-conditional image generation in two stages, both through ``core.train.train`` (sharded,
checkpointed, resumable):

1. **tokenizer** (embedded data only): a VQ tokenizer (:mod:`nar_jax.tokenizer`) trained on the
   real images, which are then encoded into token grids (:func:`nar_jax.data.tokenize_source`).
   With LlamaGen's extracted ImageNet codes (``data.source=llamagen``) there is no tokenizer
   stage: the codes are read as they are (:class:`nar_jax.data.LlamaGenCodes`).
2. **generator**: the LlamaGen-style transformer (:mod:`nar_jax.model`) trained on the token grids
   in one of four orders: ``nar`` (next-neighbour, two dimension-oriented heads), ``raster``
   (LlamaGen), ``par4`` / ``par16`` (PAR-4X / PAR-16X), with AdamW as the paper.

Layout of ``workdir``: ``tokenizer/``, ``generator/`` and ``classifier/`` (evaluation), each a
``core.train`` working directory (``checkpoints/``, ``metrics.jsonl``). Running again resumes each
stage from its newest checkpoint; a finished stage is only restored.

    python -m nar_jax train tiny --workdir runs/nar            # or --order raster / par4 / par16
    python -m nar_jax sample tiny --workdir runs/nar           # runs/nar/samples.png
    python -m nar_jax evaluate tiny --workdir runs/nar         # accuracy + Frechet distance
    python -m nar_jax train video --workdir runs/video         # 4 x 8 x 8 token clips
    python -m nar_jax train paper --workdir runs/b --data.code-path /data/imagenet_code_c2i
    python -m core.plan --experiment nar_jax.experiment --preset paper --devices 64 --mesh.fsdp 8

Presets: ``tiny`` (digits upsampled to 16x16 px, 8x8 tokens, the ``tiny`` transformer: minutes on
two CPU cores), ``video`` (moving shapes, 4 frames of 16x16 px -> 4 x 8 x 8 tokens: three heads,
learned absolute positions; the tokenizer encodes frames independently) and ``paper`` (NAR-B on LlamaGen's ImageNet 256 codes, 16x16 tokens, vocabulary
16384, batch 256, AdamW lr 1e-4, betas (0.9, 0.95), weight decay 0.05, clip 1.0, 300 epochs,
bfloat16 compute, CFG 2.0 at sampling).

Deviations: the paper samples 50 000 images and scores FID/IS with Inception; the embedded tasks
are scored by :mod:`nar_jax.evaluation` (class accuracy and a Frechet distance under a classifier
trained on the real images; for clips the classifier reads the whole clip, so the label is
only recoverable from shape, not motion). No learning-rate schedule (the official constant lr).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import checkpoint as ckpt_lib
from core import config as config_lib
from core import data as core_data
from core import mesh as mesh_lib
from core.train import TrainConfig, TrainResult, init_state, train
from nar_jax import data as data_lib
from nar_jax import evaluation
from nar_jax import loss as loss_lib
from nar_jax import model as model_lib
from nar_jax import optimizer as optimizer_lib
from nar_jax import order as order_lib
from nar_jax import sample as sample_lib
from nar_jax import tokenizer as tokenizer_lib

ORDER_PLANS = {"nar": ("nar", None), "raster": ("raster", None), "par4": ("par", 4),
               "par16": ("par", 16)}
EMBEDDED = ("digits", "shapes", "videos")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``digits`` (scikit-learn digits upsampled, 1 channel, 10 classes), ``shapes`` (procedural
    RGB shapes, 6 classes), ``videos`` (``frames`` RGB frames of one moving shape, 6 classes) or
    ``llamagen`` (extracted codes under ``code_path``)."""

    source: Literal["digits", "shapes", "videos", "llamagen"] = "digits"
    image_size: int = 16  # pixels of the embedded images (video frames)
    num_examples: int = 4096  # shapes / videos: training examples generated
    frames: int = 4  # videos
    code_path: str = ""  # llamagen: the --code-path of LlamaGen's extract_codes_c2i.py
    dataset: str = "imagenet"
    code_image_size: int = 256
    downsample: int = 16
    num_classes: int = 1000  # llamagen
    codebook_size: int = 16384  # llamagen


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """``num_per_class`` images of every class, decoded ``batch_size`` at a time."""

    num_per_class: int = 8
    batch_size: int = 80
    cfg_scale: float = 2.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    output: str = ""  # PNG path; default <workdir>/samples.png


@dataclasses.dataclass(frozen=True)
class NARExperimentConfig:
    order: Literal["nar", "par4", "par16", "raster"] = "nar"
    model: str = "tiny"  # a preset of nar_jax.model (tiny, B, M, L, XL, XXL)
    data: DataConfig = DataConfig()
    tokenizer: tokenizer_lib.TokenizerConfig = dataclasses.replace(
        tokenizer_lib.PRESETS["tiny"], image_channels=1, codebook_size=64
    )
    tokenizer_train: TrainConfig = TrainConfig(steps=300, batch_size=64, log_every=50,
                                               checkpoint_every=100, tensorboard=False)
    tokenizer_learning_rate: float = 2e-3
    train: TrainConfig = TrainConfig(steps=600, batch_size=64, log_every=50, checkpoint_every=200,
                                     tensorboard=False)
    learning_rate: float = 1e-3
    beta2: float = 0.95
    weight_decay: float = 0.05
    max_grad_norm: float = 1.0
    sample: SampleConfig = SampleConfig()
    evaluation: evaluation.ClassifierTrainConfig = evaluation.ClassifierTrainConfig()
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig()
    num_devices: int = 0  # use the first n local devices (0: all)
    workdir: str = ""
    distributed: bool = False


PRESETS = {
    "tiny": ("digits 16x16 px -> 8x8 tokens, tiny transformer: minutes on 2 CPU cores",
             NARExperimentConfig()),
    "paper": (
        "NAR-B on LlamaGen's ImageNet-256 codes (16x16, vocab 16384), batch 256, 300 epochs",
        NARExperimentConfig(
            model="B",
            data=DataConfig(source="llamagen"),
            train=TrainConfig(steps=1_501_500, batch_size=256, compute_dtype="bfloat16",
                              log_every=100, checkpoint_every=5000, tensorboard=True),
            learning_rate=1e-4,
            sample=SampleConfig(num_per_class=50, batch_size=250, cfg_scale=2.0),
        ),
    ),
    "video": (
        "moving shapes, 4 frames of 16x16 px -> 4x8x8 tokens, tiny transformer with 3 heads",
        NARExperimentConfig(
            data=DataConfig(source="videos", num_examples=2048),
            tokenizer=dataclasses.replace(tokenizer_lib.PRESETS["tiny"], image_channels=3,
                                          codebook_size=64),
            sample=SampleConfig(num_per_class=4, batch_size=24),
        ),
    ),
}


# --- derived settings ---------------------------------------------------------------------------


def num_classes(config: NARExperimentConfig) -> int:
    if config.data.source == "digits":
        return 10
    if config.data.source in ("shapes", "videos"):
        return len(data_lib.SHAPE_KINDS)
    return config.data.num_classes


def grid(config: NARExperimentConfig) -> tuple[int, ...]:
    """Token grid ``(h, w)`` of the configured data, ``(t, h, w)`` for videos."""
    d = config.data
    if d.source == "llamagen":
        return (d.code_image_size // d.downsample,) * 2
    frame = (d.image_size // config.tokenizer.downsample,) * 2
    return (d.frames, *frame) if d.source == "videos" else frame


def vocab_size(config: NARExperimentConfig) -> int:
    return config.data.codebook_size if config.data.source == "llamagen" else config.tokenizer.codebook_size


def plan(config: NARExperimentConfig) -> order_lib.SequencePlan:
    kind, k = ORDER_PLANS[config.order]
    return order_lib.make_plan(kind, grid(config), k=k)


def model_config(config: NARExperimentConfig) -> model_lib.ModelConfig:
    return model_lib.for_plan(config.model, plan(config), vocab_size=vocab_size(config),
                              num_classes=num_classes(config), dtype=config.train.compute_dtype)


def model_and_optimizer(config: NARExperimentConfig):
    """``(generator constructor, optimizer)``: what training and ``core.plan`` need."""
    mc = model_config(config)

    def model_fn():
        return model_lib.Transformer(mc, rngs=nnx.Rngs(config.train.seed))

    optimizer = optimizer_lib.make_optimizer(config.learning_rate, b2=config.beta2,
                                             weight_decay=config.weight_decay,
                                             max_grad_norm=config.max_grad_norm)
    return model_fn, optimizer


def check_config(config: NARExperimentConfig) -> None:
    """Raise ``ValueError`` for settings that cannot run together."""
    d = config.data
    if d.source in EMBEDDED:
        channels = 1 if d.source == "digits" else 3
        if config.tokenizer.image_channels != channels:
            raise ValueError(
                f"tokenizer.image_channels={config.tokenizer.image_channels}: data.source="
                f"{d.source!r} has {channels} channel(s)"
            )
        if d.image_size % config.tokenizer.downsample:
            raise ValueError(
                f"data.image_size={d.image_size}: expected a multiple of the tokenizer's "
                f"downsampling {config.tokenizer.downsample}"
            )
        if d.source == "videos" and d.frames < 2:
            raise ValueError(f"data.frames={d.frames}: expected at least 2 frames for videos")
    elif not d.code_path:
        raise ValueError("data.code_path: expected the folder of LlamaGen's extracted codes "
                         "(data.source='llamagen')")
    for name, tc in (("train", config.train), ("tokenizer_train", config.tokenizer_train)):
        if tc.workdir:
            raise ValueError(f"{name}.workdir={tc.workdir!r}: set the top-level workdir instead "
                             "(stages use <workdir>/tokenizer and <workdir>/generator)")
    if config.num_devices < 0:
        raise ValueError(f"num_devices={config.num_devices}: expected 0 (all) or a positive count")
    if config.sample.num_per_class <= 0 or config.sample.batch_size <= 0:
        raise ValueError("sample.num_per_class, sample.batch_size: expected positive integers")
    plan(config)  # order / grid compatibility (e.g. PAR-16X needs sides divisible by 4)


def make_mesh(config: NARExperimentConfig):
    devices = jax.devices()[: config.num_devices] if config.num_devices else None
    return mesh_lib.make_mesh(config.mesh, devices)


def _stage_dir(config: NARExperimentConfig, stage: str) -> str:
    return str(Path(config.workdir) / stage) if config.workdir else ""


def real_images(config: NARExperimentConfig, split: Literal["train", "test"]):
    """The embedded real examples ``{'image', 'label'}`` of ``split``; for videos ``image`` is a
    whole clip ``[T, H, W, C]``."""
    d = config.data
    if d.source == "digits":
        return data_lib.digit_images(split, size=d.image_size)
    length = d.num_examples if split == "train" else max(d.num_examples // 4, 64)
    seed = 0 if split == "train" else 1
    if d.source == "shapes":
        return data_lib.shape_images(length, size=d.image_size, seed=seed)
    if d.source == "videos":
        clips, labels = _rendered_clips(length, d.frames, d.image_size, seed)
        return core_data.ArraySource({"image": clips, "label": labels})
    raise ValueError(f"data.source={d.source!r}: real images exist only for {EMBEDDED}")


@functools.cache
def _rendered_clips(length: int, frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Moving-shape clips rendered once per process (the tokenizer, the token source and the
    classifier all read them)."""
    source = data_lib.moving_shape_videos(length, frames, size, seed=seed)
    rows = [source[i] for i in range(length)]
    clips, labels = np.stack([r["video"] for r in rows]), np.stack([r["label"] for r in rows])
    clips.flags.writeable = labels.flags.writeable = False
    return clips, labels


def _tokenizer_images(config: NARExperimentConfig):
    """What the tokenizer trains on: the real training images, or every frame of the clips."""
    source = real_images(config, "train")
    if config.data.source != "videos":
        return source
    clips = source.arrays["image"]
    return core_data.ArraySource({"image": clips.reshape(-1, *clips.shape[2:]),
                                  "label": np.repeat(source.arrays["label"], clips.shape[1])})


# --- stages -------------------------------------------------------------------------------------


def tokenizer_stage(config: NARExperimentConfig, mesh):
    """Train (or resume / restore) the tokenizer; ``None`` for LlamaGen codes."""
    if config.data.source not in EMBEDDED:
        return None
    tc = dataclasses.replace(config.tokenizer_train, workdir=_stage_dir(config, "tokenizer"),
                             seed=config.train.seed)
    result = tokenizer_lib.train_tokenizer(config.tokenizer, _tokenizer_images(config), tc,
                                           mesh, learning_rate=config.tokenizer_learning_rate)
    return result.model


def restore_tokenizer(config: NARExperimentConfig, mesh):
    """The finished tokenizer of ``config.workdir`` (restored, never trained here)."""
    directory = Path(config.workdir) / "tokenizer" / "checkpoints"
    if not config.workdir or not directory.is_dir():
        raise FileNotFoundError(f"workdir={config.workdir!r}: no tokenizer checkpoints in "
                                f"{str(directory)!r}; run `python -m nar_jax train` first")
    quiet = dataclasses.replace(config, tokenizer_train=dataclasses.replace(
        config.tokenizer_train, progress=False))
    return tokenizer_stage(quiet, mesh)


def token_source(config: NARExperimentConfig, tokenizer):
    """Training token grids: the encoded embedded images, or LlamaGen's codes."""
    d = config.data
    if d.source == "llamagen":
        source = data_lib.LlamaGenCodes(d.code_path, d.code_image_size, d.dataset, d.downsample,
                                        codebook_size=d.codebook_size)
    else:
        source = data_lib.tokenize_source(tokenizer, real_images(config, "train"), progress=False)
    if tuple(source.grid) != grid(config):
        raise ValueError(f"data: token grid {source.grid} differs from the configured {grid(config)}")
    return source


def generator_stage(config: NARExperimentConfig, tokens, mesh) -> TrainResult:
    """Train (or resume) the generator on a token source through ``core.train.train``."""
    model_fn, optimizer = model_and_optimizer(config)
    tc = dataclasses.replace(config.train, workdir=_stage_dir(config, "generator"))
    iterator = core_data.batches(tokens, tc.batch_size, seed=tc.seed)
    return train(model_fn, loss_lib.make_loss_fn(plan(config)), optimizer, iterator, tc, mesh,
                 run_config=config_lib.to_dict(config))


def run(config: NARExperimentConfig) -> dict:
    """Both training stages; returns ``{'tokenizer', 'generator' (TrainResult), 'plan'}``."""
    check_config(config)
    mesh = make_mesh(config)
    tokenizer = tokenizer_stage(config, mesh)
    result = generator_stage(config, token_source(config, tokenizer), mesh)
    return {"tokenizer": tokenizer, "generator": result, "plan": plan(config)}


def saved_config(workdir: str | Path) -> NARExperimentConfig:
    """The resolved config saved with the newest generator checkpoint under ``workdir``."""
    directory = Path(workdir) / "generator" / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"workdir={str(workdir)!r}: no generator checkpoints in "
                                f"{str(directory)!r}; run `python -m nar_jax train` first")
    with ckpt_lib.Checkpointer(directory, async_save=False) as checkpointer:
        steps = checkpointer.steps()
        if not steps:
            raise FileNotFoundError(f"workdir={str(workdir)!r}: {str(directory)!r} holds no checkpoint")
        return config_lib.from_dict(NARExperimentConfig, checkpointer.config(steps[-1]))


def restore_generator(config: NARExperimentConfig, mesh) -> tuple[model_lib.Transformer, int]:
    """The newest generator checkpoint of ``config.workdir`` as a model, and its step."""
    if not config.workdir:
        raise ValueError("workdir: expected the training run's directory")
    model_fn, optimizer = model_and_optimizer(config)
    graphdef, state, _ = init_state(mesh_lib.create_sharded(model_fn, mesh), optimizer, mesh)
    with ckpt_lib.Checkpointer(Path(config.workdir) / "generator" / "checkpoints",
                               async_save=False) as checkpointer:
        step, state = checkpointer.restore(ckpt_lib.abstract_like(state))
    return nnx.merge(graphdef, state["params"], state["rest"]), step


def generate(config: NARExperimentConfig, generator, labels) -> np.ndarray:
    """Token grids ``[n, h*w]`` (raster) for ``labels [n]``, decoded in the configured order,
    ``sample.batch_size`` at a time (the last batch padded: one compiled decoder)."""
    s = config.sample
    labels = np.asarray(labels, np.int32)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels: expected a non-empty [n] array, got shape {labels.shape}")
    sampler = sample_lib.Sampler(generator, plan(config), cfg=s.cfg_scale != 1.0,
                                 temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    key = jax.random.key(s.seed)
    out = []
    for i, start in enumerate(range(0, labels.size, s.batch_size)):
        chunk = labels[start:start + s.batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], s.batch_size - chunk.size)])
        tokens = sampler(generator, padded, jax.random.fold_in(key, i), s.cfg_scale)
        out.append(np.asarray(tokens)[: chunk.size])
    return np.concatenate(out)


_decode = nnx.jit(lambda tokenizer, tokens: tokenizer.decode(tokens))


def decode_images(tokenizer, tokens, token_grid, batch_size: int = 256) -> np.ndarray:
    """Images ``[n, H, W, C]`` in [-1, 1] from raster token grids ``[n, h*w]``; for a video grid
    ``(t, h, w)`` clips ``[n, t, H, W, C]`` (frames decoded independently)."""
    tokens = np.asarray(tokens, np.int32)
    if tokens.ndim != 2 or tokens.shape[1] != math.prod(token_grid):
        raise ValueError(f"tokens: expected [n, {math.prod(token_grid)}], got {tokens.shape}")
    frame_grid = tuple(token_grid[-2:])
    frames = tokens.reshape(-1, math.prod(frame_grid))
    out = []
    for start in range(0, frames.shape[0], batch_size):
        chunk = frames[start:start + batch_size].reshape(-1, *frame_grid)
        out.append(np.asarray(_decode(tokenizer, jnp.asarray(chunk))))
    images = np.clip(np.concatenate(out), -1.0, 1.0)
    return images.reshape(tokens.shape[0], *token_grid[:-2], *images.shape[1:])


def write_png_grid(images, rows: int, path: str | Path) -> Path:
    """Tile ``images [rows * cols, H, W, C]`` (in [-1, 1]) into one PNG, ``rows`` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] % rows:
        raise ValueError(f"images: expected [rows * cols, H, W, C] with rows={rows}, got {images.shape}")
    n, h, w, c = images.shape
    cols = n // rows
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
    for i, image in enumerate((images + 1.0) / 2.0):
        r, col = divmod(i, cols)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = canvas[..., 0] if c == 1 else canvas
    plt.imsave(path, np.clip(canvas, 0.0, 1.0), cmap="gray" if c == 1 else None)
    return path


def class_labels(config: NARExperimentConfig) -> np.ndarray:
    """``num_per_class`` copies of every class, class-major (one PNG row per class)."""
    return np.repeat(np.arange(num_classes(config), dtype=np.int32), config.sample.num_per_class)


def sample_images(config: NARExperimentConfig) -> dict:
    """Restore the trained stages of ``config.workdir``, sample every class and write the PNG
    grid (embedded data: a row per class; a clip's frames side by side) and the tokens
    (``samples.npz``). Returns paths and arrays."""
    check_config(config)
    mesh = make_mesh(config)
    generator, step = restore_generator(config, mesh)
    labels = class_labels(config)
    tokens = generate(config, generator, labels)
    workdir = Path(config.workdir)
    result = {"step": step, "labels": labels, "tokens": tokens,
              "tokens_path": workdir / "samples.npz"}
    np.savez(result["tokens_path"], tokens=tokens, labels=labels)
    if config.data.source in EMBEDDED:
        tokenizer = restore_tokenizer(config, mesh)
        images = decode_images(tokenizer, tokens, grid(config))
        path = config.sample.output or workdir / "samples.png"
        tiles = images.reshape(-1, *images.shape[-3:])  # clips -> their frames, in order
        result.update(images=images, png=write_png_grid(tiles, num_classes(config), path))
    return result


def evaluate(config: NARExperimentConfig) -> dict[str, float]:
    """Class accuracy and Frechet distance (classifier features) of fresh samples against held-out
    real images, plus the same numbers for real held-out images (the reachable reference)."""
    check_config(config)
    if config.data.source not in EMBEDDED:
        raise ValueError(f"data.source={config.data.source!r}: evaluation needs the real images of "
                         f"an embedded task {EMBEDDED}")
    mesh = make_mesh(config)
    generator, step = restore_generator(config, mesh)
    tokenizer = restore_tokenizer(config, mesh)
    classes = num_classes(config)
    classifier = evaluation.train_classifier(real_images(config, "train"), classes,
                                             config.evaluation, mesh,
                                             _stage_dir(config, "classifier"))
    test = real_images(config, "test")
    test_rows = [test[i] for i in range(len(test))]
    test_images = np.stack([r["image"] for r in test_rows])
    test_labels = np.stack([r["label"] for r in test_rows])
    labels = class_labels(config)
    images = decode_images(tokenizer, generate(config, generator, labels), grid(config))
    half = len(test_images) // 2
    real = evaluation.sample_quality(classifier, test_images[:half], test_labels[:half],
                                     test_images[half:])
    generated = evaluation.sample_quality(classifier, images, labels, test_images[half:])
    return {
        "step": step,
        "sample_accuracy": generated["accuracy"],
        "sample_frechet_distance": generated["frechet_distance"],
        "real_accuracy": real["accuracy"],
        "real_frechet_distance": real["frechet_distance"],
    }


def train_and_report(config: NARExperimentConfig) -> int:
    """Run both stages and print the final loss; exit status 143 when preempted (SIGTERM)."""
    result = run(config)["generator"]
    if result.preempted:
        print(f"preempted: checkpoint saved at step {result.step}", file=sys.stderr)
        return 143
    if jax.process_index() == 0 and result.history:
        print(f"step {result.step}: loss {result.history[-1]['loss']:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    config = config_lib.cli(PRESETS, args=argv, description=__doc__.splitlines()[0])
    if config.distributed:
        mesh_lib.initialize_distributed()
    return train_and_report(config)


if __name__ == "__main__":
    sys.exit(main())
