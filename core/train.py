"""The generic training loop.

An area supplies a model constructor (an NNX module with logical axis names), a loss
``loss_fn(model, batch, key) -> (loss, metrics)``, an optax optimizer and a grain iterator of
per-process numpy batches. The loop builds the model sharded on the mesh, splits it once into a
graph definition and a pure state, and runs one ``jax.jit`` step with in/out shardings and the
state donated. It resumes from the newest restorable checkpoint (model, optimizer, data
position), accumulates gradients over micro-batches, can compute in bfloat16 with float32
master weights, evaluates and checkpoints on a cadence, shows a progress bar, writes metrics to
JSONL and TensorBoard, stops on a non-finite loss or gradient naming the step, and on SIGTERM
saves a checkpoint and returns. Same seed + same mesh gives the same numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from core import checkpoint as ckpt
from core.mesh import check_batch, create_sharded, global_batch
from core.metric_writer import MetricWriter

# Steps dispatched ahead of the host. Bounded: unbounded async dispatch of collective programs
# can exhaust XLA:CPU's thread pool with fake devices; two keeps accelerators busy.
MAX_STEPS_IN_FLIGHT = 2

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. ``batch_size`` is global (all processes); ``workdir=''`` keeps nothing
    on disk. Cadences of 0 mean: never (checkpoints: only at the end)."""

    steps: int = 100
    batch_size: int = 64
    grad_accum: int = 1
    seed: int = 0
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    workdir: str = ""
    progress: bool = True
    tensorboard: bool = True


@dataclasses.dataclass
class TrainResult:
    model: nnx.Module
    state: dict[str, Any]
    step: int
    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    preempted: bool = False
    resumed_from: int | None = None


def _cast_floating(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    seed: int,
    grad_accum: int = 1,
    compute_dtype: Any = jnp.float32,
) -> Callable[[dict[str, Any], Any], tuple[dict[str, Any], dict[str, jax.Array]]]:
    """The pure step ``(state, batch) -> (state, metrics)`` (not yet jitted).

    ``state`` holds ``params`` and ``rest`` (the model's non-parameter variables), ``opt``,
    ``step`` and ``bad_step`` (the first step whose loss or gradient was not finite, or -1).
    Micro-batch ``i`` takes rows ``i::grad_accum`` so every device contributes to every one.
    """

    def micro_loss(params, rest, batch, key):
        model = nnx.merge(graphdef, _cast_floating(params, compute_dtype), rest, copy=True)
        loss, metrics = loss_fn(model, batch, key)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss.astype(jnp.float32), (metrics, new_rest)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def step_fn(state, batch):
        key = jax.random.fold_in(jax.random.key(seed), state["step"])
        if grad_accum == 1:
            (loss, (metrics, rest)), grads = grad_fn(state["params"], state["rest"], batch, key)
        else:
            micro = jax.tree.map(
                lambda x: x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]).swapaxes(0, 1),
                batch,
            )

            def body(carry, inputs):
                grads_sum, rest = carry
                index, mb = inputs
                (loss, (metrics, rest)), grads = grad_fn(
                    state["params"], rest, mb, jax.random.fold_in(key, index)
                )
                return (jax.tree.map(jnp.add, grads_sum, grads), rest), (loss, metrics)

            zeros = jax.tree.map(jnp.zeros_like, state["params"])
            (grads, rest), (losses, metrics) = jax.lax.scan(
                body, (zeros, state["rest"]), (jnp.arange(grad_accum), micro)
            )
            grads = jax.tree.map(lambda g: g / grad_accum, grads)
            loss = losses.mean()
            metrics = jax.tree.map(lambda m: m.mean(axis=0), metrics)
        grad_norm = optax.global_norm(grads)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        bad = jnp.where((state["bad_step"] < 0) & ~finite, state["step"], state["bad_step"])
        new_state = dict(params=params, rest=rest, opt=opt, step=state["step"] + 1, bad_step=bad)
        return new_state, {"loss": loss, "grad_norm": grad_norm, **metrics}

    return step_fn


def state_shardings(state: dict[str, Any], optimizer: optax.GradientTransformation, mesh: Mesh) -> Any:
    """Shardings for the training state: the optimizer's per-parameter buffers follow their
    parameter, everything else (counters, scalars) is replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    param_shardings = jax.tree.map(lambda x: x.sharding, state["params"])
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731 (multi_transform / masked states)
    opt = optax.tree_map_params(
        optimizer,
        lambda p, s: p if masked(p) else s,
        state["opt"],
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=masked,
    )
    return dict(
        params=param_shardings,
        rest=jax.tree.map(lambda x: x.sharding if hasattr(x, "sharding") else replicated, state["rest"]),
        opt=opt,
        step=replicated,
        bad_step=replicated,
    )


def init_state(model: nnx.Module, optimizer: optax.GradientTransformation, mesh: Mesh):
    """Split a (sharded) model into ``(graphdef, state, shardings)`` with a fresh optimizer."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    abstract = dict(
        params=params,
        rest=rest,
        opt=jax.eval_shape(optimizer.init, params),
        step=jnp.int32(0),
        bad_step=jnp.int32(-1),
    )
    shardings = state_shardings(abstract, optimizer, mesh)
    with jax.set_mesh(mesh):
        opt = jax.jit(optimizer.init, out_shardings=shardings["opt"])(params)
        rest = jax.device_put(rest, shardings["rest"])
    scalars = jax.device_put((jnp.int32(0), jnp.int32(-1)), shardings["step"])
    state = dict(params=params, rest=rest, opt=opt, step=scalars[0], bad_step=scalars[1])
    return graphdef, state, shardings


