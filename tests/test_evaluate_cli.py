"""``fnaf evaluate`` end to end on small fastMRI-format files written here with h5py."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from fnaf_jax import cli, metrics

SIZE = 320
# name, acquisition, acceleration, slices
VOLUMES = [
    ("file1000001.h5", "CORPD_FBK", 4, 2),
    ("file1000002.h5", "CORPDFS_FBK", 4, 1),
    ("file1000003.h5", "CORPD_FBK", 8, 1),
]


def _write_target(path, volume, acquisition, max_attr=None):
    with h5py.File(path, "w") as f:
        f["reconstruction_esc"] = volume
        f.attrs["acquisition"] = acquisition
        f.attrs["max"] = float(volume.max()) if max_attr is None else max_attr


def _write_prediction(path, volume, acceleration=None):
    with h5py.File(path, "w") as f:
        f["reconstruction"] = volume
        if acceleration is not None:
            f.attrs["acceleration"] = acceleration


@pytest.fixture()
def dirs(tmp_path):
    """Targets (smooth positive images at fastMRI's ~1e-4 scale) and noisy predictions."""
    rng = np.random.default_rng(0)
    target_dir, pred_dir = tmp_path / "target", tmp_path / "pred"
    target_dir.mkdir()
    pred_dir.mkdir()
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    data = {}
    for i, (name, acquisition, acceleration, slices) in enumerate(VOLUMES):
        base = 1e-4 * (1.5 + np.sin(6 * xx + i) * np.cos(4 * yy))
        target = np.stack([base * (1 + 0.1 * s) for s in range(slices)]).astype(
            np.float32
        )
        noise = rng.normal(size=target.shape) * (0.02 + 0.02 * i) * 1e-4
        pred = (target + noise).astype(np.float32)
        _write_target(target_dir / name, target, acquisition)
        _write_prediction(pred_dir / name, pred, acceleration)
        data[name] = (target, pred)
    (target_dir / "notes.txt").write_text("not a volume")  # ignored: only *.h5 count
    return target_dir, pred_dir, data


def _run(*argv):
    return cli.main(["evaluate", *map(str, argv)])


def test_evaluate_writes_per_volume_metrics_and_table(dirs, tmp_path, capsys):
    target_dir, pred_dir, data = dirs
    out = tmp_path / "out"
    assert _run("--target", target_dir, "--predictions", pred_dir, "--out", out) == 0
    printed = capsys.readouterr().out

    report = json.loads((out / "metrics.json").read_text())
    volumes = {v["fname"]: v for v in report["volumes"]}
    assert sorted(volumes) == [v[0] for v in VOLUMES]
    for name, acquisition, acceleration, slices in VOLUMES:
        target, pred = (a.astype(np.float64) for a in data[name])
        record = volumes[name]
        assert record["acquisition"] == acquisition
        assert record["acceleration"] == acceleration and record["slices"] == slices
        # independent formulas: NMSE and PSNR with data range = the target volume's max
        nmse = np.sum((target - pred) ** 2) / np.sum(target**2)
        psnr = 10 * np.log10(target.max() ** 2 / np.mean((target - pred) ** 2))
        assert record["nmse"] == pytest.approx(nmse, rel=1e-6)
        assert record["psnr"] == pytest.approx(psnr, abs=1e-6)
        assert record["maxval"] == pytest.approx(target.max(), rel=1e-7)
        assert record["ssim"] == pytest.approx(metrics.ssim(target, pred), abs=1e-12)
        assert 0.0 < record["ssim"] < 1.0

    groups = report["groups"]
    assert groups["all"]["ssim"]["n"] == 3 and groups["4x"]["ssim"]["n"] == 2
    assert groups["4x/CORPD_FBK"]["nmse"]["mean"] == pytest.approx(
        volumes["file1000001.h5"]["nmse"]
    )
    ssims = [volumes[v[0]]["ssim"] for v in VOLUMES]
    assert groups["all"]["ssim"]["mean"] == pytest.approx(np.mean(ssims))
    assert groups["all"]["ssim"]["std"] == pytest.approx(np.std(ssims, ddof=1))

    table = (out / "metrics.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Acceleration | Acquisition | Volumes | NMSE |")
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]
    assert [c[:3] for c in cells] == [
        ["4x", "all", "2"],
        ["4x", "CORPDFS_FBK", "1"],
        ["4x", "CORPD_FBK", "1"],
        ["8x", "all", "1"],
        ["8x", "CORPD_FBK", "1"],
        ["all", "all", "3"],
    ]
    assert cells[-1][5] == f"{np.mean(ssims):.4f} ± {np.std(ssims, ddof=1):.4f}"
    assert "| all | all | 3 |" in printed


