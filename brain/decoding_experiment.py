"""Cross-subject decoding on the simulator, trained through ``core``: data, models, evaluation.

Data: per simulated subject, single-trial betas z-scored per session with train statistics
(:func:`brain.trials.zscore_per_session`), the frozen-embedding target (CLIP stand-in) per trial;
test trials averaged over their repeats. :class:`MultiSubjectSource` serves grain examples holding
one trial of *every* subject in the run, zero-padded to the largest voxel count:
``voxels (S, V_max)``, ``target (S, D)``; so every batch has the same static shape
``(B, S, V_max)``, is data-sharded along ``B`` by the training loop, and each model slices
subject ``s``'s column to its own voxel count (MindBridge's chunked per-subject batches).

Models (``DecodingConfig.model``): ``mindbridge`` (P09), ``adapters`` (P02), ``mindeye2``
(MindEye2-style) and ``per_subject`` (independent networks, the baseline). Evaluation: per
subject, n-way retrieval (MindEye's 300-way protocol, 30 draws, both directions) and 2-way
identification on the predicted embeddings; means over subjects.

New-subject adaptation (:func:`adapt`): ``scratch`` (a per-subject network on the target's trials
only), ``reset_tuning`` (P09: pretrained MindBridge, target embedder/builder re-initialised,
tuned with the shared translator, sources in every batch), ``adapters_only`` (P02: new adapter,
everything else frozen), ``new_linear_only`` (MindEye2-style: new linear map, everything else
frozen), ``full_finetune`` (MindEye2's own protocol: new linear map, every shared parameter tuned
on the target's trials). Frozen parameters get exactly zero updates and stay bitwise unchanged.
:func:`train_subjects` and :func:`train_adapted` are the same without the evaluation.

    python -m brain.decoding_experiment tiny --model mindbridge --train.workdir runs/mb
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from brain.metrics import retrieval, two_way_identification
from brain.models import adapters, mindbridge, mindeye2, per_subject
from brain.models.blocks import reset_subject_modules
from brain.simulator import Simulation, SimulatorConfig
from brain.trials import average_repeats, zscore_per_session
from core import config as config_lib
from core import data as data_lib
from core import mesh as mesh_lib
from core.train import TrainConfig, TrainResult, train

ModelKind = Literal["mindbridge", "adapters", "mindeye2", "per_subject"]
AdaptMethod = Literal["scratch", "reset_tuning", "adapters_only", "new_linear_only", "full_finetune"]
MODEL_KINDS = ("mindbridge", "adapters", "mindeye2", "per_subject")


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
    """One decoding run. ``subjects=()`` uses every simulated subject; ``n_train=0`` every
    training trial (else the first ``n_train`` trials in recording order, i.e. whole sessions)."""

    simulator: SimulatorConfig = SimulatorConfig.tiny()
    model: ModelKind = "mindbridge"
    subjects: tuple[int, ...] = ()
    n_train: int = 0
    hidden: int = 128
    n_blocks: int = 2
    pooled: int = 128
    bottleneck: int = 32
    pool_kind: Literal["max", "avg", "resize"] = "max"
    embedder_dropout: float = 0.5  # MindBridge's, after its per-subject embedder
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    mse_mult: float | None = None  # MindBridge's; None = the reference's balance for the target width
    rec_mult: float = 1.0
    cyc_mult: float = 1.0
    mixco_fraction: float = 1 / 3
    n_way: int = 300
    train: TrainConfig = TrainConfig(steps=300, batch_size=32, log_every=50, progress=False, tensorboard=False)
    mesh: mesh_lib.MeshConfig = mesh_lib.MeshConfig()


PRESETS = {
    "tiny": ("3 subjects of 160-200 voxels, hidden 128: seconds to a minute on 2 CPU cores",
             DecodingConfig(n_way=100)),
    "paper": (
        ("calibrated simulator (NSD subj 1/2/5/7 voxel counts / 10, 40 sessions); MindBridge's "
         "hidden 2048, 4 blocks, batch 64 (paper 50), lr 1.5e-4 (pooled 1024 for ~1300-1600 voxels)"),
        DecodingConfig(
            simulator=SimulatorConfig.calibrated(), hidden=2048, n_blocks=4, pooled=1024, bottleneck=128,
            learning_rate=1.5e-4, train=TrainConfig(steps=20000, batch_size=64, log_every=200,
                                                     checkpoint_every=2000, tensorboard=False),
        ),
    ),
}


@dataclasses.dataclass(frozen=True)
class SubjectData:
    subject: int
    train_voxels: np.ndarray  # (n_train, V) single trials, z-scored per session
    train_target: np.ndarray  # (n_train, D)
    test_voxels: np.ndarray  # (n_test, V) repeat-averaged
    test_target: np.ndarray  # (n_test, D)

    @property
    def n_voxels(self) -> int:
        return self.train_voxels.shape[1]


def subject_data(sim: Simulation, subject: int, n_train: int = 0) -> SubjectData:
    """One simulated subject's z-scored trials and targets (first ``n_train`` training trials)."""
    if n_train < 0:
        raise ValueError(f"n_train={n_train}: expected 0 (all trials) or a positive count")
    rec = sim.subject(subject)
    x = zscore_per_session(rec.responses, rec.session, ~rec.is_test)
    rows = np.flatnonzero(~rec.is_test)
    rows = rows[:n_train] if n_train else rows
    ids, test_x = average_repeats(x[rec.is_test], rec.stimulus[rec.is_test])
    emb = sim.embeddings
    return SubjectData(subject, x[rows], emb[rec.stimulus[rows]], test_x, emb[ids])


