"""Training tricks and a pure training step for the SAE family.

- :func:`estimate_input_scale`: the factor ``s`` with ``E||s x|| = sqrt(d_in)``; train on ``s x``,
  then ``model.fold_input_scale(s)`` before saving (SAELens ``expected_average_only_in``).
- :func:`geometric_median` (Weiszfeld, openai) and :func:`init_b_dec` (median or mean).
- :func:`remove_decoder_parallel_grad` / :func:`renormalize_decoder`: optax transforms that keep
  decoder rows unit norm (the gradient component along each row is removed before the update,
  rows are renormalised after it); :func:`sae_optimizer` chains them around clip + Adam.
- :func:`make_train_step`: ``step(state, batch) -> (state, metrics)``, one jitted pure function of
  ``SAETrainState(params, stats, opt_state)``; :func:`sae_loss_fn` is the
  ``loss_fn(model, batch, rng)`` for core's loop; :func:`train_on_array` fits a model to an
  in-memory array with ``lax.scan`` (compiled once).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from interp.sae.autoencoder import SAEStat, SparseAutoencoder, unit_rows
from interp.sae.checks import check_activations

DECODER_NAME = "W_dec"


def estimate_input_scale(x: jax.Array) -> jax.Array:
    """``sqrt(d_in) / mean ||x||`` over tokens ``x [..., d_in]``."""
    x = check_activations(x)
    mean_norm = jnp.mean(jnp.linalg.norm(x.reshape(-1, x.shape[-1]), axis=-1))
    if not isinstance(mean_norm, jax.core.Tracer) and not mean_norm > 0:
        raise ValueError("x: all activations are zero; cannot estimate an input scale")
    return jnp.sqrt(x.shape[-1]) / mean_norm


def geometric_median(x: jax.Array, n_iter: int = 100, eps: float = 1e-8) -> jax.Array:
    """Geometric median of the rows of ``x [n, d]`` by Weiszfeld's iteration from the mean."""
    x = check_activations(x, min_rank=2).reshape(-1, x.shape[-1])

    def body(_, y):
        w = 1.0 / jnp.maximum(jnp.linalg.norm(x - y, axis=-1), eps)
        return (w[:, None] * x).sum(0) / w.sum()

    return jax.lax.fori_loop(0, n_iter, body, x.mean(0))


def init_b_dec(model: SparseAutoencoder, sample: jax.Array, method: str = "geometric_median"):
    """Set ``model.b_dec`` to the geometric median (openai) or the mean (sparsify) of ``sample``."""
    sample = check_activations(sample, model.d_in, "sample").reshape(-1, model.d_in)
    if method == "geometric_median":
        model.b_dec[...] = geometric_median(sample)
    elif method == "mean":
        model.b_dec[...] = sample.mean(0)
    else:
        raise ValueError(f"method={method!r}: expected 'geometric_median' or 'mean'")


def _is_decoder(path) -> bool:
    return any(getattr(k, "key", getattr(k, "name", None)) == DECODER_NAME for k in path)


def _map_decoder(fn, updates, params):
    return jax.tree_util.tree_map_with_path(
        lambda path, u, p: fn(u, p) if _is_decoder(path) else u, updates, params)


def remove_decoder_parallel_grad() -> optax.GradientTransformation:
    """Remove from the ``W_dec`` gradient its component along each (unit) decoder row."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("remove_decoder_parallel_grad: params are required")

        def project(g, w):
            w = unit_rows(w)
            return g - jnp.sum(g * w, axis=-1, keepdims=True) * w

        return _map_decoder(project, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def renormalize_decoder() -> optax.GradientTransformation:
    """Make the final update land ``W_dec`` on unit-norm rows (last in a chain)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("renormalize_decoder: params are required")
        return _map_decoder(lambda u, w: unit_rows(w + u) - w, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def sae_optimizer(learning_rate: float | optax.Schedule = 1e-3, clip: float = 1.0,
                  unit_norm_decoder: bool = True) -> optax.GradientTransformation:
    """``[remove parallel grad] -> clip by global norm -> Adam -> [renormalise rows]``."""
    parts = [optax.clip_by_global_norm(clip), optax.adam(learning_rate)]
    if unit_norm_decoder:
        parts = [remove_decoder_parallel_grad(), *parts, renormalize_decoder()]
    return optax.chain(*parts)


class SAETrainState(NamedTuple):
    params: Any
    stats: Any
    opt_state: Any


def sae_loss_fn(model: SparseAutoencoder, batch: jax.Array, rng: jax.Array | None = None):
    """``loss_fn(model, batch, rng) -> (loss, metrics)`` for core's training loop."""
    del rng
    return model.loss(batch)


def pure_train_step(graphdef, tx: optax.GradientTransformation):
    """The unjitted ``step(state, batch) -> (state, metrics)`` for a split SAE."""

    def step(state: SAETrainState, batch: jax.Array):
        def loss_of(params, stats):
            module = nnx.merge(graphdef, params, stats, copy=True)
            loss, metrics = module.loss(batch)
            return loss, (metrics, nnx.state(module, SAEStat))

        (_, (metrics, stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.params, state.stats)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return SAETrainState(optax.apply_updates(state.params, updates), stats, opt_state), metrics

    return step


def make_train_step(model: SparseAutoencoder, tx: optax.GradientTransformation):
    """Split ``model`` once; return ``(state, graphdef, step)`` with ``step`` pure and jitted.

    ``step(state, batch) -> (state, metrics)``; ``nnx.update(model, state.params, state.stats)``
    writes a state back into the model. The state is donated.
    """
    graphdef, params, stats = nnx.split(model, nnx.Param, SAEStat)
    state = SAETrainState(params, stats, tx.init(params))
    return state, graphdef, jax.jit(pure_train_step(graphdef, tx), donate_argnums=0)


def train_on_array(model: SparseAutoencoder, data: jax.Array, tx: optax.GradientTransformation,
                   steps: int, batch_size: int, seed: int = 0) -> dict[str, jax.Array]:
    """Train ``model`` in place on random batches of ``data [n, d_in]``; return metric histories.

    The whole run is one ``lax.scan`` (compiled once); batch ``t`` is drawn with
    ``fold_in(key(seed), t)``.
    """
    data = check_activations(data, model.d_in, "data").reshape(-1, model.d_in)
    if steps <= 0 or batch_size <= 0:
        raise ValueError(f"steps={steps!r}, batch_size={batch_size!r}: expected positive integers")
    graphdef, params, stats = nnx.split(model, nnx.Param, SAEStat)
    step = pure_train_step(graphdef, tx)
    n = data.shape[0]

    @jax.jit
    def run(state, key):
        def body(state, t):
            index = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n)
            return step(state, data[index])

        return jax.lax.scan(body, state, jnp.arange(steps))

    state, history = run(SAETrainState(params, stats, tx.init(params)), jax.random.key(seed))
    nnx.update(model, state.params, state.stats)
    return history
