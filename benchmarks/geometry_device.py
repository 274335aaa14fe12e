"""Intrinsic dimension and DSE at scale: ours on the default JAX device (a GPU when there is
one) and on the host CPU, against scikit-dimension 0.5.0 and the official dse-dsmi on the host CPU.

Rows: TwoNN and MLE at n = 20k and 100k (d = 20, 128); local TwoNN / local MLE at N = 20k,
L = 128 (P24's setting); DSE at N = 1k, 5k, 10k. All float64. skdim's loops over points (local
estimates) are timed on a prefix of the points with the full data's neighbour lists and scaled
linearly to N (their per-point cost is constant); such rows say "extrapolated". quick: n = 2500,
local N = 500, DSE N = 500 (checks that the script runs).

Run: ``python -c "import pathlib, benchmarks.geometry_device as b; b.run(False, pathlib.Path('results'))"``
"""

from __future__ import annotations

import os
import pathlib
import time
import warnings

import jax
import numpy as np
from tqdm import tqdm

import core.tables as tables
from benchmarks.geometry_skdim import TORCHID_NOTE, _rel, _timed, embedded_sphere
from geometry import dse as dse_mod
from geometry import intrinsic_dim as gid
from geometry import local_id

# Wall time after which the reference libraries are no longer run (full form); the GPU session
# script lowers it to fit its device time.
REFERENCE_BUDGET_S = float(os.environ.get("GEOMETRY_REFERENCE_BUDGET_S", "240"))


def _device_label(device) -> str:
    return f"{device.platform}:{device.device_kind}"


def _global_rows(skdim, sizes, dims, cpu, accel, started):
    rows = []
    cases = {
        "TwoNN": (lambda x: gid.twonn(x), lambda x: skdim.id.TwoNN().fit(x).dimension_),
        "MLE": (lambda x: gid.mle(x), lambda x: skdim.id.MLE().fit(x).dimension_),
    }
    for n in sizes:
        for d in dims:
            x = embedded_sphere(n, d)
            for name, (ours_fn, ref_fn) in tqdm(cases.items(), desc=f"n={n} d={d}"):
                row = {"estimator": name, "n": n, "d": d}
                with jax.default_device(accel):
                    _timed(ours_fn, x)
                    row["ours_accel_s"], ours = _timed(ours_fn, x)
                row["ours"] = float(ours)
                if accel != cpu and n <= 20000:
                    with jax.default_device(cpu):
                        _timed(ours_fn, x)
                        row["ours_cpu_s"], _ = _timed(ours_fn, x)
                if (n <= 20000 or d <= 20) and time.perf_counter() - started < REFERENCE_BUDGET_S:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        row["skdim_cpu_s"], ref = _timed(ref_fn, x)
                    row.update(skdim=float(ref), rel_diff=_rel(ours, ref), speedup_accel=row["skdim_cpu_s"] / row["ours_accel_s"])
                    if "ours_cpu_s" in row:
                        row["speedup_cpu"] = row["skdim_cpu_s"] / row["ours_cpu_s"]
                else:
                    row["note"] = "skdim skipped (time budget / N^2 sort at d > 25)"
                rows.append(row)
    return rows


def _local_rows(skdim, n, n_neighbors, prefix, accel, started):
    from skdim._commonfuncs import asPointwise, get_nn

    x = embedded_sphere(n, 20, seed=1)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        knn_s, _ = _timed(lambda: get_nn(x, k=n_neighbors))
        _, knn_idx = get_nn(x, k=n_neighbors)
    cases = {
        "local TwoNN": (
            lambda: local_id.local_twonn(x, n_neighbors),
            lambda rows_idx: skdim.id.TwoNN().fit_pw(x, precomputed_knn=rows_idx).dimension_pw_,
        ),
        "local MLE (k=20)": (
            lambda: local_id.local_mle(x, n_neighbors),
            lambda rows_idx: asPointwise(x, skdim.id.MLE(), precomputed_knn=rows_idx),
        ),
    }
    for name, (ours_fn, ref_fn) in cases.items():
        with jax.default_device(accel):
            _timed(ours_fn)
            ours_s, ours = _timed(ours_fn)
        ours = np.asarray(ours)
        row = {"estimator": name, "n": n, "L": n_neighbors, "ours_accel_s": ours_s, "ours_mean": float(ours.mean())}
        if time.perf_counter() - started < REFERENCE_BUDGET_S:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                part_s, ref = _timed(ref_fn, knn_idx[:prefix])
            ref = np.asarray(ref)
            skdim_s = knn_s + part_s * n / prefix
            row.update(
                skdim_cpu_s=skdim_s,
                speedup_accel=skdim_s / ours_s,
                skdim_mean_prefix=float(ref.mean()),
                max_rel_diff_prefix=float(np.max(np.abs(ours[:prefix] - ref) / np.abs(ref))),
                note=f"skdim timed on {prefix} of {n} points (+ its full kNN), extrapolated",
            )
        rows.append(row)
    return rows