class MultiSubjectSource:
    """grain source: example ``i`` holds trial ``perm_s[i mod n_s]`` of each subject ``s``
    (fixed per-subject permutations from ``seed``), voxels zero-padded to ``V_max``."""

    def __init__(self, datas: Sequence[SubjectData], seed: int = 0):
        if not datas:
            raise ValueError("datas: expected at least one subject")
        self.datas = list(datas)
        self.max_voxels = max(d.n_voxels for d in datas)
        rng = np.random.default_rng(seed)
        self.perms = [rng.permutation(len(d.train_voxels)) for d in datas]

    def __len__(self) -> int:
        return max(len(p) for p in self.perms)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        voxels = np.zeros((len(self.datas), self.max_voxels), np.float32)
        targets = []
        for j, (d, perm) in enumerate(zip(self.datas, self.perms)):
            row = perm[index % len(perm)]
            voxels[j, : d.n_voxels] = d.train_voxels[row]
            targets.append(d.train_target[row])
        return {"voxels": voxels, "target": np.stack(targets).astype(np.float32)}


def model_config(config: DecodingConfig, kind: ModelKind, voxels: tuple[int, ...], out_dim: int):
    if kind == "mindbridge":
        return mindbridge.MindBridgeConfig(voxels, out_dim, pooled=config.pooled, hidden=config.hidden,
                                           n_blocks=config.n_blocks, bottleneck=config.bottleneck,
                                           pool_kind=config.pool_kind, embedder_dropout=config.embedder_dropout)
    if kind == "adapters":
        return adapters.AdapterConfig(voxels, out_dim, unified=config.hidden, n_blocks=config.n_blocks)
    if kind in ("mindeye2", "per_subject"):
        return mindeye2.MindEye2Config(voxels, out_dim, hidden=config.hidden, n_blocks=config.n_blocks)
    raise ValueError(f"model={kind!r}: expected one of {MODEL_KINDS}")


MODEL_CLASSES = {"mindbridge": mindbridge.MindBridge, "adapters": adapters.AdapterDecoder,
                 "mindeye2": mindeye2.MindEye2, "per_subject": per_subject.PerSubjectModels}
FRONT_ENDS = {"mindbridge": mindbridge.FRONT_END, "adapters": adapters.FRONT_END, "mindeye2": mindeye2.FRONT_END}


def make_model_fn(config: DecodingConfig, kind: ModelKind, voxels: tuple[int, ...], out_dim: int) -> Callable:
    cfg = model_config(config, kind, voxels, out_dim)
    return lambda: MODEL_CLASSES[kind](cfg, nnx.Rngs(config.train.seed))


