"""`fnaf attack` end to end on synthetic slices with a tiny U-Net: resume, torn lines,
transfer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fnaf_jax.cli import main


@pytest.fixture(scope="module")
def checkpoint(tiny_unet_checkpoint):
    return tiny_unet_checkpoint


def _attack(checkpoint, data, out, *extra):
    argv = ["attack", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
            "--k", "3", "--batch-size", "2", "--no-progress", *extra]
    assert main(argv) == 0


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_slice(records):
    return {(r["file"], r["slice"]): r for r in records}


def test_resume_gives_the_same_records_as_one_full_run(checkpoint, synthetic_dir, tmp_path):
    resumed, full = tmp_path / "resumed.jsonl", tmp_path / "full.jsonl"
    _attack(checkpoint, synthetic_dir, resumed, "--limit", "3")
    assert len(_records(resumed)) == 3
    # A run killed while writing leaves a torn last line: it is dropped and redone.
    text = resumed.read_text()
    resumed.write_text(text + text.splitlines()[-1][:40])
    _attack(checkpoint, synthetic_dir, resumed)
    _attack(checkpoint, synthetic_dir, full)

    got, want = _records(resumed), _records(full)
    assert len(got) == 6 and len({(r["file"], r["slice"]) for r in got}) == 6  # no duplicates
    got, want = _by_slice(got), _by_slice(want)
    assert got.keys() == want.keys()
    for key, r in want.items():
        g = got[key]
        assert g["feature"] == r["feature"] and g["location"] == r["location"]
        assert (g["hit"], g["accepted"], g["mask_seed"]) == (r["hit"], r["accepted"], key[0])
        np.testing.assert_allclose([g["worst_loss"], g["ip"]], [r["worst_loss"], r["ip"]], rtol=1e-5)
    # Appending another run (here FD) to these RS results is refused, with the reason.
    argv = ["attack", "--checkpoint", str(checkpoint), "--data", str(synthetic_dir), "--out", str(resumed),
            "--method", "fd", "--no-progress"]
    assert main(argv) == 2
    first = want[("file1000001.h5", 0)]
    assert first["method"] == "rs" and first["acceleration"] == 4 and first["model"] == "tiny-unet"
    assert first["num_scored"] == 3 and len(first["feature"]["pixels"]) == 10


def test_transfer_rescoring_on_the_same_model_reproduces_the_losses(checkpoint, synthetic_dir, tmp_path):
    source, transfer = tmp_path / "source.jsonl", tmp_path / "transfer.jsonl"
    _attack(checkpoint, synthetic_dir, source, "--limit", "4", "--method", "fd")
    _attack(checkpoint, synthetic_dir, transfer, "--transfer-from", str(source))
    src, dst = _by_slice(_records(source)), _by_slice(_records(transfer))
    assert src.keys() == dst.keys()  # only slices the source attacked
    for key, r in src.items():
        d = dst[key]
        assert d["feature"] == r["feature"] and d["transfer_from"] == str(source)
        assert d["method"] == "fd" and d["num_scored"] == 1
        np.testing.assert_allclose([d["worst_loss"], d["ip"]], [r["worst_loss"], r["ip"]], rtol=1e-5)


def test_bad_data_folder_is_one_clear_error(checkpoint, tmp_path, capsys):
    argv = ["attack", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "nowhere"),
            "--out", str(tmp_path / "x.jsonl"), "--no-progress"]
    assert main(argv) == 2
    assert "nowhere" in capsys.readouterr().err


def test_methods_sharing_the_no_feature_control_write_the_same_records(checkpoint, synthetic_dir, tmp_path):
    """A ControlCache computes each slice's no-feature output once per model and mask: FD
    after RS reads every batch of it from the cache, and writes exactly the records of a
    run that computes its own; another mask finds nothing."""
    from fnaf_jax.attacks.config import AttackConfig
    from fnaf_jax.attacks.controls import ControlCache
    from fnaf_jax.attacks.runner import AttackJob, attack_folder
    from fnaf_jax.masks import MaskSpec

    cfg = AttackConfig(k=3, fd_iterations=1)

    def job(name, method, acceleration=4):
        return AttackJob(data=str(synthetic_dir), out=str(tmp_path / name), checkpoint=str(checkpoint),
                         method=method, mask=MaskSpec(acceleration), attack=cfg, batch_size=2, limit=4)

    controls = ControlCache()
    assert attack_folder(job("rs.jsonl", "rs"), progress=False, controls=controls) == 4
    assert (controls.hits, controls.misses) == (0, 2)  # two batches, computed and stored
    assert attack_folder(job("fd.jsonl", "fd"), progress=False, controls=controls) == 4
    assert (controls.hits, controls.misses) == (2, 2)  # FD computed no control
    attack_folder(job("fd_alone.jsonl", "fd"), progress=False)
    assert _records(tmp_path / "fd.jsonl") == _records(tmp_path / "fd_alone.jsonl")
    attack_folder(job("rs_8x.jsonl", "rs", 8), progress=False, controls=controls)
    assert (controls.hits, controls.misses) == (2, 4)  # keyed by mask: 8x is computed


def test_a_full_control_cache_stores_no_more():
    from fnaf_jax.attacks.controls import ControlCache

    out = np.ones((3, 4, 4), np.float32)
    batch = {"fname": ["a.h5", "a.h5", "b.h5"], "slice_num": [0, 1, 0]}
    cache = ControlCache(max_bytes=2 * out[0].nbytes)
    cache.store(("m", ""), "spec", batch, out * np.arange(3, dtype=np.float32)[:, None, None])
    assert cache.lookup(("m", ""), "spec", batch) is None  # b.h5 did not fit
    first = {"fname": ["a.h5", "a.h5"], "slice_num": [1, 0]}
    np.testing.assert_array_equal(cache.lookup(("m", ""), "spec", first)[:, 0, 0], [1, 0])
    assert cache.lookup(("other", ""), "spec", first) is None


def test_several_methods_in_one_command_write_one_file_each_as_separate_commands_would(
        checkpoint, synthetic_dir, tmp_path, capsys):
    """--methods rs fd: OUT_rs.jsonl and OUT_fd.jsonl (OUT_4x_rs.jsonl ... with several
    accelerations), each the records of a command with that method alone (the methods share
    each slice's no-feature output); a repeated method or a transfer with two is refused."""
    _attack(checkpoint, synthetic_dir, tmp_path / "both.jsonl", "--limit", "4", "--methods", "rs", "fd",
            "--fd-iterations", "1")
    _attack(checkpoint, synthetic_dir, tmp_path / "fd.jsonl", "--limit", "4", "--method", "fd",
            "--fd-iterations", "1")
    assert sorted(p.name for p in tmp_path.glob("both*.jsonl")) == ["both_fd.jsonl", "both_rs.jsonl"]
    assert _records(tmp_path / "both_fd.jsonl") == _records(tmp_path / "fd.jsonl")
    assert {r["method"] for r in _records(tmp_path / "both_rs.jsonl")} == {"rs"}
    _attack(checkpoint, synthetic_dir, tmp_path / "acc.jsonl", "--limit", "2", "--methods", "rs", "fd",
            "--fd-iterations", "1", "--accelerations", "4", "8")
    assert sorted(p.name for p in tmp_path.glob("acc*.jsonl")) == [
        "acc_4x_fd.jsonl", "acc_4x_rs.jsonl", "acc_8x_fd.jsonl", "acc_8x_rs.jsonl"]
    capsys.readouterr()
    base = ["attack", "--checkpoint", str(checkpoint), "--data", str(synthetic_dir), "--no-progress",
            "--out", str(tmp_path / "bad.jsonl")]
    assert main([*base, "--methods", "rs", "rs"]) == 2
    assert "repeats a method" in capsys.readouterr().err
    assert main([*base, "--methods", "rs", "fd", "--transfer-from", str(tmp_path / "fd.jsonl")]) == 2
    assert "--transfer-from" in capsys.readouterr().err
    assert not list(tmp_path.glob("bad*"))