def test_maxval_from_attrs_and_filters(dirs, tmp_path, capsys):
    target_dir, pred_dir, data = dirs
    target, _pred = data["file1000003.h5"]
    _write_target(
        target_dir / "file1000003.h5",
        target,
        "CORPD_FBK",
        max_attr=2 * float(target.max()),
    )
    out_v, out_a = tmp_path / "v", tmp_path / "a"
    common = ("--target", target_dir, "--predictions", pred_dir, "--acceleration", 8)
    assert _run(*common, "--out", out_v) == 0
    assert _run(*common, "--out", out_a, "--maxval", "attrs") == 0
    (vol_v,) = json.loads((out_v / "metrics.json").read_text())["volumes"]
    (vol_a,) = json.loads((out_a / "metrics.json").read_text())["volumes"]
    assert vol_v["fname"] == vol_a["fname"] == "file1000003.h5"
    # doubling the data range adds 20 log10(2) dB and changes SSIM; NMSE is unaffected
    assert vol_a["psnr"] - vol_v["psnr"] == pytest.approx(20 * math.log10(2), abs=1e-6)
    assert vol_a["ssim"] != pytest.approx(vol_v["ssim"], abs=1e-6)
    assert vol_a["nmse"] == vol_v["nmse"]
    assert (
        _run(
            "--target",
            target_dir,
            "--predictions",
            pred_dir,
            "--acquisition",
            "CORPDFS_FBK",
        )
        == 0
    )
    assert "| all | all | 1 |" in capsys.readouterr().out


def test_larger_prediction_is_centre_cropped_and_perfect_psnr_is_null(tmp_path):
    target_dir, pred_dir = tmp_path / "t", tmp_path / "p"
    target_dir.mkdir()
    pred_dir.mkdir()
    target = np.random.default_rng(1).random((1, SIZE, SIZE)).astype(np.float32) + 1
    padded = np.zeros((1, SIZE + 11, SIZE + 6), np.float32)  # crop starts at (5, 3)
    padded[:, 5 : 5 + SIZE, 3 : 3 + SIZE] = target
    _write_target(target_dir / "file1.h5", target, "CORPD_FBK")
    _write_prediction(pred_dir / "file1.h5", padded)  # no acceleration attribute
    assert (
        _run("--target", target_dir, "--predictions", pred_dir, "--out", tmp_path / "o")
        == 0
    )
    report = json.loads((tmp_path / "o" / "metrics.json").read_text())
    (record,) = report["volumes"]
    assert record["nmse"] == 0.0 and record["psnr"] is None  # +inf written as null
    assert record["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert record["acceleration"] is None and "unknown" in report["groups"]


def _error(capsys, *argv):
    status = _run(*argv)
    return status, capsys.readouterr().err


def test_missing_prediction_is_a_clear_error(dirs, capsys):
    target_dir, pred_dir, _ = dirs
    (pred_dir / "file1000002.h5").unlink()
    status, err = _error(capsys, "--target", target_dir, "--predictions", pred_dir)
    assert status == 2
    assert "file1000002.h5" in err and "missing" in err


def test_shape_mismatch_is_a_clear_error(dirs, capsys):
    target_dir, pred_dir, data = dirs
    _target, pred = data["file1000001.h5"]
    _write_prediction(pred_dir / "file1000001.h5", pred[:1], 4)  # 1 slice instead of 2
    status, err = _error(capsys, "--target", target_dir, "--predictions", pred_dir)
    assert status == 2 and "file1000001.h5" in err and "slices" in err

    _write_prediction(
        pred_dir / "file1000001.h5", pred[:, :300, :], 4
    )  # too small to crop
    status, err = _error(capsys, "--target", target_dir, "--predictions", pred_dir)
    assert status == 2 and "file1000001.h5" in err and "smaller" in err


def test_bad_files_are_clear_errors(dirs, tmp_path, capsys):
    target_dir, pred_dir, data = dirs
    with h5py.File(pred_dir / "file1000003.h5", "w") as f:
        f["recon"] = data["file1000003.h5"][1]
    status, err = _error(capsys, "--target", target_dir, "--predictions", pred_dir)
    assert status == 2 and "file1000003.h5" in err and "'reconstruction'" in err

    (pred_dir / "file1000003.h5").write_bytes(b"not hdf5")
    status, err = _error(capsys, "--target", target_dir, "--predictions", pred_dir)
    assert status == 2 and "file1000003.h5" in err and "HDF5" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    status, err = _error(capsys, "--target", empty, "--predictions", pred_dir)
    assert status == 2 and "no .h5 target files" in err


def test_target_that_is_not_a_folder_is_named(dirs, tmp_path, capsys):
    _target_dir, pred_dir, _ = dirs
    status, err = _error(capsys, "--target", tmp_path / "nowhere", "--predictions", pred_dir)
    assert status == 2 and "nowhere: target folder does not exist" in err
    a_file = tmp_path / "file.h5"
    a_file.write_bytes(b"x")
    status, err = _error(capsys, "--target", a_file, "--predictions", pred_dir)
    assert status == 2 and "file.h5: target folder is a file, not a folder" in err
