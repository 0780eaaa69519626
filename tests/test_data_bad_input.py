"""Bad input to SliceDataset: every case raises DataError naming the file and the problem;
a folder scan reports all bad files at once, or skips them (logged) with skip_bad."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from fnaf_jax.data.fastmri import SliceDataset
from fnaf_jax.data.header import header_xml
from fnaf_jax.errors import DataError

SHAPE = (2, 64, 48)  # slices, rows, columns: small stand-in for (S, 640, 368)


def write_file(path, kspace=None, header=None, target=True, drop=()):
    """A small fastMRI-like file; ``drop`` names datasets to leave out."""
    rng = np.random.default_rng(0)
    if kspace is None:
        kspace = (rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE))
        kspace = kspace.astype(np.complex64)
    with h5py.File(path, "w") as f:
        if "kspace" not in drop:
            f["kspace"] = kspace
        if "ismrmrd_header" not in drop:
            f["ismrmrd_header"] = np.bytes_(header or header_xml((64, 48, 1), (32, 32, 1)))
        if target:
            f["reconstruction_esc"] = np.ones((SHAPE[0], 32, 32), np.float32)
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 1.0
    return path


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such file or folder") as err:
        SliceDataset(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    with pytest.raises(DataError, match="no .h5 files") as err:
        SliceDataset(tmp_path)
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("not_hdf5.h5", lambda p: p.write_text("just text"), "not a readable HDF5 file"),
        ("truncated.h5", None, "not a readable HDF5 file"),
        ("no_kspace.h5", lambda p: write_file(p, drop=("kspace",)), "missing dataset 'kspace'"),
        ("rank2.h5", lambda p: write_file(p, kspace=np.ones((64, 48), np.complex64)),
         "rank 2"),
        ("real.h5", lambda p: write_file(p, kspace=np.ones(SHAPE, np.float32)),
         "dtype float32"),
        ("no_sizes.h5", lambda p: write_file(p, header=header_xml(omit=("encodedSpace",))),
         "no encoding/encodedSpace/matrixSize/x"),
        ("no_limits.h5",
         lambda p: write_file(p, header=header_xml(omit=("kspace_encoding_step_1",))),
         "kspace_encoding_step_1/center"),
        ("bad_xml.h5", lambda p: write_file(p, header=b"<ismrmrdHeader"), "not valid XML"),
        ("no_header.h5", lambda p: write_file(p, drop=("ismrmrd_header",)),
         "missing dataset 'ismrmrd_header'"),
        ("no_target.h5", lambda p: write_file(p, target=False), "neither"),
    ],
)
def test_bad_file_names_file_and_problem(tmp_path, name, make, problem):
    path = tmp_path / name
    if make is None:  # a valid file cut in half, as an interrupted copy leaves it
        data = write_file(path).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        make(path)
    with pytest.raises(DataError) as err:
        SliceDataset(path)
    assert str(path) in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_kspace_fails_when_the_slice_is_read(tmp_path, bad):
    kspace = np.ones(SHAPE, np.complex64)
    kspace[1, 5, 7] = bad
    path = write_file(tmp_path / "nonfinite.h5", kspace=kspace)
    ds = SliceDataset(path)  # the scan reads no k-space values
    assert np.isfinite(ds[0]["image"]).all()
    with pytest.raises(DataError, match="NaN or Inf") as err:
        ds[1]
    assert f"{path} slice 1" in str(err.value)


def test_folder_scan_reports_every_bad_file(tmp_path):
    write_file(tmp_path / "good.h5")
    (tmp_path / "garbage.h5").write_bytes(b"\x00" * 100)
    write_file(tmp_path / "no_kspace.h5", drop=("kspace",))
    write_file(tmp_path / "no_sizes.h5", header=header_xml(omit=("reconSpace",)))
    with pytest.raises(DataError) as err:
        SliceDataset(tmp_path)
    message = str(err.value)
    assert "3 of 4 data files are unusable" in message
    for name in ("garbage.h5", "no_kspace.h5", "no_sizes.h5"):
        assert str(tmp_path / name) in message
    assert "good.h5" not in message


def test_skip_bad_keeps_good_files_and_logs_each_bad_one(tmp_path, caplog):
    write_file(tmp_path / "good.h5")
    (tmp_path / "garbage.h5").write_bytes(b"\x00" * 100)
    write_file(tmp_path / "rank2.h5", kspace=np.ones((64, 48), np.complex64))
    with caplog.at_level(logging.WARNING, logger="fnaf_jax.data.fastmri"):
        ds = SliceDataset(tmp_path, skip_bad=True, transform="raw")
    assert [v.fname for v in ds.volumes] == ["good.h5"] and len(ds) == 2
    assert "garbage.h5" in caplog.text and "rank2.h5" in caplog.text
    assert "skipping 2 of 3" in caplog.text


def test_skip_bad_with_nothing_left_still_fails(tmp_path):
    (tmp_path / "garbage.h5").write_bytes(b"junk")
    with pytest.raises(DataError, match="no usable data files"):
        SliceDataset(tmp_path, skip_bad=True)


def test_target_shape_must_match_kspace(tmp_path):
    path = write_file(tmp_path / "mismatch.h5", target=False)
    with h5py.File(path, "a") as f:
        f["reconstruction_esc"] = np.ones((3, 32, 32), np.float32)  # 3 slices, k-space 2
    with pytest.raises(DataError, match="'reconstruction_esc' has shape") as err:
        SliceDataset(path)
    assert str(path) in str(err.value)


def test_file_removed_after_scan(tmp_path):
    path = write_file(tmp_path / "gone.h5")
    ds = SliceDataset(path)
    path.unlink()
    with pytest.raises(DataError, match="cannot read") as err:
        ds[0]
    assert f"{path} slice 0" in str(err.value)
