"""`fnaf train` validates before it acts, takes one writer per workdir, survives a torn
checkpoint and never duplicates metrics after a kill (docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fnaf_jax.errors import ConfigError
from fnaf_jax.fileio import LockedError
from fnaf_jax.train.config import TrainConfig
from fnaf_jax.train.loop import train

from test_train_loop import TINY, _assert_identical  # noqa: F401 (fixtures below)
from test_train_loop import initial_checkpoint, reference_run  # noqa: F401


def _listing(workdir):
    return sorted((str(p.relative_to(workdir)), p.stat().st_size) for p in workdir.rglob("*")
                  if p.is_file() and p.name != "train.lock")


def test_refused_options_leave_the_workdir_exactly_as_it_was(reference_run, synthetic_dir, tmp_path):
    import shutil

    cfg, ref_workdir, _ = reference_run
    finished = tmp_path / "finished"
    shutil.copytree(ref_workdir, finished)
    before = _listing(finished)
    fresh_cfg = TrainConfig(data=str(synthetic_dir), **TINY)  # builds its own U-Net
    for bad, match in ((fresh_cfg.replace(drop_prob=1.5), "drop"),
                       (fresh_cfg.replace(model_kwargs={"bogus": 1}), "bogus")):
        with pytest.raises(ConfigError, match=match):
            train(bad, finished, force=True, progress=False)  # --force: nothing deleted first
        assert _listing(finished) == before
        empty = tmp_path / f"new_{match}"
        with pytest.raises(ConfigError, match=match):
            train(bad, empty, progress=False)
        assert not empty.exists() or _listing(empty) == []  # no config.json, no checkpoints/


def test_a_second_trainer_on_one_workdir_is_refused_with_the_holders_pid(reference_run, tmp_path):
    cfg, _, _ = reference_run
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time\nfrom fnaf_jax.fileio import exclusive_lock\n"
         f"with exclusive_lock({str(workdir / 'train')!r}):\n    print('locked', flush=True)\n"
         "    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"PID {holder.pid}"):
            train(cfg, workdir, progress=False)
        assert not (workdir / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_torn_latest_checkpoint_and_killed_metrics_resume_cleanly(reference_run, tmp_path, capsys):
    """A run stopped at step 3 (checkpoints 2 and 3) whose latest checkpoint was cut short
    by a second interrupt, and whose metrics hold lines written after it (a SIGKILL):
    resuming falls back to step 2, says so, ends bit-identical to the uninterrupted run,
    and metrics.jsonl has no duplicate (kind, epoch, step) record."""
    cfg, _, reference = reference_run
    first = train(cfg, tmp_path, stop_after_steps=3, progress=False)
    assert first["step"] == 3
    ckpt = tmp_path / "checkpoints" / "3"
    for f in ckpt.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "state" in str(f.relative_to(ckpt)):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # a save cut short
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines + lines[-1:]) + "\n" + lines[-1][:20])  # replayed + torn
    capsys.readouterr()
    final = train(cfg, tmp_path, progress=False)
    assert "checkpoint 3 is incomplete" in capsys.readouterr().out
    assert final["status"] == "done" and final["step"] == 6
    _assert_identical(final["state"], reference["state"])
    keys = [(r.get("kind"), r.get("epoch"), r.get("step"))
            for r in map(json.loads, metrics.read_text().splitlines())]
    assert len(keys) == len(set(keys)) > 0
