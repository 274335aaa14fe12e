"""A small MLP classifier: the core layer's demonstration and test model (no paper)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    in_features: int = 64
    hidden: int = 128
    depth: int = 2
    num_classes: int = 10


class Dense(nnx.Module):
    """``x @ w + b`` with logical axis names on both parameters."""

    def __init__(self, d_in: int, d_out: int, names: tuple[str, str], rngs: nnx.Rngs):
        scale = 1.0 / jnp.sqrt(d_in)
        self.w = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out)) * scale, out_sharding=names)
        self.b = nnx.Param(jnp.zeros((d_out,)), out_sharding=(names[1],))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.w[...].astype(x.dtype) + self.b[...].astype(x.dtype)


class MLPClassifier(nnx.Module):
    """Flatten, ``depth`` GELU hidden layers (``embed -> mlp``, ``mlp -> embed``), linear head."""

    def __init__(self, config: ClassifierConfig, rngs: nnx.Rngs):
        if config.depth < 1:
            raise ValueError(f"depth={config.depth}: expected at least one hidden layer")
        dims = [config.in_features] + [config.hidden] * config.depth
        names = [("embed", "mlp"), ("mlp", "embed")]
        self.layers = nnx.List(
            [Dense(dims[i], dims[i + 1], names[i % 2], rngs) for i in range(config.depth)]
        )
        last = names[(config.depth - 1) % 2][1]
        self.head = Dense(config.hidden, config.num_classes, (last, "classes"), rngs)

    def features(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = jax.nn.gelu(layer(h))
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def classification_loss(model: MLPClassifier, batch: dict, key: jax.Array):
    """Mean softmax cross entropy and accuracy on ``batch['image']``, ``batch['label']``."""
    del key
    logits = model(batch["image"]).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    accuracy = (logits.argmax(-1) == batch["label"]).mean()
    return loss, {"accuracy": accuracy}
