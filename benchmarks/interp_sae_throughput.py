"""SAE training throughput (tokens/s): our jitted JAX step vs SAELens on the same machine.

Same d_in (384, MiniLM's width), width, k and batch for TopK (+AuxK) and ReLU + L1; inputs are
random (throughput does not depend on the data). Ours: :func:`interp.sae.training.make_train_step`
(one jitted, donated step: loss, grads, decoder-parallel-gradient removal, clip 1.0, Adam,
decoder renormalisation) on one device. TopK runs its default training path (the sparse decode
and gradients of :mod:`interp.sae.sparse_topk` on CPU at these widths); when that is the sparse
path, the dense path is timed too, in the same interleaved rounds, for comparison.
Reference: ``benchmarks/reference/saelens_throughput.py``
run as a subprocess by the interpreter in ``$SAELENS_PYTHON`` (default ``/work/venv-ref/bin/
python``; torch CPU + sae-lens), which steps SAELens's own training SAE as its trainer does. If
sae-lens is not importable there, the same computation in plain PyTorch is timed and labelled so;
without that interpreter the reference rows are skipped with a note (CI). Both sides get the same
number of CPU threads (``--threads``; ``XLA_FLAGS`` for ours is whatever the process has).

On a GPU the full form uses a larger SAE (d_in 768, 32x wide, k 64, batch 8192), runs the
reference on ``cuda`` with TF32 matmuls allowed and ours under TF32 matmul precision, and adds
model FLOP utilisation: 12 d_in d_sae FLOPs per token (encoder + dense decoder, forward and
backward; TopK's selection, AuxK and the optimizer not counted) over the dense TF32 peak.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
from flax import nnx
from tqdm import tqdm

import core  # noqa: F401
from core.tables import Table, write_table
from interp.sae import ReLUSAE, TopKSAE
from interp.sae.topk import sparse_training_by_default
from interp.sae.training import make_train_step, sae_optimizer

REFERENCE = Path(__file__).parent / "reference" / "saelens_throughput.py"
DEFAULT_PYTHON = "/work/venv-ref/bin/python"
BATCHES_IN_MEMORY = 4  # random batches cycled through (throughput does not depend on the data)
# Dense TF32 tensor-core peak, FLOP/s (NVIDIA data sheets, SXM parts).
TF32_PEAK = {"H100": 494.7e12, "H200": 494.7e12, "A100": 156e12}


def tf32_peak(device_kind: str) -> float | None:
    return next((peak for name, peak in TF32_PEAK.items() if name in device_kind), None)


def flops_per_token(d_in: int, d_sae: int) -> int:
    """Encoder and dense decoder matmuls, forward (4 d_in d_sae) and backward (twice that)."""
    return 12 * d_in * d_sae


def ours_tokens_per_s(arch: str, d_in: int, d_sae: int, k: int, batch: int, steps: int,
                      warmup: int = 3, sparse_training: bool | None = None) -> float:
    rngs = nnx.Rngs(0)
    model = (TopKSAE(d_in, d_sae, rngs=rngs, k=k, dead_steps=1000,
                     sparse_training=sparse_training) if arch == "topk"
             else ReLUSAE(d_in, d_sae, rngs=rngs, l1_coefficient=1.0))
    state, _, step = make_train_step(model, sae_optimizer(1e-3))
    data = jax.random.normal(jax.random.key(0), (BATCHES_IN_MEMORY, batch, d_in))
    for i in range(warmup):
        state, metrics = step(state, data[i % BATCHES_IN_MEMORY])
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, data[i % BATCHES_IN_MEMORY])
    jax.block_until_ready(metrics)
    return batch * steps / (time.perf_counter() - start)


def reference_tokens_per_s(python: str, d_in: int, d_sae: int, k: int, batch: int, steps: int,
                           threads: int, device: str = "cpu",
                           archs: tuple[str, ...] = ("topk", "standard")) -> dict[str, dict] | None:
    """Run the reference script once for ``archs``; ``None`` when the interpreter is absent.
    Returns ``{arch: result}``."""
    if not Path(python).is_file():
        return None
    cmd = [python, str(REFERENCE), "--archs", *archs, "--d-in", str(d_in),
           "--d-sae", str(d_sae), "--k", str(k), "--batch", str(batch), "--steps", str(steps),
           "--warmup", "2", "--threads", str(threads), "--device", device]
    if device != "cpu":
        cmd.append("--tf32")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["arch"]: r for r in results}


def _row(name: str, ours_runs: list[float], ref_runs: list[dict], labels: set[str],
         peak: float | None, d_in: int, d_sae: int) -> dict:
    ours = statistics.median(ours_runs)
    row = {"architecture": name, "ours tokens/s": ours}
    if peak:
        row["ours MFU"] = ours * flops_per_token(d_in, d_sae) / peak
    if not ref_runs:
        return {**row, "reference": "skipped (no reference interpreter)"}
    ref = ref_runs[0]
    label = (f"SAELens {ref['sae_lens']}" if ref["impl"] == "saelens"
             else "plain PyTorch (SAELens not installed)")
    labels.add(f"{label}, torch {ref['torch']} on {ref.get('device', 'cpu')}, "
               f"{ref['threads']} threads")
    ratios = [o / r["tokens_per_s"] for o, r in zip(ours_runs, ref_runs)]
    ref_speed = statistics.median(r["tokens_per_s"] for r in ref_runs)
    row.update({"reference": label, "reference tokens/s": ref_speed,
                "ratio": statistics.median(ratios),
                "ratio range": f"{min(ratios):.2f}-{max(ratios):.2f}"})
    if peak:
        row["reference MFU"] = ref_speed * flops_per_token(d_in, d_sae) / peak
    return row


def run(quick: bool, results_dir: Path) -> list[Path]:
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    d_in, k, width = (768, 64, 32) if on_gpu and not quick else (384, 32, 4 if quick else 16)
    d_sae = width * d_in
    batch = 512 if quick else (8192 if on_gpu else 4096)
    steps = (10, 3) if quick else (40, 10)  # (ours, reference): the reference is slower
    repeats = 1 if quick else 3  # interleaved (reference, ours) pairs: the host may be shared
    threads = os.cpu_count() or 1
    python = os.environ.get("SAELENS_PYTHON", DEFAULT_PYTHON)
    peak = tf32_peak(device.device_kind) if on_gpu else None
    sparse_default = sparse_training_by_default(d_sae, k)
    # (architecture, sparse_training) variants of ours, timed against one reference run per round
    variants = {"topk": [("TopK + AuxK", None)]
                + ([("TopK + AuxK, dense path", False)] if sparse_default else []),
                "standard": [("ReLU + L1", None)]}
    rows, labels = [], set()
    for arch in tqdm(("topk", "standard"), desc="interp_sae_throughput"):
        ours_runs, ref_runs = {name: [] for name, _ in variants[arch]}, []
        for _ in range(repeats):
            refs = reference_tokens_per_s(python, d_in, d_sae, k, batch, steps[1], threads,
                                          "cuda" if on_gpu else "cpu", (arch,))
            if refs is not None:
                ref_runs.append(refs[arch])
            with jax.default_matmul_precision("tensorfloat32" if on_gpu else "default"):
                for name, sparse in variants[arch]:
                    ours_runs[name].append(ours_tokens_per_s(arch, d_in, d_sae, k, batch,
                                                             steps[0], sparse_training=sparse))
        for name, runs in ours_runs.items():
            rows.append(_row(name, runs, ref_runs, labels, peak, d_in, d_sae))
    path_note = ("sparse: decoder forward and all backward products from the k active "
                 "latents, only the encoder forward is a dense matmul" if sparse_default
                 else "dense: the codes are scattered into a dense matrix, as in SAELens")
    mfu_note = (f"MFU = tokens/s x {flops_per_token(d_in, d_sae):.3g} FLOPs per token / "
                f"{peak / 1e12:.1f} TFLOP/s (dense TF32 peak of a {device.device_kind}); both "
                f"sides use TF32 matmuls. " if peak else "")
    notes = (f"{'quick' if quick else 'full'} run on {device.platform} "
             f"({jax.devices()[0].device_kind}, {threads} CPU threads visible), d_in={d_in}, "
             f"d_sae={d_sae}, k={k} (TopK), batch {batch} tokens, {steps[0]} timed steps (ours) "
             f"/ {steps[1]} (reference) after warm-up; random inputs. TopK + AuxK uses "
             f"our default training path ({path_note}); ratio = median over {repeats} "
             f"interleaved rounds (reference, then ours) of ours / reference (goal >= 2 on "
             f"CPU). Ours also removes the decoder-parallel gradient and renormalises decoder "
             f"rows each step (SAELens does neither for these "
             f"architectures). Reference: {'; '.join(sorted(labels)) or 'none'}. "
             + ("" if labels else f"The reference interpreter {python} is absent here, so only "
                                  "our throughput is reported. ")
             + mfu_note
             + "Other jobs may share the CPU; compare the two columns of one row, not runs.")
    suffix = "_" + device.device_kind.split()[-1].lower() if on_gpu else ""
    table = Table(name="interp_sae_throughput" + suffix,
                  title="SAE training throughput: ours (JAX) vs SAELens (PyTorch)",
                  columns=["architecture", "reference", "ours tokens/s", "reference tokens/s",
                           "ratio", "ratio range"] + (["ours MFU", "reference MFU"] if peak else []),
                  rows=rows, notes=notes)
    return [write_table(table, results_dir)]


if __name__ == "__main__":
    print(run("--full" not in sys.argv, Path("results")))
