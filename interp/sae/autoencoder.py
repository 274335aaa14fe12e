"""The shared sparse-autoencoder module: parameters, decoder, training loss skeleton, statistics.

Conventions follow SAELens: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``,
``b_dec [d_in]``; ``z = act(pre)`` with ``pre = (x - b_dec) W_enc + b_enc``; ``x_hat = z W_dec +
b_dec``. The reconstruction loss is the squared error summed over ``d_in`` and averaged over
tokens. Parameters carry logical axes ``latent`` (dictionary) and ``embed`` (``d_in``);
non-trained state (step counter, steps since each latent fired, BatchTopK threshold) lives in
:class:`SAEStat` variables updated by :meth:`SparseAutoencoder.loss`, so one NNX split
(``nnx.Param`` vs ``SAEStat``) gives a pure training step.

Decoder rows are initialised to unit norm and ``W_enc = W_dec^T`` (SAELens/openai); the optimizer
from :mod:`interp.sae.training` keeps them unit norm.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from interp.sae.checks import check_activations


class SAEStat(nnx.Variable):
    """Non-trained SAE state: step counter, steps since each latent fired, learned thresholds."""


def unit_rows(w: jax.Array, eps: float = 1e-8) -> jax.Array:
    return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), eps)


class SparseAutoencoder(nnx.Module):
    """Base class: subclasses define ``encode(x)`` (inference codes ``[..., d_sae]``) and, when
    training differs from inference, :meth:`train_forward`."""

    architecture: ClassVar[str] = ""
    has_encoder: ClassVar[bool] = True
    has_encoder_bias: ClassVar[bool] = True

    def __init__(self, d_in: int, d_sae: int, *, rngs: nnx.Rngs, dead_steps: int = 1000,
                 dtype: Any = jnp.float32):
        for name, value in (("d_in", d_in), ("d_sae", d_sae), ("dead_steps", dead_steps)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        self.d_in, self.d_sae, self.dead_steps = d_in, d_sae, dead_steps
        w_dec = unit_rows(jax.random.normal(rngs.params(), (d_sae, d_in), dtype))
        self.W_dec = nnx.Param(w_dec, out_sharding=("latent", "embed"))
        if self.has_encoder:
            self.W_enc = nnx.Param(w_dec.T, out_sharding=("embed", "latent"))
        if self.has_encoder_bias:
            self.b_enc = nnx.Param(jnp.zeros((d_sae,), dtype), out_sharding=("latent",))
        self.b_dec = nnx.Param(jnp.zeros((d_in,), dtype), out_sharding=("embed",))
        self.step = SAEStat(jnp.zeros((), jnp.int32))
        self.steps_since_fired = SAEStat(jnp.zeros((d_sae,), jnp.int32), out_sharding=("latent",))

    # --- forward -------------------------------------------------------------------------------
    def pre_activation(self, x: jax.Array) -> jax.Array:
        x = check_activations(x, self.d_in, "x", min_rank=1)
        return (x - self.b_dec[...]) @ self.W_enc[...] + self.b_enc[...]

    def decode(self, z: jax.Array) -> jax.Array:
        return z @ self.W_dec[...] + self.b_dec[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        x = check_activations(x, self.d_in, "x", min_rank=1)
        return self.decode(self.encode(x))

    def train_forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """Training-time ``(codes, reconstruction, extra loss terms)``; default = inference path.
        The codes may be in any form that :meth:`code_activity` reads (dense by default)."""
        z = self.encode(x)
        return z, self.decode(z), {}

    # --- training ------------------------------------------------------------------------------
    def code_activity(self, z: Any) -> tuple[jax.Array, jax.Array]:
        """``(fired [d_sae], mean L0)`` of the training codes ``z`` from ``train_forward``."""
        active = z != 0
        return jnp.any(active, axis=0), jnp.mean(jnp.sum(active, axis=-1))

    def dead_mask(self) -> jax.Array:
        """Latents that have not fired for ``dead_steps`` training steps."""
        return self.steps_since_fired[...] >= self.dead_steps

    def loss(self, batch: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``(loss, metrics)`` on a batch ``[tokens, d_in]``; advances step and fire counters."""
        x = check_activations(batch, self.d_in, "batch")
        x = x.reshape(-1, self.d_in)
        z, x_hat, extra = self.train_forward(x)
        mse = jnp.mean(jnp.sum((x_hat - x) ** 2, axis=-1))
        loss = mse + sum(extra.values(), jnp.zeros(()))
        fired, l0 = self.code_activity(z)
        self.steps_since_fired[...] = jnp.where(fired, 0, self.steps_since_fired[...] + 1)
        self.step[...] = self.step[...] + 1
        total = jnp.sum((x - x.mean(0)) ** 2)
        metrics = {
            "loss": loss,
            "mse": mse,
            "l0": l0,
            "fvu": jnp.sum((x - x_hat) ** 2) / jnp.maximum(total, 1e-12),
            "dead_fraction": jnp.mean(self.dead_mask()),
            **{k: jax.lax.stop_gradient(v) for k, v in extra.items()},
        }
        return loss, metrics

    # --- export --------------------------------------------------------------------------------
    def fold_input_scale(self, scale: float) -> None:
        """Fold a training-time input scaling ``x -> scale * x`` into the weights (in place).

        Afterwards the module maps raw activations exactly as it mapped scaled ones (codes are
        unchanged; the reconstruction is divided by ``scale``), as SAELens does at save.
        """
        if not scale > 0:
            raise ValueError(f"scale={scale!r}: expected a positive number")
        self.W_enc[...] = self.W_enc[...] * scale
        self.W_dec[...] = self.W_dec[...] / scale
        self.b_dec[...] = self.b_dec[...] / scale

    def saelens_config(self) -> dict[str, Any]:
        """Architecture-specific keys of SAELens's ``cfg.json`` (beyond ``d_in``/``d_sae``)."""
        return {"architecture": self.architecture}

    def saelens_weights(self) -> dict[str, jax.Array]:
        """Tensors in SAELens's names and layout."""
        return {"W_enc": self.W_enc[...], "b_enc": self.b_enc[...],
                "W_dec": self.W_dec[...], "b_dec": self.b_dec[...]}

    def load_saelens_weights(self, weights: dict[str, Any]) -> None:
        """Set parameters from SAELens-named tensors (shapes checked)."""
        for name, value in weights.items():
            target = getattr(self, name, None)
            if not isinstance(target, nnx.Variable):
                raise ValueError(f"weights[{name!r}]: not a tensor of {type(self).__name__}")
            value = jnp.asarray(value, target[...].dtype)
            if value.shape != target[...].shape:
                raise ValueError(f"weights[{name!r}]: expected shape {target[...].shape}, got "
                                 f"{value.shape}")
            target[...] = value
