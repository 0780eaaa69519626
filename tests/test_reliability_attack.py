"""`fnaf attack` never loses or mixes a user's data: refused files are left untouched,
one writer at a time, one run per results file, one-line errors for environment failures.
(docs/reliability.md lists the cases.)"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time

import pytest

from fnaf_jax.cli import main


@pytest.fixture(scope="module")
def checkpoint(tiny_unet_checkpoint):
    return tiny_unet_checkpoint


def _argv(checkpoint, data, out, *extra):
    return ["attack", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
            "--k", "2", "--batch-size", "2", "--limit", "2", "--no-progress", *extra]


def test_a_file_that_is_not_a_results_file_is_refused_and_left_untouched(checkpoint, synthetic_dir,
                                                                          tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text("my notes, no newline")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"kind": "train", "epoch": 0, "step": 1, "loss": 0.5}) + "\n")
    for path in (note, metrics):
        before = path.read_bytes()
        assert main(_argv(checkpoint, synthetic_dir, path)) == 2
        err = capsys.readouterr().err
        assert "not an fnaf attack results file" in err and len(err.strip().splitlines()) == 1
        assert path.read_bytes() == before


def test_resume_with_other_settings_is_refused_naming_the_field(checkpoint, synthetic_dir, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(_argv(checkpoint, synthetic_dir, out)) == 0
    before = out.read_bytes()
    for flags, field in ((["--k", "3"], "k"), (["--seed", "1"], "seed"),
                         (["--center-fraction", "0.1"], "center_fraction"), (["--gamma", "0.01"], "gamma")):
        assert main(_argv(checkpoint, synthetic_dir, out, *flags)) == 2
        assert f"{field} is" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(_argv(checkpoint, synthetic_dir, out)) == 0  # the same run resumes (nothing to do)
    assert out.read_bytes() == before


def test_bad_limit_is_refused_and_leaves_no_file(checkpoint, synthetic_dir, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    for value in ("-1", "0"):
        assert main(_argv(checkpoint, synthetic_dir, out, "--limit", value)) == 2
        assert "limit must be >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_a_second_writer_is_refused_with_the_holders_pid(checkpoint, synthetic_dir, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         ("import sys, time\nfrom fnaf_jax.fileio import exclusive_lock\n"
          f"with exclusive_lock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(_argv(checkpoint, synthetic_dir, out)) == 2
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)  # the OS releases a dead holder's lock: the next writer goes ahead
    assert main(_argv(checkpoint, synthetic_dir, out)) == 0
    assert len(out.read_text().splitlines()) == 2


def test_disk_full_during_an_attack_is_one_line_and_keeps_earlier_records(checkpoint, synthetic_dir,
                                                                          tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    assert main(_argv(checkpoint, synthetic_dir, out)) == 0
    before = out.read_bytes()
    from fnaf_jax.attacks import records, runner

    real_open = records.open_for_append

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(runner, "open_for_append", lambda path: Full(real_open(path)))
    assert main(_argv(checkpoint, synthetic_dir, out, "--limit", "4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full" in err[0] and "2 records written before are kept" in err[0]
    assert out.read_bytes() == before


def test_the_same_checkpoint_spelled_differently_resumes(checkpoint, synthetic_dir, tmp_path, monkeypatch):
    out = tmp_path / "r.jsonl"
    assert main(_argv(checkpoint, synthetic_dir, out)) == 0
    monkeypatch.chdir(checkpoint.parent)
    assert main(_argv(f"./{checkpoint.name}", synthetic_dir, out, "--limit", "3")) == 0
    assert len(out.read_text().splitlines()) == 3
