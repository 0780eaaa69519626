"""Multi-host as users run it: several ``fnaf`` processes on this machine (CPU backend,
coordinator on 127.0.0.1, simulated local devices each) give the single-process results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]  # this checkout, whatever is installed
DEVICES = 4  # global: one process with 4 devices, or 2 processes with 2 each


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(local_devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC",
                                                                    "JAX_PROCESS", "SLURM_"))}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
               **extra)
    return env


def _fnaf(argv, processes: int, cwd: Path) -> list[subprocess.CompletedProcess]:
    """``fnaf ARGV`` as one process with all devices, or as ``processes`` hosts."""
    command = [sys.executable, "-m", "fnaf_jax.cli", *map(str, argv)]
    if processes == 1:
        runs = [subprocess.Popen(command, env=_env(DEVICES), cwd=cwd, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)]
    else:
        port = _free_port()
        runs = [subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=_env(DEVICES // processes, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                          JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i)))
                for i in range(processes)]
    done = []
    for run in runs:
        out, _ = run.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(run.args, run.returncode, out))
    for run in done:
        assert run.returncode == 0, run.stdout[-4000:]
    return done


def _params(checkpoint: Path):
    from fnaf_jax.models.store import load_model

    model, _ = load_model(checkpoint)
    return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.mark.slow
def test_two_processes_train_and_attack_like_one(tmp_path):
    data = tmp_path / "data"
    _fnaf(["synth", "--out", data, "--volumes", "2", "--slices", "4", "--width", "336", "--no-progress"], 1, tmp_path)
    train = ["train", "--data", data, "--chans", "2", "--num-pools", "1", "--epochs", "1", "--batch-size", "4",
             "--crop", "64", "--limit-val", "4", "--checkpoint-every", "1", "--no-progress"]
    _fnaf([*train, "--workdir", "one"], 1, tmp_path)
    joined = _fnaf([*train, "--workdir", "two"], 2, tmp_path)
    for i, run in enumerate(joined):  # the processes really formed one job of 4 devices
        assert f"fnaf: process {i} of 2 (2 local of 4 devices)" in run.stdout
    for a, b in zip(_params(tmp_path / "one" / "best"), _params(tmp_path / "two" / "best"), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    def logged(run):
        return [(m["kind"], m["step"]) for m in map(json.loads, (tmp_path / run / "metrics.jsonl").open())]

    assert logged("two") == logged("one") and len(logged("one")) >= 2  # one writer: no duplicated lines

    # two methods: FD reads each slice's no-feature output from the RS run's ControlCache,
    # sharded over the devices again
    attack = ["attack", "--checkpoint", tmp_path / "one" / "best", "--data", data, "--k", "3",
              "--methods", "rs", "fd", "--fd-iterations", "1", "--batch-size", "4", "--no-progress"]
    _fnaf([*attack, "--out", "one.jsonl"], 1, tmp_path)
    runs = _fnaf([*attack, "--out", "two.jsonl"], 2, tmp_path)
    one = (tmp_path / "one_rs.jsonl").read_text().splitlines()
    assert len(one) == 8 and (tmp_path / "two_rs.jsonl").read_text().splitlines() == one
    # FD's records round differently on 4 devices in one process and 2 x 2 in two (before
    # the cache too; so does RS with one image per device): the same features, the numbers
    # within float32 rounding
    fd_one, fd_two = (list(map(json.loads, (tmp_path / f"{run}_fd.jsonl").open())) for run in ("one", "two"))
    assert len(fd_one) == len(fd_two) == 8
    for a, b in zip(fd_one, fd_two, strict=True):
        assert (a["file"], a["slice"], a["feature"]["pixels"], a["hit"]) == (b["file"], b["slice"],
                                                                             b["feature"]["pixels"], b["hit"])
        for key in a["scored"]:
            np.testing.assert_allclose(a["scored"][key], b["scored"][key], rtol=1e-5, atol=1e-9)
    assert "process 1 of 2" in runs[1].stdout
    assert "8 new records in two_fd.jsonl" in runs[0].stdout  # process 0 wrote them ...
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*.lock"))  # ... and nothing is left behind
