"""The training loop: loss goes down, outputs land in the workdir, and an interrupted run
(stop hook or a real SIGTERM) resumes to bit-identical parameters. Reliability: options are
validated before anything is deleted or written, one writer per workdir, a torn checkpoint
and a killed run's metrics are handled on resume (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from fnaf_jax.errors import ConfigError
from fnaf_jax.fileio import LockedError
from fnaf_jax.models.store import load_model
from fnaf_jax.train.config import TrainConfig
from fnaf_jax.train.loop import train
from fnaf_jax.train.unet_task import UnetTask

# One tiny configuration for every test here: its compilations are shared.
# Dropout on: its RNG state is part of what a resumed run must restore.
TINY = {"chans": 4, "num_pools": 2, "drop_prob": 0.1, "crop": 32, "epochs": 2,
        "limit_train": 3, "limit_val": 2, "checkpoint_every": 2, "seed": 3, "lr": 3e-3}


def _leaves(state):
    def value(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return np.asarray(jax.random.key_data(x))
        return np.asarray(x)

    return [value(x) for x in jax.tree.leaves(state)]


def _assert_identical(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def initial_checkpoint(tmp_path_factory):
    """A tiny U-Net with numpy-drawn weights: runs start from it (``init_from``) because
    compiling jax's weight initialisers costs ~1 s per parameter shape on a busy CPU."""
    from flax import nnx

    from fnaf_jax.models.registry import build_abstract_model
    from fnaf_jax.models.store import save_model

    config = TrainConfig(**{k: TINY[k] for k in ("chans", "num_pools", "drop_prob")}).model_config()
    model = build_abstract_model(config)
    rng = np.random.default_rng(0)
    nnx.update(model, jax.tree.map(
        lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(s.dtype),
        nnx.state(model, nnx.Param)))
    return save_model(tmp_path_factory.mktemp("init") / "model", model, config)


@pytest.fixture(scope="module")
def reference_run(synthetic_dir, initial_checkpoint, tmp_path_factory):
    """An uninterrupted run: 2 epochs x 3 steps."""
    cfg = TrainConfig(data=str(synthetic_dir), init_from=str(initial_checkpoint), **TINY)
    workdir = tmp_path_factory.mktemp("reference")
    return cfg, workdir, train(cfg, workdir, progress=False)


def test_run_writes_config_models_metrics(reference_run):
    cfg, workdir, summary = reference_run
    assert summary["status"] == "done" and summary["step"] == summary["total_steps"] == 6
    assert json.loads((workdir / "config.json").read_text()) == json.loads(
        json.dumps(cfg.to_dict()))
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [0, 1]
    for r in val:
        assert np.isfinite([r["val_loss"], r["nmse"], r["psnr"], r["ssim"]]).all()
    best_epoch = min(val, key=lambda r: r["val_loss"])["epoch"]
    _, record = load_model(workdir / "best")
    assert record["meta"]["epoch"] == best_epoch
    assert record["config"]["chans"] == 4
    # "last" holds exactly the final training parameters
    last, _ = load_model(workdir / "last")
    from flax import nnx

    _assert_identical(nnx.state(last, nnx.Param), summary["state"]["params"])

    # the last validation record, recomputed independently from "last": fastMRI's
    # UnetDataTransform with file-name-seeded masks, the network, fastMRI metrics
    from fnaf_jax.data.fastmri import SliceDataset
    from fnaf_jax.masks import create_mask_for_mask_type
    from fnaf_jax.metrics import volume_metrics

    ds = SliceDataset(cfg.data, transform="unet", use_seed=True,
                      mask_func=create_mask_for_mask_type("random", [0.08], [4]))
    items = [ds[i] for i in range(cfg.limit_val)]  # 2 slices of file1000001.h5
    last.eval()
    run = jax.jit(lambda x: last(x[..., None])[..., 0])
    pred = np.stack([np.asarray(run(it["image"][None]))[0] * it["std"] + it["mean"]
                     for it in items])
    expected = volume_metrics(np.stack([it["target_raw"] for it in items]), pred)
    for name in ("nmse", "psnr", "ssim"):
        assert val[-1][name] == pytest.approx(expected[name], rel=1e-4), name


def test_loss_decreases(reference_run, synthetic_dir):
    """Clean loss of the 3 training slices (validation masks) before and after 6 steps."""
    cfg, _, summary = reference_run
    from flax import nnx

    from fnaf_jax.data.fastmri import SliceDataset

    items = [SliceDataset(synthetic_dir, transform="raw")[i] for i in range(3)]
    task = UnetTask(crop=32)
    batch = task.prepare_batch(items, None)
    model, _ = load_model(cfg.init_from)  # the run's initial model
    loss = jax.jit(lambda m, b: task.loss(m, b, None)[0])
    before = float(loss(model, batch))
    nnx.update(model, summary["state"]["params"])
    after = float(loss(model, batch))
    assert after < 0.8 * before, (before, after)


