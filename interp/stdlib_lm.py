"""The GPT-style language model trained on the Python standard library's docstrings, through
``core``'s training loop: presets, data, training, and probe representations for analyses.

    python -m interp.stdlib_lm tiny --train.workdir runs/stdlib_lm            # train / resume
    python -m core.plan --experiment interp.stdlib_lm --preset small --devices 64 --mesh.fsdp 8

The corpus and the BPE tokenizer are built deterministically from the running Python's standard
library (:mod:`interp.text`); the last ``heldout_fraction`` of the token rows is held out.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from core import config as config_lib, data, experiment, mesh as mesh_lib
from core.train import TrainConfig, TrainResult, train
from interp.models.gpt import GPT, GPTConfig, next_token_loss
from interp.models.gpt import PRESETS as MODEL_PRESETS
from interp.text import stdlib_lm_rows


@dataclasses.dataclass(frozen=True)
class LMConfig:
    model: GPTConfig = MODEL_PRESETS["tiny"]
    train: TrainConfig = TrainConfig(
        steps=400, batch_size=32, log_every=20, eval_every=100, checkpoint_every=50, keep_checkpoints=16
    )
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig()
    learning_rate: float = 3e-3
    warmup_steps: int = 40
    weight_decay: float = 0.01
    heldout_fraction: float = 0.05
    max_files: int | None = None
    distributed: bool = False


PRESETS = {
    "tiny": ("0.17M-parameter GPT, 400 steps of 32 x 64 tokens: minutes on 2 CPU cores", LMConfig()),
    "small": (
        "5.3M-parameter GPT, 4 layers, context 256, 5000 steps of 64 x 256 tokens",
        LMConfig(
            model=MODEL_PRESETS["small"],
            train=TrainConfig(steps=5000, batch_size=64, log_every=50, checkpoint_every=250, keep_checkpoints=20),
            learning_rate=1e-3,
            warmup_steps=200,
        ),
    ),
}


def model_and_optimizer(config: LMConfig):
    """``(model constructor, AdamW with warmup + cosine decay, clipped at 1.0)``."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, max(config.warmup_steps, 1), max(config.train.steps, config.warmup_steps + 1)
    )
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=config.weight_decay))
    return (lambda: GPT(config.model, nnx.Rngs(config.train.seed))), optimizer


@functools.lru_cache(maxsize=4)
def corpus_rows(vocab_size: int, length: int, max_files: int | None = None):
    """``(tokenizer, rows [n, length] int32)`` of the docstring corpus (cached per process)."""
    return stdlib_lm_rows(vocab_size, length, max_files=max_files)


def splits(config: LMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out token rows ``[n, n_ctx + 1]``."""
    if not 0.0 < config.heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction={config.heldout_fraction}: expected a value in (0, 1)")
    _, rows = corpus_rows(config.model.vocab_size, config.model.n_ctx + 1, config.max_files)
    n_heldout = max(1, int(len(rows) * config.heldout_fraction))
    return rows[:-n_heldout], rows[-n_heldout:]


def loss_fn(model: GPT, batch, key: jax.Array):
    """``core.train`` signature around :func:`interp.models.gpt.next_token_loss` (no dropout)."""
    del key
    loss, metrics = next_token_loss(model, batch)
    return loss, {"accuracy": metrics["accuracy"]}


def run(config: LMConfig) -> TrainResult:
    """Train (or resume) the LM on every device of the configured mesh."""
    mesh = mesh_lib.make_mesh(config.mesh)
    model_fn, optimizer = model_and_optimizer(config)
    train_rows, heldout_rows = splits(config)
    heldout = {"tokens": jnp.asarray(heldout_rows[:256])}

    def evaluate(model):
        loss, metrics = next_token_loss(model, heldout)
        return {"loss": float(loss), "accuracy": float(metrics["accuracy"])}

    iterator = data.batches(data.ArraySource({"tokens": train_rows}), config.train.batch_size, seed=config.train.seed)
    return train(model_fn, loss_fn, optimizer, iterator, config.train, mesh, eval_fn=evaluate,
                 run_config=config_lib.to_dict(config))


def probe_tokens(config: LMConfig, n_sequences: int = 16) -> jax.Array:
    """Fixed held-out sequences ``[n_sequences, n_ctx]`` for representation analyses."""
    _, heldout = splits(config)
    if n_sequences > len(heldout):
        raise ValueError(f"n_sequences={n_sequences}: only {len(heldout)} held-out rows exist")
    return jnp.asarray(heldout[:n_sequences, :-1])


def representations(model: GPT, tokens: jax.Array, layer: int) -> jax.Array:
    """Residual stream after block ``layer`` for every probe token: ``[n_tokens, d_model]``."""
    name = f"blocks.{layer}.hook_resid_post"
    _, captures = model.run(tokens, capture=(name,), stop_at_layer=layer + 1)
    acts = captures[name]
    return acts.reshape(-1, acts.shape[-1]).astype(jnp.float32)


def main(argv: list[str] | None = None) -> int:
    return experiment.main(PRESETS, run, argv, __doc__.splitlines()[0], summary=_summary)


def _summary(result: TrainResult) -> str:
    if not result.evals:
        return f"step {result.step}"
    return f"step {result.step}: held-out loss {result.evals[-1]['loss']:.4f}"


if __name__ == "__main__":
    sys.exit(main())
