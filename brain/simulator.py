"""A multi-subject fMRI simulator with a known ground truth (no real data can be downloaded here).

Generative model (all randomness from ``jax.random.key(config.seed)``; the same config gives the
same arrays). The *stimulus world* -- cluster centres, stimuli, the embedding ``A``, the images,
the shared latent's MLP and smooth map, the reference stimuli -- is drawn from
``config.world_seed`` when it is set (else from ``seed``), the subjects' own draws (sheet
positions, warps, tuning noise, private latents, ncsnr, trial order, noise, drift) always from
``seed``: two configs differing only in ``world_seed`` give the same subjects living in
independent worlds (the "subjects share nothing" control of ``benchmarks/brain_adaptation.py``).

- **Stimuli.** Concepts in clusters: features ``z = c_k + spread * noise`` around cluster centres;
  each stimulus is its own concept, so train and test concepts are disjoint, while clusters give
  hard negatives. The *frozen-embedding target* (CLIP stand-in) is ``e = normalize(A z)``. Small
  images are rendered from ``z`` (blobs whose positions, sizes and colours are fixed functions of
  ``z`` over a ``z``-coloured background) so the image metrics run end to end.
- **Shared latent** ``s = MLP_shared(z)`` (two tanh layers), the same function for every subject.
- **Subjects.** Subject ``j`` has ``V_j`` voxels at random anatomical positions on a unit sheet,
  indexed in a spatially ordered (row-snake) order, so contiguous index windows (adaptive
  pooling) are spatially local: the sheet is cut into ``sheet_rows`` rows (the same for every
  subject, so index fractions map to similar places across subjects) traversed in alternating
  directions. Its functional map is warped: voxel tuning to ``s`` is the shared
  smooth map (Gaussian radial basis over the sheet) sampled at the warped position, plus
  subject-specific tuning noise. A private component, tuning to a subject-specific latent
  ``u_j = tanh(Q_j z)`` through a subject-specific smooth map, is mixed in with weight ``rho``:
  ``drive = sqrt(1 - rho) * shared + sqrt(rho) * private`` (each standardised), so ``rho = 1``
  leaves nothing shared across subjects.
- **Responses.** A sparse heavy-tailed output nonlinearity ``relu(drive - threshold)^exponent``
  (``dense_gaussian=True`` keeps the linear drive: the negative control for pooling effects),
  standardised per voxel over a reference stimulus distribution, scaled by the voxel's noise-
  ceiling SNR (``ncsnr``, log-normal, with a fraction of signal-free voxels), plus unit Gaussian
  noise per trial; so each voxel's true ``ncsnr`` is known exactly.
- **Trials.** Every stimulus is shown ``n_repeats`` times in random order, split into sessions of
  ``trials_per_session`` trials; each session multiplies a voxel's response by a gain and adds an
  offset (session drift), removed by per-session z-scoring with train statistics
  (:func:`brain.trials.zscore_per_session`).
- Test stimuli are shared by all subjects (NSD's shared1000); training stimuli are disjoint across
  subjects unless ``shared_train=True``.

Calibration (:meth:`SimulatorConfig.calibrated`, NSD's trial counts, voxel counts of NSD subjects
1, 2, 5, 7 divided by 10): ridge from single-trial z-scored betas to ``e`` (alpha 1e3), scored by
300-way retrieval on repeat-averaged test trials, measured for subject 0 of seed 0 at 58 % / 60 %
(brain->image / image->brain) with all 40 sessions and 30 % / 31 % with one session of 750 trials;
ridge on the noise-free signals (the oracle) reaches 93 %. The notes ask for ~60-90 % and ~10-30 %
(for the best models); ``benchmarks/brain_ridge.py`` measures it.

Pooling (``tests/brain/test_brain_simulator.py``): with the default response model about a third
of the stimuli drive a voxel (median excess kurtosis of the noise-free signals ~12; ~0 in the
dense-Gaussian control) and neighbouring voxels correlate ~0.85, so averaging a window still
denoises well; a ridge read-out of voxels pooled 2:1 loses much less with max than with average
pooling on these responses (-0.04 in 100-way retrieval) than in the control (-0.12), but max does
not beat average outright. Adaptation regimes across ``n_target`` and ``rho``:
``benchmarks/brain_adaptation.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Simulator settings (see the module docstring for the role of each group of fields)."""

    seed: int = 0
    world_seed: int | None = None
    voxels: tuple[int, ...] = (1572, 1428, 1304, 1268)
    n_train_stimuli: int = 9000
    n_test_stimuli: int = 1000
    n_repeats: int = 3
    trials_per_session: int = 750
    shared_train: bool = False
    n_clusters: int = 16
    cluster_spread: float = 0.8
    feature_dim: int = 32
    embed_dim: int = 64
    shared_dim: int = 64
    private_dim: int = 24
    sheet_rows: int = 8
    map_resolution: int = 6
    map_width: float = 0.18
    rho: float = 0.2
    warp: float = 0.05
    tuning_noise: float = 0.3
    threshold: float = 0.3
    exponent: float = 1.5
    dense_gaussian: bool = False
    ncsnr_median: float = 0.6
    ncsnr_spread: float = 0.6
    null_fraction: float = 0.1
    drift_offset: float = 0.5
    drift_gain: float = 0.2
    image_size: int = 32
    n_blobs: int = 3
    n_reference: int = 2048

    def __post_init__(self):
        if not self.voxels or any(v < 4 for v in self.voxels):
            raise ValueError(f"voxels={self.voxels}: expected at least one subject with >= 4 voxels")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho={self.rho}: expected a weight in [0, 1]")
        for name in ("n_train_stimuli", "n_test_stimuli", "n_repeats", "trials_per_session", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected a positive integer")

    @classmethod
    def tiny(cls, **overrides) -> "SimulatorConfig":
        """Seconds on two CPU cores: 3 subjects of ~150-200 voxels, 400 + 100 stimuli."""
        base = dict(voxels=(200, 180, 160), n_train_stimuli=400, n_test_stimuli=100, trials_per_session=150,
                    image_size=16, n_reference=1024)
        return cls(**{**base, **overrides})

    @classmethod
    def calibrated(cls, **overrides) -> "SimulatorConfig":
        """The default scale: NSD subjects 1, 2, 5, 7 voxel counts / 10; NSD's trial counts (9000
        train + 1000 shared test stimuli x 3 repeats = 40 sessions of 750 trials per subject)."""
        return cls(**overrides)


@dataclasses.dataclass(frozen=True)
class SubjectRecording:
    """One simulated subject; ``stimulus`` indexes the rows of ``Simulation.features``,
    ``.embeddings`` and ``.images``."""

    subject: int
    positions: np.ndarray  # (V, 2) anatomical positions, spatially ordered
    responses: np.ndarray  # (trials, V) single-trial betas with session drift
    stimulus: np.ndarray  # (trials,) index into the simulation's stimuli
    session: np.ndarray  # (trials,)
    is_test: np.ndarray  # (trials,) bool
    ncsnr: np.ndarray  # (V,) true noise-ceiling SNR
    drift_gain: np.ndarray  # (sessions, V): responses = (signal + noise) * gain + offset
    drift_offset: np.ndarray  # (sessions, V)

    @property
    def n_voxels(self) -> int:
        return self.positions.shape[0]


def _name_hash(name: str) -> int:
    return zlib.crc32(name.encode()) % (2**31)


def _rbf_basis(points: jax.Array, resolution: int, width: float) -> jax.Array:
    grid = (jnp.arange(resolution) + 0.5) / resolution
    centres = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    d2 = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
    phi = jnp.exp(-d2 / (2 * width**2))
    return phi / jnp.linalg.norm(phi, axis=1, keepdims=True)


def _standardize(x: jax.Array, ref: jax.Array) -> jax.Array:
    return (x - ref.mean(0)) / (ref.std(0) + 1e-6)


class Simulation:
    """All stimuli and subject recordings of one :class:`SimulatorConfig`, built lazily per subject."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        c = config
        self._subject_root = jax.random.key(c.seed)
        world = jax.random.key(c.seed if c.world_seed is None else c.world_seed)
        k = lambda name: jax.random.fold_in(world, _name_hash(name))  # noqa: E731
        self._centres = jax.random.normal(k("centres"), (c.n_clusters, c.feature_dim))
        self._embed = jax.random.normal(k("embed"), (c.embed_dim, c.feature_dim)) / math.sqrt(c.feature_dim)
        self._w1 = jax.random.normal(k("w1"), (c.feature_dim, 64)) / math.sqrt(c.feature_dim)
        self._w2 = jax.random.normal(k("w2"), (64, c.shared_dim)) * 1.5 / math.sqrt(64)
        self._shared_map = jax.random.normal(k("shared_map"), (c.map_resolution**2, c.shared_dim))
        self._image_proj = jax.random.normal(k("image"), (c.feature_dim, 3 + 7 * c.n_blobs)) / math.sqrt(c.feature_dim)
        n_subject_train = c.n_train_stimuli * (1 if c.shared_train else len(c.voxels))
        n = c.n_test_stimuli + n_subject_train
        self.cluster = np.asarray(jax.random.randint(k("cluster"), (n,), 0, c.n_clusters))
        self.features = np.asarray(
            self._centres[self.cluster] + c.cluster_spread * jax.random.normal(k("features"), (n, c.feature_dim))
        )
        ref_cluster = jax.random.randint(k("ref_cluster"), (c.n_reference,), 0, c.n_clusters)
        self._reference = self._centres[ref_cluster] + c.cluster_spread * jax.random.normal(
            k("ref_features"), (c.n_reference, c.feature_dim)
        )

    # ----- stimuli -----
    @property
    def n_stimuli(self) -> int:
        return self.features.shape[0]

    @property
    def test_stimuli(self) -> np.ndarray:
        """Indices of the test stimuli (shared by all subjects)."""
        return np.arange(self.config.n_test_stimuli)

    def train_stimuli(self, subject: int) -> np.ndarray:
        c = self.config
        offset = c.n_test_stimuli + (0 if c.shared_train else subject * c.n_train_stimuli)
        return np.arange(offset, offset + c.n_train_stimuli)

    def embed(self, features) -> jax.Array:
        """The frozen-embedding target ``normalize(A z)`` (the CLIP stand-in)."""
        e = jnp.asarray(features) @ self._embed.T
        return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

    @cached_property
    def embeddings(self) -> np.ndarray:
        return np.asarray(self.embed(self.features))

    def render(self, features) -> np.ndarray:
        """Images ``(N, size, size, 3)`` in [0, 1] drawn from the features."""
        c = self.config
        p = jax.nn.sigmoid(2.0 * jnp.asarray(features) @ self._image_proj)
        bg, blobs = p[:, :3], p[:, 3:].reshape(-1, c.n_blobs, 7)
        grid = (jnp.arange(c.image_size) + 0.5) / c.image_size
        yy, xx = jnp.meshgrid(grid, grid, indexing="ij")
        img = jnp.broadcast_to(bg[:, None, None, :], (p.shape[0], c.image_size, c.image_size, 3))
        for b in range(c.n_blobs):
            cy, cx, size, r, g, bl, amp = (blobs[:, b, i][:, None, None] for i in range(7))
            sigma = 0.05 + 0.2 * size
            alpha = (0.4 + 0.6 * amp) * jnp.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            colour = jnp.concatenate([r, g, bl], -1).reshape(-1, 1, 1, 3)
            img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
        return np.asarray(img, np.float32)

    @cached_property
    def images(self) -> np.ndarray:
        return self.render(self.features)

    # ----- subjects -----
    def _globals(self) -> dict:
        return {"w1": self._w1, "w2": self._w2, "shared_map": self._shared_map, "reference": self._reference}

    def _subject_key(self, subject: int) -> jax.Array:
        if not 0 <= subject < len(self.config.voxels):
            raise ValueError(f"subject={subject}: expected 0 <= subject < {len(self.config.voxels)}")
        return jax.random.fold_in(self._subject_root, _name_hash(f"subject/{subject}"))

    def signal(self, subject: int, features) -> np.ndarray:
        """Noise-free standardised voxel signals ``(N, V)`` times each voxel's ncsnr (the oracle)."""
        key = self._subject_key(subject)
        feats = np.asarray(features, np.float32)
        chunk = 256  # fixed-size chunks: one compilation per subject whatever the number of stimuli
        padded = np.concatenate([feats, np.zeros((-len(feats) % chunk, feats.shape[1]), np.float32)])
        out = [
            np.asarray(_subject_signal(self._globals(), key, jnp.asarray(padded[i : i + chunk]), self.config,
                                       self.config.voxels[subject])[0])
            for i in range(0, len(padded), chunk)
        ]
        return np.concatenate(out)[: len(feats)]

    def subject(self, subject: int) -> SubjectRecording:
        """Simulate all trials of one subject (deterministic from the seed and subject index)."""
        c = self.config
        key = self._subject_key(subject)
        stimuli = np.concatenate([self.test_stimuli, self.train_stimuli(subject)])
        n_trials = len(stimuli) * c.n_repeats
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), n_trials))
        stimulus = np.tile(stimuli, c.n_repeats)[order]
        row_of = np.empty(self.n_stimuli, np.int32)
        row_of[stimuli] = np.arange(len(stimuli))
        session = np.arange(n_trials) // c.trials_per_session
        responses, positions, snr, gain, offset = _subject_trials(
            self._globals(), key, jnp.asarray(self.features[stimuli], jnp.float32), jnp.asarray(row_of[stimulus]),
            jnp.asarray(session), c, c.voxels[subject], int(session.max()) + 1,
        )
        return SubjectRecording(
            subject=subject,
            positions=np.asarray(positions),
            responses=np.asarray(responses, np.float32),
            stimulus=stimulus,
            session=session,
            is_test=stimulus < c.n_test_stimuli,
            ncsnr=np.asarray(snr),
            drift_gain=np.asarray(gain),
            drift_offset=np.asarray(offset),
        )