def make_loss_fn(config: DecodingConfig, kind: ModelKind, subjects: tuple[int, ...], cycle_target: int | None = None):
    """``loss_fn(model, batch, key)`` for a batch whose columns are ``subjects``."""
    steps = config.train.steps
    if kind == "mindbridge":
        cyc = config.cyc_mult if len(subjects) > 1 else 0.0
        return lambda m, b, k: mindbridge.mindbridge_loss(m, b, k, subjects, mse_mult=config.mse_mult,
                                                          rec_mult=config.rec_mult, cyc_mult=cyc,
                                                          cycle_target=cycle_target)
    if kind == "adapters":
        return lambda m, b, k: adapters.adapter_loss(m, b, k, subjects)
    if kind == "mindeye2":
        return lambda m, b, k: mindeye2.mindeye2_loss(m, b, k, subjects, total_steps=steps,
                                                      mixco_fraction=config.mixco_fraction)
    if kind == "per_subject":
        return lambda m, b, k: per_subject.per_subject_loss(m, b, k, subjects, total_steps=steps,
                                                            mixco_fraction=config.mixco_fraction)
    raise ValueError(f"model={kind!r}: expected one of {MODEL_KINDS}")


def make_optimizer(config: DecodingConfig, trainable: Callable | None = None) -> optax.GradientTransformation:
    """AdamW; with ``trainable`` (``params -> bool tree``) the other parameters get exactly zero
    updates (weight decay included), so they stay bitwise unchanged. The mask is applied after
    AdamW rather than through ``optax.multi_transform``, whose masked state ``core.train``'s
    sharding of the optimizer state does not map."""
    adamw = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    if trainable is None:
        return adamw

    def freeze(updates, state, params=None):
        mask = trainable(updates)
        return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates, mask), state

    return optax.chain(adamw, optax.GradientTransformation(lambda params: optax.EmptyState(), freeze))