class _TermFlag:
    """Records SIGTERM while installed (main thread only); restores the old handler after."""

    def __init__(self):
        self.raised = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _check_finite(state: dict[str, Any]) -> None:
    bad = int(jax.device_get(state["bad_step"]))
    if bad >= 0:
        raise FloatingPointError(
            f"non-finite loss or gradient at step {bad}; stopping (checkpoints up to the last "
            f"cadence before it are intact)"
        )


def train(
    model_fn: Callable[[], nnx.Module],
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    data: Iterator[Any],
    config: TrainConfig,
    mesh: Mesh,
    eval_fn: Callable[[nnx.Module], dict[str, float]] | None = None,
    run_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model_fn()`` for ``config.steps`` steps (resuming from ``config.workdir``).

    ``data`` yields this process's slice of each global batch as numpy arrays and supports
    ``get_state``/``set_state`` (``core.data.batches``) for exact resume. ``run_config`` is the
    experiment's resolved config, saved with every checkpoint.
    """
    if config.steps < 0:
        raise ValueError(f"steps={config.steps}: expected a non-negative number of steps")
    if config.grad_accum < 1 or config.batch_size % config.grad_accum:
        raise ValueError(
            f"grad_accum={config.grad_accum}: expected a positive divisor of batch_size={config.batch_size}"
        )
    check_batch(mesh, config.batch_size)
    check_batch(mesh, config.batch_size // config.grad_accum, "batch_size / grad_accum")
    compute_dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.compute_dtype]

    model = create_sharded(model_fn, mesh)
    graphdef, state, shardings = init_state(model, optimizer, mesh)
    del model

    checkpointer = None
    resumed_from = None
    if config.workdir:
        checkpointer = ckpt.Checkpointer(
            f"{config.workdir}/checkpoints", keep=config.keep_checkpoints, async_save=config.async_checkpoint
        )
        if checkpointer.steps():
            resumed_from, state = checkpointer.restore(ckpt.abstract_like(state), data_iterator=data)

    step_fn = make_train_step(graphdef, loss_fn, optimizer, config.seed, config.grad_accum, compute_dtype)
    step_jit = jax.jit(step_fn, out_shardings=(shardings, None), donate_argnums=0)

    writer = MetricWriter(config.workdir or None, tensorboard=config.tensorboard)
    evals: list[dict[str, Any]] = []
    step = int(jax.device_get(state["step"]))
    preempted = False

    last_saved = resumed_from

    def save(at: int) -> None:
        nonlocal last_saved
        if checkpointer is not None and at != last_saved:
            _check_finite(state)
            checkpointer.save(at, state, data_iterator=data, config=run_config or {})
            last_saved = at

    in_flight: collections.deque = collections.deque()
    bar = tqdm(
        total=config.steps,
        initial=min(step, config.steps),
        disable=not config.progress or jax.process_index() != 0,
        desc="train",
        dynamic_ncols=True,
    )
    try:
        with _TermFlag() as term, jax.set_mesh(mesh):
            while step < config.steps:
                batch = global_batch(mesh, next(data))
                state, metrics = step_jit(state, batch)
                in_flight.append(metrics)
                if len(in_flight) > MAX_STEPS_IN_FLIGHT:
                    jax.block_until_ready(in_flight.popleft())
                step += 1
                bar.update(1)
                if config.log_every and (step % config.log_every == 0 or step == config.steps):
                    _check_finite(state)
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    writer.write(step, values)
                    bar.set_postfix(loss=f"{values['loss']:.4g}")
                if eval_fn is not None and config.eval_every and step % config.eval_every == 0:
                    result = {"step": step, **eval_fn(nnx.merge(graphdef, state["params"], state["rest"]))}
                    evals.append(result)
                    writer.write(step, {f"eval/{k}": v for k, v in result.items() if k != "step"})
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    save(step)
                if term.raised:
                    preempted = True
                    save(step)
                    break
            _check_finite(state)
            save(step)
    finally:
        bar.close()
        writer.close()
        if checkpointer is not None:
            checkpointer.close()
    model = nnx.merge(graphdef, state["params"], state["rest"])
    return TrainResult(
        model=model,
        state=state,
        step=step,
        history=writer.history,
        evals=evals,
        preempted=preempted,
        resumed_from=resumed_from,
    )

