"""Intrinsic-dimension estimators: ours (JAX) against scikit-dimension 0.5.0, side by side.

For every estimator: wall time of skdim and of ours (first call, compile included, and a second
call), the speed-up ``skdim / ours (second call)``, and both estimates with their relative
difference; then local (pointwise) TwoNN and MLE against skdim's Python loop over points. All in
float64 (``jax.enable_x64``) so the estimates can be identical.

Data: the 10-sphere of the benchmark suite (M1) isometrically rotated into R^d by a random
orthonormal map. quick: n = 2500, d = 20, local N = 400, L = 64. full: n = 2.5k, 20k, 100k and
d = 20, 128; local N = 20k, L = 128 (P24's L). skdim runs that need an N x N matrix (MADA) or
hours (its loops at n = 100k) are skipped and marked so. DANCo and ESS (minutes per skdim run)
are in the full form only; ``python -m benchmarks.geometry_skdim --sizes 100000 --estimators
TwoNN MLE --local-n 0 --tag n100k`` runs a chosen subset into tables of its own, ``--sizes``
with no value the local rows alone. TwoNN, MLE and the local estimates run on a mesh of one
host device per core (:func:`core_mesh`; ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
when run alone on 2 cores, as ``python -m benchmarks`` sets 8).

Run: ``python -c "import pathlib, benchmarks.geometry_skdim as b; b.run(True, pathlib.Path('results'))"``
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import platform
import time
import warnings

import jax
import numpy as np
from tqdm import tqdm

from core import tables
from geometry import danco, ess, fisher_separability, knn, local_id, manifolds
from geometry import intrinsic_dim as gid

TORCHID_NOTE = (
    "torchid (PyTorch port of skdim) reports 100-2700x over skdim on an H100; no GPU figure here "
    "unless the device column says so."
)


def embedded_sphere(n: int, d: int, seed: int = 0) -> np.ndarray:
    """M1 (10-sphere in R^11) rotated into R^d by a random orthonormal map (float64)."""
    x = np.asarray(manifolds.generate("M1_Sphere", n, seed), np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, x.shape[1])))
    return x @ q.T


def core_mesh() -> jax.sharding.Mesh | None:
    """A 'data' mesh over as many devices as the host has cores (fake CPU devices beyond that
    only queue on the same cores: local TwoNN at N = 20k, d = 20 took 2.0 s on 8 against 1.6 s
    on 2), or None with one device."""
    devices = jax.devices()[: os.cpu_count() or 1] if jax.default_backend() == "cpu" else jax.devices()
    return jax.sharding.Mesh(np.array(devices), ("data",)) if len(devices) > 1 else None


MESHED = ("TwoNN", "TwoNN-mle", "MLE")  # global estimators timed on core_mesh()


def _skdim_estimators(skdim, slow: bool = False):
    """Every estimator as (ours, skdim); ``slow`` adds DANCo and ESS (minutes per run in skdim).
    Those in :data:`MESHED` split their neighbour search over :func:`core_mesh`."""
    mesh = core_mesh()
    estimators = {
        "TwoNN": (lambda x: gid.twonn(x, mesh=mesh), lambda x: skdim.id.TwoNN().fit(x).dimension_),
        "TwoNN-mle": (lambda x: gid.twonn(x, method="mle", mesh=mesh),
                      lambda x: skdim.id.TwoNN(method="mle").fit(x).dimension_),
        "MLE": (lambda x: gid.mle(x, mesh=mesh), lambda x: skdim.id.MLE().fit(x).dimension_),
        "MOM": (lambda x: gid.mom(x), lambda x: skdim.id.MOM().fit(x).dimension_),
        "TLE": (lambda x: gid.tle(x), lambda x: skdim.id.TLE().fit(x).dimension_),
        "MADA": (lambda x: gid.mada(x), lambda x: skdim.id.MADA().fit(x).dimension_),
        "CorrInt": (lambda x: gid.corr_int(x), lambda x: skdim.id.CorrInt().fit(x).dimension_),
        "lPCA-FO": (lambda x: gid.lpca(x, "FO"), lambda x: skdim.id.lPCA().fit(x).dimension_),
        "MiND_MLk": (lambda x: gid.mind_ml(x), lambda x: skdim.id.MiND_ML().fit(x).dimension_),
        "GRIDE": (lambda x: gid.gride(x)[0], lambda x: skdim.id.GRIDE().fit(x).dimension_),
        "FisherS": (
            lambda x: fisher_separability.fisher_s_dimension(x),
            lambda x: skdim.id.FisherS().fit(x).dimension_,
        ),
    }
    if slow:
        estimators["DANCo"] = (lambda x: danco.danco(x).dimension,
                               lambda x: skdim.id.DANCo(random_state=0).fit(x).dimension_)
        estimators["ESS"] = (lambda x: ess.ess(x), lambda x: skdim.id.ESS().fit(x).dimension_)
    return estimators


def _skip_reference(name: str, n: int) -> str | None:
    if name == "MADA" and n > 20000:
        return "skdim needs the N x N distance matrix"
    if name in ("TLE", "CorrInt", "MOM", "DANCo") and n > 20000:
        return "skdim takes too long (Python loop / N^2 pairs)"
    if name == "ESS" and n > 2500:
        return "skdim takes too long (Python loop over points: 140 s at n = 2500)"
    return None


DANCO_NOTE = ("differs by design: skdim caps the calibration's MiND at k instead of 2d + 5; "
              "danco(..., skdim_cap=True, random_state=0) reproduces it")


def _skip_ours(name: str, n: int) -> str | None:
    if name == "DANCo" and n > 20000:
        return "calibration on n-point balls of every candidate dimension: hours on CPU"
    return None


def _timed(fn, *args):
    start = time.perf_counter()
    value = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, value


def _rel(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


def _global_rows(skdim, sizes, dims, slow: bool, only: tuple[str, ...] = ()):
    rows = []
    estimators = _skdim_estimators(skdim, slow)
    if unknown := set(only) - set(estimators):
        raise ValueError(f"estimators={sorted(unknown)}: expected names from {sorted(estimators)}")
    estimators = {name: fns for name, fns in estimators.items() if not only or name in only}
    mesh = core_mesh()
    mesh_size = 1 if mesh is None else mesh.size
    jobs = [(name, n, d) for n in sizes for d in dims for name in estimators]
    for name, n, d in tqdm(jobs, desc="global estimators"):
        x = embedded_sphere(n, d)
        ours_fn, ref_fn = estimators[name]
        if skip := _skip_ours(name, n):
            rows.append({"estimator": name, "n": n, "d": d, "note": skip})
            continue
        first, _ = _timed(ours_fn, x)
        ours_s, ours = _timed(ours_fn, x)
        row = {"estimator": name, "n": n, "d": d, "devices": mesh_size if name in MESHED else 1,
               "ours_first_s": first, "ours_s": ours_s, "ours": float(ours)}
        skip = _skip_reference(name, n)
        if skip is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref_s, ref = _timed(ref_fn, x)
            row.update(skdim_s=ref_s, skdim=float(ref), speedup=ref_s / ours_s, rel_diff=_rel(ours, ref))
            if name == "DANCo":
                row["note"] = DANCO_NOTE
        else:
            row["note"] = skip
        rows.append(row)
    return rows


def _local_rows(skdim, n: int, n_neighbors: int, d: int):
    from skdim._commonfuncs import asPointwise

    x = embedded_sphere(n, d, seed=1)
    mesh = core_mesh()
    rows = []
    cases = {
        "local TwoNN": (
            lambda mesh: local_id.local_twonn(x, n_neighbors, mesh=mesh),
            lambda: skdim.id.TwoNN().fit_pw(x, n_neighbors=n_neighbors).dimension_pw_,
        ),
        "local MLE (k=20)": (
            lambda mesh: local_id.local_mle(x, n_neighbors, mesh=mesh),
            lambda: asPointwise(x, skdim.id.MLE(), n_neighbors=n_neighbors),
        ),
    }
    neighbours = lambda: knn.knn(x, n_neighbors, mesh=mesh)  # noqa: E731
    _timed(neighbours)
    knn_s, _ = _timed(neighbours)
    for name, (ours_fn, ref_fn) in tqdm(cases.items(), desc="local estimates"):
        _timed(ours_fn, None)
        one_device_s, _ = _timed(ours_fn, None)
        first, _ = _timed(ours_fn, mesh)
        ours_s, ours = _timed(ours_fn, mesh)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_s, ref = _timed(ref_fn)
        ours, ref = np.asarray(ours), np.asarray(ref)
        rows.append(
            {
                "estimator": name,
                "n": n,
                "L": n_neighbors,
                "d": d,
                "devices": 1 if mesh is None else mesh.size,
                "skdim_s": ref_s,
                "ours_first_s": first,
                "ours_s": ours_s,
                "speedup": ref_s / ours_s,
                "ours_knn_s": knn_s,
                "ours_1_device_s": one_device_s,
                "speedup_1_device": ref_s / one_device_s,
                "skdim_mean": float(np.mean(ref)),
                "ours_mean": float(np.mean(ours)),
                "max_rel_diff": float(np.max(np.abs(ours - ref) / np.abs(ref))),
            }
        )
    return rows


def run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]:
    if quick:
        return measure((2500,), (20,), 400, 64, False, "quick", results_dir)
    return measure((2500, 20000, 100000), (20, 128), 20000, 128, True, "full", results_dir)


def measure(sizes, dims, local_n: int, local_l: int, slow: bool, scale: str,
            results_dir: pathlib.Path, estimators: tuple[str, ...] = (),
            tag: str = "") -> list[pathlib.Path]:
    """Global estimators (all, or those named in ``estimators``) at every (n, d) of ``sizes`` x
    ``dims`` (``slow``: DANCo and ESS too) and the local estimates at ``local_n`` points with
    ``local_l`` neighbours at every d (none when ``local_n`` is 0); writes the tables, named
    ``geometry_skdim_{global,local}`` + ``_tag`` when ``tag`` is given (no global table when
    ``sizes`` is empty)."""
    import skdim

    device = f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}); {platform.processor() or platform.machine()}"
    with jax.enable_x64(True):
        global_rows = _global_rows(skdim, sizes, dims, slow, estimators)
        local_rows = [row for d in dims for row in _local_rows(skdim, local_n, local_l, d)
                      ] if local_n else []
    notes = (
        f"{scale} scale (n in {list(sizes) or [local_n]}, d in {list(dims)}), float64, device: {device}; skdim "
        f"0.5.0 on the same machine in the same "
        f"process. speedup = skdim_s / ours_s (ours_s: second call; ours_first_s includes "
        f"compilation). Data: M1 10-sphere rotated into R^d. {TORCHID_NOTE} The float32 N x N "
        f"Gram matrix alone (brute force's matmul, in our kNN's query blocks): "
        f"{_gram_floors(sizes or ((local_n,) if local_n else ()), dims)}. `devices` > 1: ours on a "
        f"'data' mesh of that many host devices, one per core."
    )
    suffix = f"_{tag}" if tag else ""
    paths = [] if not global_rows else [
        tables.write_table(
            tables.Table(
                name="geometry_skdim_global" + suffix,
                title="Global ID estimators: ours (JAX) vs scikit-dimension",
                columns=["estimator", "n", "d", "devices", "skdim_s", "ours_first_s", "ours_s", "speedup", "skdim", "ours",
                         "rel_diff", "note"],
                rows=global_rows,
                notes=notes,
            ),
            results_dir,
            plot=lambda ax: _plot_speedups(ax, global_rows),
        ),
    ]
    if local_rows:
        paths.append(tables.write_table(
            tables.Table(
                name="geometry_skdim_local" + suffix,
                title="Local (pointwise) ID: ours (vmap) vs scikit-dimension's loop over points",
                columns=["estimator", "n", "L", "d", "devices", "skdim_s", "ours_first_s", "ours_s", "speedup",
                         "ours_knn_s", "ours_1_device_s", "speedup_1_device", "skdim_mean", "ours_mean", "max_rel_diff"],
                rows=local_rows,
                notes=notes + (
                    " Local rows: neighbour search and neighbourhoods split over the mesh; "
                    "ours_knn_s: our exact L-nearest-neighbour search alone (part of ours_s), so "
                    "skdim_s / ours_knn_s bounds the speed-up any in-neighbourhood work allows; "
                    "ours_1_device_s on one device; skdim runs with its default n_jobs=1."),
            ),
            results_dir,
            plot=lambda ax: _plot_local_speedups(ax, local_rows),
        ))
    return paths


def _gram_floors(sizes, dims) -> str:
    """Seconds for the float32 N x N Gram matrix at every (n, d), in the query blocks of
    :func:`geometry.knn.knn` (default block size), each block reduced to its row minima so
    nothing is stored: the matmul part of our exact kNN alone."""
    floors = []
    for n in sizes:
        for d in dims:
            x = jax.numpy.asarray(embedded_sphere(n, d), jax.numpy.float32)
            block = min(knn.default_block_size(n), n)
            blocks = x[: n - n % block].reshape(-1, block, d)
            gram = jax.jit(lambda blocks, x: jax.lax.map(lambda q: (q @ x.T).min(axis=1), blocks))
            jax.block_until_ready(gram(blocks, x))
            seconds, _ = _timed(gram, blocks, x)
            floors.append(f"n {n} d {d}: {seconds * n / (blocks.shape[0] * block):.3g} s")  # scaled to all n rows
    return ", ".join(floors)


def _plot_speedups(ax, rows):
    done = [r for r in rows if "speedup" in r]
    labels = [f"{r['estimator']}\nn={r['n']} d={r['d']}" for r in done]
    ax.barh(range(len(done)), [r["speedup"] for r in done])
    ax.set_yticks(range(len(done)), labels, fontsize=6)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("speed-up over skdim (x)")


def _plot_local_speedups(ax, rows):
    """Speed-up over skdim per local row: on the mesh, on one device, and the kNN-alone bound."""
    labels = [f"{r['estimator']}\nd={r['d']}" for r in rows]
    at = np.arange(len(rows))
    ax.bar(at - 0.2, [r["speedup"] for r in rows], 0.4, label=f"ours, {rows[0]['devices']} devices")
    ax.bar(at + 0.2, [r["speedup_1_device"] for r in rows], 0.4, label="ours, 1 device")
    bounds = [r["skdim_s"] / r["ours_knn_s"] for r in rows]
    ax.plot(at, bounds, "k_", markersize=30, label="bound: skdim / our kNN alone")
    ax.axhline(20.0, color="tab:red", lw=0.8, ls="--", label="issue goal 20x")
    ax.set_xticks(at, labels, fontsize=7)
    ax.set_ylim(0, 1.45 * max(*bounds, 20.0))
    ax.set_ylabel("speed-up over skdim (x)")
    ax.legend(fontsize=7, loc="upper center", ncol=2)


@dataclasses.dataclass(frozen=True)
class Args:
    """Ours vs scikit-dimension at chosen sizes (the full form is n 2.5k/20k/100k, d 20/128)."""

    sizes: tuple[int, ...] = (2500, 20000)
    dims: tuple[int, ...] = (20, 128)
    local_n: int = 20000
    local_l: int = 128
    slow: bool = True  # DANCo and ESS too
    estimators: tuple[str, ...] = ()  # all when empty
    tag: str = ""  # table names get "_tag"
    results_dir: pathlib.Path = pathlib.Path("results")


if __name__ == "__main__":
    import tyro

    args = tyro.cli(Args)
    measure(args.sizes, args.dims, args.local_n, args.local_l, args.slow,
            "custom", args.results_dir, args.estimators, args.tag)
