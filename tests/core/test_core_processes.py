"""Whole training processes: SIGKILL + resume is bitwise, SIGTERM checkpoints, and two OS
processes coordinated by jax.distributed (gloo) equal one 8-device process."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from core import checkpoint, config as config_lib, mesh as mesh_lib
from core.demo import PRESETS, model_and_optimizer
from core.train import init_state

ROOT = Path(__file__).resolve().parents[2]
TINY = ["tiny", "--model.hidden", "32", "--train.batch-size", "32", "--train.log-every", "1",
        "--train.no-progress", "--train.eval-every", "0"]


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT), **extra)
    return env


def _demo(workdir: Path, steps: int, *extra: str, devices: int = 8, env_extra=None, wait=True):
    args = [sys.executable, "-m", "core.demo", *TINY, "--train.workdir", str(workdir), "--train.steps",
            str(steps), *extra]
    process = subprocess.Popen(args, env=_env(devices, **(env_extra or {})), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    return process


def _final_state(workdir: Path, step: int):
    config = config_lib.override(PRESETS["tiny"][1], {"model.hidden": 32})
    mesh = mesh_lib.make_mesh()
    model_fn, optimizer = model_and_optimizer(config)
    _, state, _ = init_state(mesh_lib.create_sharded(model_fn, mesh), optimizer, mesh)
    with checkpoint.Checkpointer(workdir / "checkpoints") as ckpt:
        return ckpt.restore(checkpoint.abstract_like(state), step=step)[1]


def _losses(workdir: Path) -> dict[int, float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {row["step"]: row["loss"] for row in map(json.loads, lines) if "loss" in row}


def _wait_for_steps(workdir: Path, count: int, process, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = workdir / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    raise TimeoutError(f"no step {count} within {timeout} s")


def _wait_for_a_committed_checkpoint(directory: Path, process, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir()):
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    raise TimeoutError(f"no committed checkpoint in {directory} within {timeout} s")


def test_sigkill_at_a_random_step_then_resume_is_bitwise(tmp_path):
    steps = 60
    _demo(tmp_path / "straight", steps, "--train.checkpoint-every", "5", "--train.no-async-checkpoint")
    kill_at = random.Random(os.getpid()).randint(8, 40)
    victim = _demo(tmp_path / "killed", steps, "--train.checkpoint-every", "5", wait=False)
    _wait_for_steps(tmp_path / "killed", kill_at, victim)
    _wait_for_a_committed_checkpoint(tmp_path / "killed" / "checkpoints", victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    survived = checkpoint.list_steps(tmp_path / "killed" / "checkpoints")
    assert survived and survived[-1] < steps
    _demo(tmp_path / "killed", steps, "--train.checkpoint-every", "5")
    a, b = _final_state(tmp_path / "straight", steps), _final_state(tmp_path / "killed", steps)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_a_restorable_checkpoint(tmp_path):
    process = _demo(tmp_path, 100_000, "--train.checkpoint-every", "1000", wait=False)
    _wait_for_steps(tmp_path, 5, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    saved = checkpoint.list_steps(tmp_path / "checkpoints")
    assert len(saved) == 1 and 5 <= saved[0] < 100_000
    assert f"checkpoint saved at step {saved[0]}" in err
    state = _final_state(tmp_path, saved[0])
    assert int(state["step"]) == saved[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir: Path, steps: int, *extra: str):
    port = _free_port()
    procs = [
        _demo(workdir, steps, "--distributed", *extra, devices=4, wait=False,
              env_extra=dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                             JAX_PROCESS_ID=str(i)))
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


@pytest.mark.parametrize("mesh_args", [(), ("--mesh.dcn-data", "2")], ids=["plain", "hybrid-dcn"])
def test_two_processes_equal_one_process(tmp_path, mesh_args):
    _demo(tmp_path / "single", 12, "--train.checkpoint-every", "6")
    _two_processes(tmp_path / "multi", 6, "--train.checkpoint-every", "6", *mesh_args)
    assert checkpoint.list_steps(tmp_path / "multi" / "checkpoints") == [6]
    _two_processes(tmp_path / "multi", 12, "--train.checkpoint-every", "6", *mesh_args)  # restore + go on
    single, multi = _losses(tmp_path / "single"), _losses(tmp_path / "multi")
    assert sorted(multi) == list(range(1, 13))
    np.testing.assert_allclose([multi[s] for s in range(1, 13)], [single[s] for s in range(1, 13)], rtol=1e-5)
    a, b = _final_state(tmp_path / "single", 12), _final_state(tmp_path / "multi", 12)
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
