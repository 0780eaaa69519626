"""The TFDS builder fastmri_knee_singlecoil: build from tiny files in manual_dir, read back
with tfds.data_source (array_record, no TensorFlow needed) and compare with SliceDataset."""

from __future__ import annotations

import importlib.util
import sys

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from fnaf_jax.data.fastmri import SliceDataset
from fnaf_jax.data.header import header_xml
from fnaf_jax.data.tfds import FastmriKneeSinglecoil, build, split_files
from fnaf_jax.errors import DataError
from fnaf_jax.masks import RandomMaskFunc

ROWS, TARGET = 64, 32


def write_tiny(path, width, n_slices, seed, acquisition, model):
    """A tiny fully sampled file; target = |centre 32x32 of ifft2c(k)| (as fastMRI's)."""
    rng = np.random.default_rng(seed)
    shape = (n_slices, ROWS, width)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"),
                            axes=(-2, -1))
    top, left = (ROWS - TARGET) // 2, (width - TARGET) // 2
    target = np.abs(image[:, top:top + TARGET, left:left + TARGET]).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["kspace"] = kspace
        f["reconstruction_esc"] = target
        f["ismrmrd_header"] = np.bytes_(header_xml((ROWS, width, 1), (TARGET, TARGET, 1),
                                                   system_model=model))
        f.attrs.update(acquisition=acquisition, max=float(target.max()))


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("manual")
    (root / "singlecoil_train").mkdir()
    (root / "singlecoil_val").mkdir()
    write_tiny(root / "singlecoil_train" / "file1000001.h5", 48, 2, 0, "CORPD_FBK", "Skyra")
    write_tiny(root / "singlecoil_val" / "file1000002.h5", 52, 1, 1, "CORPDFS_FBK", "Aera")
    return root


def by_key(source):
    return {(ex["fname"].decode(), int(ex["slice_num"])): ex
            for ex in (source[i] for i in range(len(source)))}


def assert_same(example, item, keys):
    for key in keys:
        value = example[key]
        if isinstance(value, bytes):
            assert value.decode() == item[key], key
        else:
            np.testing.assert_array_equal(value, item[key], err_msg=key)


def test_builder_name_and_instructions():
    assert FastmriKneeSinglecoil.name == "fastmri_knee_singlecoil"
    assert "singlecoil_train" in FastmriKneeSinglecoil.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_unet_config_round_trip(manual_dir, tmp_path):
    build(manual_dir, tmp_path / "tfds", config="unet")
    for split, folder, n in (("train", "singlecoil_train", 2), ("validation", "singlecoil_val", 1)):
        source = tfds.data_source("fastmri_knee_singlecoil/unet", data_dir=str(tmp_path / "tfds"),
                                  split=split)
        examples = by_key(source)
        assert len(examples) == n
        ds = SliceDataset(manual_dir / folder, mask_func=RandomMaskFunc([0.08], [4]))
        for i in range(len(ds)):
            item = ds[i]
            assert_same(examples[item["fname"], item["slice_num"]], item,
                        ["image", "target", "mean", "std", "mask", "num_low_frequencies",
                         "target_raw", "metadata", "max_value", "acquisition", "system_model"])
    if importlib.util.find_spec("tensorflow") is None:
        assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_kspace_config_and_file_lists(manual_dir, tmp_path):
    # Splits from list files instead of folders: both files in train, none in validation.
    (manual_dir / "train.txt").write_text(
        "singlecoil_train/file1000001.h5\nsinglecoil_val/file1000002.h5\n")
    try:
        assert set(split_files(manual_dir)) == {"train", "validation"}
        (manual_dir / "val.txt").write_text("")
        assert set(split_files(manual_dir)) == {"train"}
        builder = build(manual_dir, tmp_path / "tfds", config="kspace")
    finally:
        for name in ("train.txt", "val.txt"):
            (manual_dir / name).unlink(missing_ok=True)
    examples = by_key(builder.as_data_source(split="train"))
    assert len(examples) == 3
    ds = SliceDataset([manual_dir / "singlecoil_train" / "file1000001.h5",
                       manual_dir / "singlecoil_val" / "file1000002.h5"], transform="raw")
    for i in range(len(ds)):
        item = ds[i]
        example = examples[item["fname"], item["slice_num"]]
        kspace = example["kspace"][..., 0] + 1j * example["kspace"][..., 1]
        np.testing.assert_array_equal(kspace, item["kspace"])
        assert_same(example, item, ["target_raw", "metadata", "acquisition"])


def test_manual_dir_errors(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        split_files(tmp_path / "missing")
    with pytest.raises(DataError, match="no split found"):
        split_files(tmp_path)
    (tmp_path / "train.txt").write_text("absent.h5\n")
    with pytest.raises(DataError, match="absent.h5"):
        split_files(tmp_path)