def _dse_rows(sizes, accel, started):
    from dse_dsmi import diffusion_spectral_entropy

    rows = []
    for n in sizes:
        x = np.random.default_rng(n).normal(size=(n, 64))
        with jax.default_device(accel):
            _timed(lambda: dse_mod.dse(x))
            ours_s, ours = _timed(lambda: dse_mod.dse(x))
        row = {"n": n, "ours_accel_s": ours_s, "ours": float(ours)}
        if time.perf_counter() - started < REFERENCE_BUDGET_S:
            ref_s, ref = _timed(lambda: diffusion_spectral_entropy(x))
            row.update(official_cpu_s=ref_s, official=float(ref), rel_diff=_rel(ours, ref), speedup=ref_s / ours_s)
        rows.append(row)
    return rows


def run(quick: bool, results_dir: pathlib.Path) -> list[pathlib.Path]:
    import skdim

    cpu = jax.devices("cpu")[0]
    accel = jax.devices()[0]
    started = time.perf_counter()
    sizes, dims = ((2500,), (20,)) if quick else ((20000, 100000), (20, 128))
    local_n, local_l, prefix = (500, 64, 100) if quick else (20000, 128, 2000)
    dse_sizes = (500,) if quick else (1000, 5000, 10000)
    notes = (
        f"{'quick' if quick else 'full'} scale, float64. ours_accel on {_device_label(accel)}, "
        f"ours_cpu on the host CPU through JAX, references on the host CPU (same machine, same "
        f"process). Second-call times (compilation excluded). {TORCHID_NOTE}"
    )
    paths = []
    with jax.enable_x64(True):
        local_rows = _local_rows(skdim, local_n, local_l, prefix, accel, started)
        paths.append(
            tables.write_table(
                tables.Table(
                    name="geometry_device_local",
                    title=f"Local ID (N = {local_n}, L = {local_l}): ours (vmap) vs scikit-dimension's loop",
                    columns=["estimator", "n", "L", "skdim_cpu_s", "ours_accel_s", "speedup_accel", "skdim_mean_prefix", "ours_mean", "max_rel_diff_prefix", "note"],
                    rows=local_rows,
                    notes=notes,
                ),
                results_dir,
            )
        )
        global_rows = _global_rows(skdim, sizes, dims, cpu, accel, started)
        paths.append(
            tables.write_table(
                tables.Table(
                    name="geometry_device_global",
                    title="TwoNN / MLE at scale: ours on the accelerator and CPU vs scikit-dimension",
                    columns=["estimator", "n", "d", "skdim_cpu_s", "ours_cpu_s", "ours_accel_s", "speedup_cpu", "speedup_accel", "skdim", "ours", "rel_diff", "note"],
                    rows=global_rows,
                    notes=notes,
                ),
                results_dir,
            )
        )
        dse_rows = _dse_rows(dse_sizes, accel, started)
        paths.append(
            tables.write_table(
                tables.Table(
                    name="geometry_device_dse",
                    title="Diffusion spectral entropy: ours vs the official dse-dsmi",
                    columns=["n", "official_cpu_s", "ours_accel_s", "speedup", "official", "ours", "rel_diff"],
                    rows=dse_rows,
                    notes=notes + " DSE: sigma = 10, t = 1, d = 64 Gaussian data, no subsampling.",
                ),
                results_dir,
            )
        )
    return paths