def _sheet_positions(key: jax.Array, n_voxels: int, n_rows: int) -> jax.Array:
    """Random positions, row-stratified (each row holds its share of voxels), in row-snake order."""
    row = np.repeat(np.arange(n_rows), np.diff((np.arange(n_rows + 1) * n_voxels) // n_rows))
    kx, ky = jax.random.split(key)
    x = jax.random.uniform(kx, (n_voxels,))
    y = (jnp.asarray(row) + jax.random.uniform(ky, (n_voxels,))) / n_rows
    along = jnp.where(jnp.asarray(row) % 2 == 0, x, 1.0 - x)
    order = jnp.lexsort((along, jnp.asarray(row)))
    return jnp.stack([x, y], -1)[order]


@functools.partial(jax.jit, static_argnames=("c", "n_voxels"))
def _subject_signal(g: dict, key: jax.Array, features: jax.Array, c: SimulatorConfig, n_voxels: int):
    """Per-subject tuning, then standardised noise-free signals; also positions and ncsnr."""
    k = lambda i: jax.random.fold_in(key, 100 + i)  # noqa: E731
    positions = _sheet_positions(k(0), n_voxels, c.sheet_rows)
    freq = jax.random.normal(k(1), (2, 2)) * 2.0
    phase = jax.random.uniform(k(2), (2,)) * 2 * jnp.pi
    warped = positions + c.warp * jnp.sin(2 * jnp.pi * positions @ freq + phase)
    tuning = _rbf_basis(warped, c.map_resolution, c.map_width) @ g["shared_map"]
    tuning = tuning + c.tuning_noise * jax.random.normal(k(3), tuning.shape)
    private_q = jax.random.normal(k(4), (c.feature_dim, c.private_dim)) * 1.5 / math.sqrt(c.feature_dim)
    private_map = jax.random.normal(k(5), (c.map_resolution**2, c.private_dim))
    private_tuning = _rbf_basis(positions, c.map_resolution, c.map_width) @ private_map
    private_tuning = private_tuning + c.tuning_noise * jax.random.normal(k(6), private_tuning.shape)
    snr = jnp.exp(jnp.log(c.ncsnr_median) + c.ncsnr_spread * jax.random.normal(k(7), (n_voxels,)))
    snr = jnp.where(jax.random.uniform(k(8), (n_voxels,)) < c.null_fraction, 0.0, snr)

    shared = lambda f: jnp.tanh(jnp.tanh(f @ g["w1"]) @ g["w2"]) @ tuning.T  # noqa: E731
    private = lambda f: jnp.tanh(f @ private_q) @ private_tuning.T  # noqa: E731

    def drive(f):
        ref = g["reference"]
        return math.sqrt(1 - c.rho) * _standardize(shared(f), shared(ref)) + math.sqrt(c.rho) * _standardize(
            private(f), private(ref)
        )

    nonlinear = (lambda d: d) if c.dense_gaussian else (lambda d: jax.nn.relu(d - c.threshold) ** c.exponent)
    out = nonlinear(drive(features))
    ref_out = nonlinear(drive(g["reference"]))
    return _standardize(out, ref_out) * snr, positions, snr


@functools.partial(jax.jit, static_argnames=("c", "n_voxels", "n_sessions"))
def _subject_trials(g, key, features, rows, session, c: SimulatorConfig, n_voxels: int, n_sessions: int):
    signal, positions, snr = _subject_signal(g, key, features, c, n_voxels)
    noise = jax.random.normal(jax.random.fold_in(key, 2), (rows.shape[0], n_voxels))
    gain = jnp.exp(c.drift_gain * jax.random.normal(jax.random.fold_in(key, 3), (n_sessions, n_voxels)))
    offset = c.drift_offset * jax.random.normal(jax.random.fold_in(key, 4), (n_sessions, n_voxels))
    return (signal[rows] + noise) * gain[session] + offset[session], positions, snr, gain, offset


def simulate(config: SimulatorConfig) -> tuple[Simulation, list[SubjectRecording]]:
    """Build the simulation and every subject's recording."""
    sim = Simulation(config)
    return sim, [sim.subject(j) for j in range(len(config.voxels))]