def test_interrupt_and_resume_is_bit_identical(reference_run, tmp_path, monkeypatch):
    """Stop at the end of epoch 0 (before its validation), resume; a real SIGTERM while
    step 4 runs (mid epoch 1), resume: the parameters equal the uninterrupted run's exactly."""
    cfg, _, reference = reference_run
    first = train(cfg, tmp_path, stop_after_steps=3, progress=False)
    assert (first["status"], first["step"], first["validated_epoch"]) == ("interrupted", 3, -1)

    calls = []
    original = UnetTask.prepare_batch

    def prepare_and_signal(self, items, rng):
        if rng is not None:  # a training batch
            calls.append(1)
            if len(calls) == 2:  # the loop prepares batch 2 while step 4 runs
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, items, rng)

    monkeypatch.setattr(UnetTask, "prepare_batch", prepare_and_signal)
    assert threading.current_thread() is threading.main_thread()  # else SIGTERM would kill us
    handler_before = signal.getsignal(signal.SIGTERM)
    second = train(cfg, tmp_path, progress=False)
    assert (second["status"], second["step"], second["validated_epoch"]) == ("interrupted", 4, 0)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # handler restored
    monkeypatch.setattr(UnetTask, "prepare_batch", original)

    final = train(cfg, tmp_path, progress=False)
    assert (final["status"], final["step"], final["validated_epoch"]) == ("done", 6, 1)
    _assert_identical(final["state"], reference["state"])
    assert any(x.dtype == np.uint32 for x in _leaves(final["state"]["rest"]))  # dropout RNG
    assert final["best_val_loss"] == reference["best_val_loss"]
    epochs = [json.loads(line)["epoch"] for line in
              (tmp_path / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert epochs == [0, 1]  # each epoch validated once across the three runs


def test_other_config_in_same_workdir_is_refused(reference_run):
    cfg, workdir, _ = reference_run
    with pytest.raises(ConfigError, match="different config"):
        train(cfg.replace(lr=0.5), workdir, progress=False)


def test_batch_larger_than_the_data_is_a_config_error(synthetic_dir, tmp_path):
    cfg = TrainConfig(data=str(synthetic_dir), **{**TINY, "batch_size": 4})
    with pytest.raises(ConfigError, match="batch_size=4 exceeds the 3 training slices"):
        train(cfg, tmp_path, progress=False)


def test_robust_training_from_a_checkpoint_selects_on_clean_loss(reference_run, synthetic_dir,
                                                                  tmp_path):
    """--robust --init-from: starts from the given weights, one step on clean + FNAF loss;
    the validation loss it records is the clean loss of the final weights."""
    cfg, ref_workdir, _ = reference_run
    robust_cfg = cfg.replace(robust=True, worst_of=2, epochs=1, limit_train=1, limit_val=1,
                             init_from=str(ref_workdir / "last"))
    summary = train(robust_cfg, tmp_path, progress=False)
    assert summary["status"] == "done" and summary["step"] == 1
    from flax import nnx

    from fnaf_jax.data.fastmri import SliceDataset

    start, _ = load_model(ref_workdir / "last")
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
        jax.tree.leaves(nnx.state(start, nnx.Param)), jax.tree.leaves(summary["state"]["params"]))]
    assert 0 < max(moved) < 0.1  # one RMSprop step from the checkpoint, not a fresh model
    task = UnetTask(crop=32)
    batch = task.prepare_batch([SliceDataset(synthetic_dir, transform="raw")[0]], None)
    nnx.update(start, summary["state"]["params"])
    clean = float(jax.jit(lambda m, b: task.loss(m, b, None)[0])(start, batch))
    assert summary["best_val_loss"] == pytest.approx(clean, rel=1e-5)


def test_force_starts_over(reference_run, tmp_path):
    import shutil

    cfg, ref_workdir, _ = reference_run
    workdir = tmp_path / "run"
    shutil.copytree(ref_workdir, workdir)
    summary = train(cfg, workdir, force=True, stop_after_steps=1, progress=False)
    assert (summary["status"], summary["step"]) == ("interrupted", 1)  # not resumed at 6
    assert not (workdir / "best").exists() and not (workdir / "metrics.jsonl").exists()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1"]


def test_cli_maps_to_the_same_config_and_resumes(reference_run, tmp_path, capsys):
    """`fnaf train` with the flags of the reference config finds its finished run (a flag
    mapped to another value would be refused as a different config)."""
    import shutil

    from fnaf_jax.cli import main

    cfg, ref_workdir, _ = reference_run
    workdir = tmp_path / "run"
    shutil.copytree(ref_workdir, workdir)
    argv = ["train", "--workdir", str(workdir), "--no-progress", "--data", cfg.data,
            "--init-from", cfg.init_from]
    for key, value in TINY.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    assert main(argv) == 0
    assert "done: step 6/6" in capsys.readouterr().out
    assert main(argv[:-2] + ["--lr", "0.5"]) == 2  # lr differs: refused, exit status 2
    assert "different config (lr: 0.003 -> 0.5)" in capsys.readouterr().err


def _listing(workdir):
    return sorted((str(p.relative_to(workdir)), p.stat().st_size) for p in workdir.rglob("*")
                  if p.is_file() and p.name != "train.lock")


def test_refused_options_leave_the_workdir_exactly_as_it_was(reference_run, synthetic_dir, tmp_path):
    import shutil

    _, ref_workdir, _ = reference_run
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
         ("import time\nfrom fnaf_jax.fileio import exclusive_lock\n"
          f"with exclusive_lock({str(workdir / 'train')!r}):\n    print('locked', flush=True)\n"
          "    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
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


def test_disk_full_during_training_is_one_line(reference_run, tmp_path, capsys, monkeypatch):
    import errno

    from fnaf_jax.cli import main
    from fnaf_jax.train import loop

    cfg, _, _ = reference_run

    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(loop.MetricsLog, "write", full)
    argv = ["train", "--workdir", str(tmp_path / "run"), "--no-progress", "--data", cfg.data,
            "--init-from", cfg.init_from]
    for key, value in TINY.items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.jsonl: disk full" in err[-1]
