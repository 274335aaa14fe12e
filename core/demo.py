"""The core layer's demonstration: an MLP on scikit-learn digits across all local devices,
with checkpoints, resume, and a ``vmap`` analysis over the saved checkpoints.

    python -m core.demo tiny --train.workdir runs/digits          # train (resumes if present)
    python -m core.demo tiny --mesh.data 2 --mesh.fsdp 2 --mesh.tensor 2

Presets: ``tiny`` (seconds on two CPU cores) and ``full`` (a wider model, longer). There is no
paper behind this experiment, hence no ``paper`` preset. The module also serves as the
reference experiment for ``python -m core.plan`` (``PRESETS`` + :func:`model_and_optimizer`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from core import checkpoint, config as config_lib, data, experiment, mesh as mesh_lib
from core.classifier import ClassifierConfig, MLPClassifier, classification_loss
from core.train import TrainConfig, TrainResult, init_state, train


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    model: ClassifierConfig = ClassifierConfig()
    train: TrainConfig = TrainConfig(
        steps=200, batch_size=64, eval_every=50, checkpoint_every=25, keep_checkpoints=8
    )
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig()
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    distributed: bool = False


PRESETS = {
    "tiny": ("200 steps, hidden 128: seconds on 2 CPU cores", DemoConfig()),
    "full": (
        "2000 steps, hidden 512, depth 3",
        DemoConfig(
            model=ClassifierConfig(hidden=512, depth=3),
            train=TrainConfig(
                steps=2000, batch_size=256, eval_every=200, checkpoint_every=100, keep_checkpoints=20
            ),
        ),
    ),
}


def model_and_optimizer(config: DemoConfig):
    """``(model constructor, optimizer)`` for a config: what training and ``core.plan`` need."""

    def model_fn():
        return MLPClassifier(config.model, nnx.Rngs(config.train.seed))

    return model_fn, optax.adamw(config.learning_rate, weight_decay=config.weight_decay)


def run(config: DemoConfig) -> TrainResult:
    """Train (or resume) the demo classifier on all devices of the configured mesh."""
    mesh = mesh_lib.make_mesh(config.mesh)
    model_fn, optimizer = model_and_optimizer(config)
    source = data.digits("train")
    test = data.digits("test")
    test_batch = {k: jnp.asarray(v) for k, v in test.arrays.items()}

    def evaluate(model):
        loss, metrics = classification_loss(model, test_batch, jax.random.key(0))
        return {"loss": float(loss), "accuracy": float(metrics["accuracy"])}

    iterator = data.batches(source, config.train.batch_size, seed=config.train.seed)
    return train(
        model_fn,
        classification_loss,
        optimizer,
        iterator,
        config.train,
        mesh,
        eval_fn=evaluate,
        run_config=config_lib.to_dict(config),
    )


def analyse_checkpoints(config: DemoConfig, steps: list[int] | None = None) -> dict[str, np.ndarray]:
    """Test accuracy and parameter norm of every saved checkpoint, in one vmapped call.

    The checkpoints are stacked on a leading axis with :func:`core.checkpoint.load_stack` and
    the metric is ``jax.vmap``-ed over it (compiled once for the stack).
    """
    directory = Path(config.train.workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(directory)!r} does not exist")
    mesh = mesh_lib.make_mesh(config.mesh)
    model_fn, optimizer = model_and_optimizer(config)
    graphdef, state, _ = init_state(mesh_lib.create_sharded(model_fn, mesh), optimizer, mesh)
    steps = steps or checkpoint.list_steps(directory)
    stack = checkpoint.load_stack(directory, steps, checkpoint.abstract_like(state))
    test = data.digits("test")
    images, labels = jnp.asarray(test.arrays["image"]), jnp.asarray(test.arrays["label"])
    metrics = jax.jit(jax.vmap(lambda s: checkpoint_metrics(graphdef, s, images, labels)))(stack)
    return {"step": np.asarray(steps), **{k: np.asarray(v) for k, v in metrics.items()}}


def checkpoint_metrics(graphdef, state, images, labels) -> dict[str, jax.Array]:
    """Accuracy, loss and global parameter norm of one training state."""
    model = nnx.merge(graphdef, state["params"], state["rest"])
    loss, metrics = classification_loss(model, {"image": images, "label": labels}, jax.random.key(0))
    return {"accuracy": metrics["accuracy"], "loss": loss, "param_norm": optax.global_norm(state["params"])}


def main(argv: list[str] | None = None) -> int:
    return experiment.main(PRESETS, run, argv, __doc__.splitlines()[0], summary=_summary)


def _summary(result: TrainResult) -> str:
    if not result.evals:
        return f"step {result.step}"
    return f"step {result.step}: test accuracy {result.evals[-1]['accuracy']:.4f}"


if __name__ == "__main__":
    sys.exit(main())
