"""Atomic writes and OS locks (fnaf_jax.fileio), and the one-line errors verbs give when
the environment refuses (docs/reliability.md)."""

from __future__ import annotations

import errno
import os

import pytest

from fnaf_jax import fileio
from fnaf_jax.cli import main


def test_an_atomic_write_that_fails_midway_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("the user's report")
    with pytest.raises(RuntimeError), fileio.atomic_path(path) as tmp:
        tmp.write_text("half of a new rep")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "the user's report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    fileio.write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_an_os_error_while_writing_is_a_one_line_write_error(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(fileio.WriteError, match="report.md: disk full"):
        fileio.write_text(tmp_path / "report.md", "x")
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: use a path under a file
            target = tmp_path / "afile" / "x.md"
            (tmp_path / "afile").write_text("")
            with pytest.raises(fileio.WriteError, match="afile"):
                fileio.write_text(target, "x")
        else:
            with pytest.raises(fileio.WriteError, match="permission denied"):
                fileio.write_text(folder / "x.md", "x")
    finally:
        folder.chmod(0o700)


def test_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "r.jsonl"
    with fileio.exclusive_lock(out):
        assert (tmp_path / "r.jsonl.lock").read_text() == str(os.getpid())
        # a second holder in the same process uses another open file: flock refuses it too
        with pytest.raises(fileio.LockedError, match=f"PID {os.getpid()}"), fileio.exclusive_lock(out):
            pass
    with fileio.exclusive_lock(out):  # released on exit
        pass


def test_absurd_synthetic_sizes_are_refused_before_anything_is_made(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--width", "100000000", "--volumes", "1"]) == 2
    captured = capsys.readouterr()
    assert "width 100000000" in captured.err and "GiB" in captured.err
    assert "volume/s" not in captured.err and not out.exists()  # no progress bar, no folder


def test_unreadable_model_record_is_one_line(tmp_path, capsys, synthetic_dir, monkeypatch):
    import pathlib

    from fnaf_jax.models.registry import build_model
    from fnaf_jax.models.store import save_model

    config = {"arch": "unet", "chans": 2, "num_pool_layers": 1}
    ckpt = save_model(tmp_path / "m", build_model(config), config)
    real = pathlib.Path.read_text

    def denied(self, *args, **kwargs):  # mode 000 (root ignores modes, so simulate it)
        if self.name == "model.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    assert main(["attack", "--checkpoint", str(ckpt), "--data", str(synthetic_dir),
                 "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read the model record (Permission denied)" in err[0]


def test_disk_full_during_reconstruct_is_one_line_and_leaves_no_partial_file(tmp_path, capsys,
                                                                           synthetic_dir, monkeypatch):
    import h5py

    from fnaf_jax.models.registry import build_model
    from fnaf_jax.models.store import save_model

    config = {"arch": "unet", "chans": 2, "num_pool_layers": 1}
    ckpt = save_model(tmp_path / "m", build_model(config), config)
    real = h5py.Group.create_dataset

    def full(self, name, *args, **kwargs):
        real(self, name, *args, **kwargs)  # the data went in; the disk filled up after it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    out = tmp_path / "recon"
    assert main(["reconstruct", "--checkpoint", str(ckpt), "--data", str(synthetic_dir),
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full" in err[0]
    assert not list(out.glob("*.h5"))  # nothing fnaf evaluate could mistake for a submission
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # and no temp debris


def test_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path):
    from fnaf_jax.commands import synth

    def exhausted(args):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")

    monkeypatch.setattr(synth, "run", exhausted)
    assert main(["synth", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fnaf synth: error: out of accelerator memory")
