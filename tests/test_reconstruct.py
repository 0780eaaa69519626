"""``fnaf reconstruct``: submission files equal an independent U-Net pass over fastMRI's
UnetDataTransform; test files use their stored mask; ``fnaf evaluate`` reads the output."""

from __future__ import annotations

import json
import shutil

import h5py
import jax
import numpy as np
import pytest
from flax import nnx

from fnaf_jax.cli import main
from fnaf_jax.data.fastmri import SliceDataset
from fnaf_jax.errors import ConfigError
from fnaf_jax.masks import create_mask_for_mask_type
from fnaf_jax.metrics import volume_metrics
from fnaf_jax.models.registry import build_abstract_model
from fnaf_jax.models.store import save_model

CONFIG = {"arch": "unet", "chans": 4, "num_pool_layers": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny U-Net with random weights (numpy-drawn: no initialiser compilation)."""
    model = build_abstract_model(CONFIG)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.2 * rng.normal(size=s.shape)).astype(s.dtype),
                          nnx.state(model, nnx.Param))
    nnx.update(model, params)
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save_model(path, model, CONFIG)
    return path, model


@pytest.fixture(scope="module")
def data(synthetic_dir, tmp_path_factory):
    """The synthetic set plus a test-style copy of file1000002 (4x stored mask, no target)."""
    root = tmp_path_factory.mktemp("recon_data")
    for f in synthetic_dir.glob("*.h5"):
        shutil.copy(f, root / f.name)
    test_file = root / "file1000003.h5"
    shutil.copy(synthetic_dir / "file1000002.h5", test_file)
    with h5py.File(test_file, "a") as f:
        width = f["kspace"].shape[-1]
        mask = np.zeros(width, np.float32)
        mask[::3] = 1
        mask[width // 2 - 10: width // 2 + 10] = 1
        f["kspace"][...] = f["kspace"][()] * mask.astype(np.complex64)
        f.create_dataset("mask", data=mask.astype(bool))
        del f["reconstruction_esc"]
        f.attrs["acceleration"] = 3
        f.attrs["num_low_frequency"] = 20
    return root


def _expected(model, data, mask_func):
    """Independent path: the dataset's UnetDataTransform, the network, un-z-scoring."""
    ds = SliceDataset(data, transform="unet", mask_func=mask_func, use_seed=True)
    run = jax.jit(lambda x: model(x[..., None])[..., 0])
    out = {}
    for i in range(len(ds)):
        item = ds[i]
        image = np.asarray(run(item["image"][None]))[0] * item["std"] + item["mean"]
        out.setdefault(item["fname"], []).append(image)
    return {k: np.stack(v) for k, v in out.items()}


def test_reconstruct_writes_fastmri_submission_files(checkpoint, data, tmp_path):
    path, model = checkpoint
    out = tmp_path / "recon"
    status = main(["reconstruct", "--checkpoint", str(path), "--data", str(data), "--out",
                   str(out), "--acceleration", "8", "--center-fraction", "0.04",
                   "--batch-size", "2", "--no-progress"])
    assert status == 0
    expected = _expected(model, data, create_mask_for_mask_type("random", [0.04], [8]))
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(expected)
    for name, volume in expected.items():
        with h5py.File(out / name, "r") as f:
            recon = f["reconstruction"][()]
            attrs = dict(f.attrs)
        assert recon.shape == (3, 320, 320) and recon.dtype == np.float32
        np.testing.assert_allclose(recon, volume, rtol=1e-4, atol=1e-4 * np.abs(volume).max())
        assert attrs["checkpoint"] == str(path.absolute())
        if name == "file1000003.h5":  # test file: its stored mask and its attributes
            assert attrs["acceleration"] == 3
            assert attrs["center_fraction"] == pytest.approx(20 / 368)
        else:
            assert (attrs["acceleration"], attrs["center_fraction"]) == (8, 0.04)

    # fnaf evaluate consumes the files; its numbers equal fastMRI metrics computed here
    target_dir = tmp_path / "targets"
    target_dir.mkdir()
    for name in ("file1000001.h5", "file1000002.h5"):
        shutil.copy(data / name, target_dir / name)
    assert main(["evaluate", "--target", str(target_dir), "--predictions", str(out),
                 "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    records = {r["fname"]: r for r in report["volumes"]}
    assert sorted(records) == ["file1000001.h5", "file1000002.h5"]
    for name, record in records.items():
        with h5py.File(data / name, "r") as f:
            gt = f["reconstruction_esc"][()]
        mine = volume_metrics(gt, expected[name])
        assert record["acceleration"] == 8.0
        for metric in ("nmse", "psnr", "ssim"):
            assert record[metric] == pytest.approx(mine[metric], rel=1e-3), metric


def test_batch_size_must_be_positive(checkpoint, data, tmp_path):
    from fnaf_jax.inference import ReconstructConfig

    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        ReconstructConfig(str(checkpoint[0]), str(data), str(tmp_path), batch_size=0)


def test_bad_files_stop_the_run_unless_skip_bad(checkpoint, data, tmp_path, capsys):
    path, _ = checkpoint
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(data / "file1000001.h5", mixed / "file1000001.h5")
    (mixed / "file1000009.h5").write_bytes(b"truncated")
    argv = ["reconstruct", "--checkpoint", str(path), "--data", str(mixed), "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "stopped")]) == 2
    assert "file1000009.h5: not a readable HDF5 file" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "skipped"), "--skip-bad"]) == 0
    assert sorted(p.name for p in (tmp_path / "skipped").glob("*.h5")) == ["file1000001.h5"]