def predict(model: nnx.Module, voxels: np.ndarray, subject: int) -> np.ndarray:
    """Predicted embeddings (deterministic: no dropout), jitted per subject."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x, subject))
    return np.asarray(fn(state, jnp.asarray(voxels, jnp.float32)))


def evaluate(model: nnx.Module, datas: Sequence[SubjectData], n_way: int = 300, seed: int = 0) -> dict[str, float]:
    """Per subject and mean: n-way retrieval top-1 both ways (30 draws) and 2-way identification."""
    out: dict[str, list[float]] = {"brain_to_image": [], "image_to_brain": [], "two_way": []}
    for d in datas:
        pred = predict(model, d.test_voxels, d.subject)
        ret = retrieval(pred, d.test_target, jax.random.key(seed + d.subject), n_way=min(n_way, len(pred)))
        out["brain_to_image"].append(float(ret["brain_to_image"]["mean"]))
        out["image_to_brain"].append(float(ret["image_to_brain"]["mean"]))
        out["two_way"].append(float(two_way_identification(pred, d.test_target)))
    result = {name: float(np.mean(v)) for name, v in out.items()}
    for name, values in out.items():
        result.update({f"{name}/subject{d.subject}": v for d, v in zip(datas, values)})
    return result


def train_model(config: DecodingConfig, model_fn: Callable, loss_fn: Callable, datas: Sequence[SubjectData],
                optimizer: optax.GradientTransformation | None = None, mesh=None) -> TrainResult:
    """Train ``model_fn()`` through ``core.train`` on the multi-subject batches of ``datas``."""
    mesh = mesh_lib.make_mesh(config.mesh) if mesh is None else mesh
    source = MultiSubjectSource(datas, seed=config.train.seed)
    iterator = data_lib.batches(source, config.train.batch_size, seed=config.train.seed)
    return train(model_fn, loss_fn, optimizer or make_optimizer(config), iterator, config.train, mesh,
                 run_config=config_lib.to_dict(config))


def load_subjects(config: DecodingConfig, sim: Simulation | None = None, n_train: dict[int, int] | None = None):
    sim = Simulation(config.simulator) if sim is None else sim
    subjects = config.subjects or tuple(range(len(config.simulator.voxels)))
    n_train = n_train or {}
    return [subject_data(sim, s, n_train.get(s, config.n_train)) for s in subjects]


def train_subjects(config: DecodingConfig, datas: Sequence[SubjectData], mesh=None) -> TrainResult:
    """Train ``config.model`` on every subject of ``datas`` (no evaluation)."""
    subjects = tuple(d.subject for d in datas)
    voxels = tuple(config.simulator.voxels)
    out_dim = datas[0].train_target.shape[1]
    return train_model(config, make_model_fn(config, config.model, voxels, out_dim),
                       make_loss_fn(config, config.model, subjects), datas, mesh=mesh)


def run(config: DecodingConfig, datas: Sequence[SubjectData] | None = None, mesh=None):
    """Train ``config.model`` on every subject of the run; returns ``(TrainResult, metrics)``."""
    datas = load_subjects(config) if datas is None else datas
    result = train_subjects(config, datas, mesh=mesh)
    return result, evaluate(result.model, datas, config.n_way)


def adapt(
    config: DecodingConfig,
    method: AdaptMethod,
    target: SubjectData,
    sources: Sequence[SubjectData] = (),
    pretrained: nnx.Module | None = None,
    mesh=None,
):
    """Adapt to a new subject ``target`` (its ``train_*`` arrays are the n_target trials).

    ``pretrained`` is a model of the method's family trained on ``sources`` with a slot for the
    target's voxel count (``config.simulator.voxels``); ``scratch`` needs none. Returns
    ``(TrainResult, metrics on the target's test set)``.
    """
    result = train_adapted(config, method, target, sources, pretrained, mesh)
    return result, evaluate(result.model, [target], config.n_way)


def train_adapted(
    config: DecodingConfig,
    method: AdaptMethod,
    target: SubjectData,
    sources: Sequence[SubjectData] = (),
    pretrained: nnx.Module | None = None,
    mesh=None,
) -> TrainResult:
    """The training part of :func:`adapt` (no evaluation)."""
    voxels, out_dim, t = tuple(config.simulator.voxels), target.train_target.shape[1], target.subject
    if method == "scratch":
        model_fn = make_model_fn(config, "per_subject", voxels, out_dim)
        return train_model(config, model_fn, make_loss_fn(config, "per_subject", (t,)), [target], mesh=mesh)
    kind, trainable = {
        "reset_tuning": ("mindbridge", mindbridge.reset_tuning_trainable(t)),
        "adapters_only": ("adapters", adapters.new_adapter_trainable(t)),
        "new_linear_only": ("mindeye2", mindeye2.new_linear_trainable(t)),
        "full_finetune": ("mindeye2", mindeye2.full_finetune_trainable(t)),
    }.get(method, (None, None))
    if kind is None:
        raise ValueError(f"method={method!r}: expected one of {AdaptMethod.__args__}")
    if not isinstance(pretrained, MODEL_CLASSES[kind]):
        raise TypeError(f"pretrained: method {method!r} needs a trained {MODEL_CLASSES[kind].__name__}, "
                        f"got {type(pretrained).__name__}")
    if any(s.subject == t for s in sources):
        raise ValueError(f"sources: the target subject {t} must not be among the sources")
    pretrained_state = nnx.state(pretrained)

    def model_fn():
        model = MODEL_CLASSES[kind](pretrained.config, nnx.Rngs(config.train.seed))
        nnx.update(model, pretrained_state)
        reset_subject_modules(model, t, FRONT_ENDS[kind], nnx.Rngs(config.train.seed + 1))
        return model

    columns = list(sources) + [target] if method == "reset_tuning" else [target]
    subjects = tuple(d.subject for d in columns)
    loss_fn = make_loss_fn(config, kind, subjects, cycle_target=t if method == "reset_tuning" else None)
    return train_model(config, model_fn, loss_fn, columns, make_optimizer(config, trainable), mesh=mesh)


def main(argv: list[str] | None = None) -> int:
    config = config_lib.cli(PRESETS, args=argv, description=__doc__.splitlines()[0])
    _, metrics = run(config)
    print({k: round(v, 4) for k, v in metrics.items() if "/" not in k})
    return 0


if __name__ == "__main__":
    sys.exit(main())
