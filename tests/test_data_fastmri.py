"""SliceDataset against fastMRI's UnetDataTransform outputs (golden), test files, the
i-RIM metadata one-hot, pickling, and the Grain loader's batching and order."""

from __future__ import annotations

import logging
import pickle
import shutil

import grain
import h5py
import numpy as np
import pytest

from fnaf_jax.data.fastmri import SliceDataset
from fnaf_jax.data.header import header_xml, metadata_onehot
from fnaf_jax.data.loader import SliceSource, collate, epoch_order, make_loader
from fnaf_jax.errors import ConfigError
from fnaf_jax.masks import RandomMaskFunc

GOLDEN_NAME = "file1000031.h5"  # the name that seeded the golden mask


@pytest.fixture(scope="module")
def golden_dir(golden, tmp_path_factory):
    out = tmp_path_factory.mktemp("golden_data")
    shutil.copy(golden / "unet_transform_file1000031.h5", out / GOLDEN_NAME)
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """Two small volumes (3 slices of 64x48 k-space, 32x32 targets), random content."""
    out = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for name, acquisition, model in (("file1000001.h5", "CORPD_FBK", "Skyra"),
                                     ("file1000002.h5", "CORPDFS_FBK", "Prisma_fit")):
        with h5py.File(out / name, "w") as f:
            f["kspace"] = (rng.standard_normal((3, 64, 48))
                           + 1j * rng.standard_normal((3, 64, 48))).astype(np.complex64)
            f["reconstruction_esc"] = rng.random((3, 32, 32), np.float32)
            f["ismrmrd_header"] = np.bytes_(header_xml((64, 48, 1), (32, 32, 1),
                                                       system_model=model))
            f.attrs.update(acquisition=acquisition, max=1.0)
    return out


@pytest.fixture(scope="module")
def ref(golden):
    return dict(np.load(golden / "unet_transform_outputs.npz"))


def test_unet_transform_matches_fastmri_golden(golden_dir, ref):
    ds = SliceDataset(golden_dir, mask_func=RandomMaskFunc([0.08], [4]))
    assert len(ds) == 2
    header = ds.volumes[0].header
    assert (header.padding_left, header.padding_right) == (ref["padding_left"],
                                                          ref["padding_right"])
    assert header.encoding_size == tuple(ref["encoding_size"])
    assert header.recon_size == tuple(ref["recon_size"])
    for i in range(2):
        item = ds[i]
        assert item["image"].shape == item["target"].shape == (320, 320)
        assert item["image"].dtype == item["target"].dtype == np.float32
        np.testing.assert_allclose(item["image"], ref["image"][i], rtol=0, atol=1e-5)
        np.testing.assert_allclose(item["target"], ref["target"][i], rtol=0, atol=1e-5)
        np.testing.assert_allclose(item["mean"], ref["mean"][i], rtol=1e-5)
        np.testing.assert_allclose(item["std"], ref["std"][i], rtol=1e-5)
        np.testing.assert_array_equal(item["mask"], ref["mask"])
        assert item["num_low_frequencies"] == ref["num_low_frequencies"]
        assert item["fname"] == ref["fname"][i] and item["slice_num"] == ref["slice_num"][i]
        assert item["max_value"] == ref["max_value"][i]
        assert item["acquisition"] == "CORPD_FBK" and item["system_model"] == "Skyra"
        np.testing.assert_array_equal(item["metadata"], np.eye(8, dtype=np.float32)[7])


def test_raw_transform_returns_file_contents(golden_dir, ref, golden):
    ds = SliceDataset(golden_dir / GOLDEN_NAME, mask_func=RandomMaskFunc([0.08], [4]),
                      transform="raw")
    item = ds[-1]  # negative index: the last slice
    with h5py.File(golden / "unet_transform_file1000031.h5") as f:
        kspace0, kspace, target = f["kspace"][0], f["kspace"][1], f["reconstruction_esc"][1]
    assert item["slice_num"] == 1 and item["kspace"].dtype == np.complex64
    np.testing.assert_array_equal(item["kspace"], kspace * ref["mask"])
    np.testing.assert_array_equal(item["target_raw"], target)
    assert "image" not in item
    full = SliceDataset(golden_dir, transform="raw")[0]  # no mask_func: fully sampled
    np.testing.assert_array_equal(full["mask"], np.ones(368, np.float32))
    np.testing.assert_array_equal(full["kspace"], kspace0)


def test_zero_padding_option_zeroes_unacquired_columns(golden_dir, ref):
    ds = SliceDataset(golden_dir, mask_func=RandomMaskFunc([0.08], [4]), zero_padding=True)
    expected = ref["mask"].copy()
    expected[:3] = 0
    expected[363:] = 0
    assert ref["mask"][:3].any()  # the golden (fastMRI) mask samples column 2
    np.testing.assert_array_equal(ds[0]["mask"], expected)


def test_test_file_uses_stored_mask(tmp_path, golden, ref):
    """A challenge file (masked k-space, `mask`, no target) gives the same input image."""
    with h5py.File(golden / "unet_transform_file1000031.h5") as f:
        kspace, header = f["kspace"][()], f["ismrmrd_header"][()]
    with h5py.File(tmp_path / "file1000031_test.h5", "w") as f:
        f["kspace"] = kspace * ref["mask"]
        f["mask"] = ref["mask"].astype(bool)
        f["ismrmrd_header"] = header
        f.attrs.update(acquisition="CORPD_FBK", acceleration=4, num_low_frequency=29)
    ds = SliceDataset(tmp_path, mask_func=RandomMaskFunc([0.08], [8]))  # ignored here
    item = ds[1]
    np.testing.assert_array_equal(item["mask"], ref["mask"])
    assert item["num_low_frequencies"] == 29 and item["target_raw"] is None
    np.testing.assert_allclose(item["image"], ref["image"][1], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(item["target"], np.zeros((320, 320), np.float32))
    assert item["max_value"] == 0.0


def test_narrow_kspace_crops_square_of_width(tmp_path):
    """fastMRI's rule: a k-space narrower than the target crops to (W, W)."""
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((1, 64, 48)) + 1j * rng.standard_normal((1, 64, 48)))
    with h5py.File(tmp_path / "narrow.h5", "w") as f:
        f["kspace"] = kspace.astype(np.complex64)
        f["mask"] = np.ones(48, np.float32)
        f["ismrmrd_header"] = np.bytes_(header_xml((64, 48, 1), (320, 320, 1)))
        f.attrs["acquisition"] = "CORPDFS_FBK"
    item = SliceDataset(tmp_path)[0]
    # Independent float64 computation of |center_crop(ifft2c(k))| z-scored.
    k = kspace[0]
    img = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho")))[8:56]
    z = np.clip((img - img.mean()) / (img.std(ddof=1) + 1e-11), -6, 6)
    assert item["image"].shape == (48, 48)
    np.testing.assert_allclose(item["image"], z, atol=1e-5)
    np.testing.assert_allclose(item["mean"], img.mean(), rtol=1e-5)
    assert item["num_low_frequencies"] == 48  # no attr: the central run of the mask


@pytest.mark.parametrize(
    ("acquisition", "model", "slot"),
    [("CORPDFS_FBK", "Aera", 0), ("CORPD_FBK", "Aera", 1), ("CORPDFS_FBK", "Biograph_mMR", 2),
     ("CORPD_FBK", "Biograph_mMR", 3), ("CORPDFS_FBK", "Prisma_fit", 4),
     ("CORPD_FBK", "Prisma_fit", 5), ("CORPDFS_FBK", "Skyra", 6), ("CORPD_FBK", "SKYRA", 7)])
def test_metadata_onehot_slots(acquisition, model, slot):
    np.testing.assert_array_equal(metadata_onehot(acquisition, model),
                                  np.eye(8, dtype=np.float32)[slot])


def test_metadata_unknown_scanner(tmp_path, caplog):
    with pytest.raises(ConfigError, match="Avanto"):
        metadata_onehot("CORPD_FBK", "Avanto")
    with pytest.raises(ConfigError, match="T2_FLAIR"):
        metadata_onehot("T2_FLAIR", "Skyra")
    assert not metadata_onehot("CORPD_FBK", "Avanto", strict=False).any()
    with h5py.File(tmp_path / "avanto.h5", "w") as f:
        f["kspace"] = np.ones((1, 64, 48), np.complex64)
        f["reconstruction_esc"] = np.ones((1, 32, 32), np.float32)
        f["ismrmrd_header"] = np.bytes_(header_xml((64, 48, 1), (32, 32, 1), system_model="Avanto"))
        f.attrs["acquisition"] = "CORPD_FBK"
    with caplog.at_level(logging.WARNING):
        item = SliceDataset(tmp_path, transform="raw")[0]
    assert not item["metadata"].any() and item["system_model"] == "Avanto"
    assert "avanto.h5" in caplog.text and "Avanto" in caplog.text


def test_dataset_pickles_and_indexes(tiny_dir):
    ds = SliceDataset(tiny_dir, mask_func=RandomMaskFunc([0.08], [4]))
    assert len(ds) == 6 and len(ds.volumes) == 2
    clone = pickle.loads(pickle.dumps(ds))
    a, b = ds[4], clone[4]
    assert (a["fname"], a["slice_num"]) == ("file1000002.h5", 1)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["acquisition"] == "CORPDFS_FBK" and a["metadata"][4] == a["metadata"].sum() == 1
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(ConfigError, match="transform"):
        SliceDataset(tiny_dir, transform="varnet")
    with pytest.raises(ConfigError, match="multicoil"):
        SliceDataset(tiny_dir, challenge="multicoil")


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_order(50, shuffle=True, seed=3, epoch=1)
    np.testing.assert_array_equal(a, epoch_order(50, shuffle=True, seed=3, epoch=1))
    assert sorted(a) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, shuffle=True, seed=3, epoch=2))
    assert not np.array_equal(a, epoch_order(50, shuffle=True, seed=4, epoch=1))
    np.testing.assert_array_equal(epoch_order(5, shuffle=False, seed=3), np.arange(5))


def test_loader_batches_follow_the_epoch_order(tiny_dir):
    ds = SliceDataset(tiny_dir, mask_func=RandomMaskFunc([0.08], [4]))
    loader = make_loader(ds, 4, shuffle=True, seed=7, epoch=1)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    order = epoch_order(6, shuffle=True, seed=7, epoch=1)
    first = batches[0]
    assert first["image"].shape == (4, 32, 32) and first["mask"].shape == (4, 48)
    assert first["mean"].shape == (4,) and first["metadata"].shape == (4, 8)
    assert isinstance(first["fname"], list) and len(first["fname"]) == 4
    for j, index in enumerate(order[:4]):
        item = ds[int(index)]
        assert (first["fname"][j], first["slice_num"][j]) == (item["fname"], item["slice_num"])
        np.testing.assert_array_equal(first["image"][j], item["image"])
    assert batches[1]["image"].shape[0] == 2  # remainder kept
    assert len(make_loader(ds, 4, shuffle=True, seed=7, drop_remainder=True)) == 1
    seen = [s for b in batches for s in zip(b["fname"], b["slice_num"].tolist())]
    assert sorted(seen) == sorted((v.fname, s) for v in ds.volumes for s in range(3))


def test_loader_workers_give_the_same_batches(tiny_dir):
    ds = SliceDataset(tiny_dir, transform="raw")
    serial = list(make_loader(ds, 3, shuffle=True, seed=1))
    parallel = list(make_loader(ds, 3, shuffle=True, seed=1, num_workers=2))
    assert len(parallel) == len(serial) == 2
    for a, b in zip(serial, parallel):
        assert a["fname"] == b["fname"] and type(b["kspace"]) is np.ndarray
        np.testing.assert_array_equal(a["kspace"], b["kspace"])
        np.testing.assert_array_equal(a["slice_num"], b["slice_num"])


def test_grain_source_view(tiny_dir):
    ds = SliceDataset(tiny_dir, transform="raw")
    source = SliceSource(ds)
    assert isinstance(source, grain.sources.RandomAccessDataSource) and len(source) == 6
    pipeline = grain.MapDataset.source(source)
    np.testing.assert_array_equal(pipeline[5]["kspace"], ds[5]["kspace"])
    assert "SliceDataset" in repr(source)


def test_collate_keeps_none_and_strings_as_lists():
    items = [{"a": np.ones(2), "s": "x", "t": None, "n": 1},
             {"a": np.zeros(2), "s": "y", "t": None, "n": 2}]
    out = collate(items)
    assert out["s"] == ["x", "y"] and out["t"] == [None, None]
    np.testing.assert_array_equal(out["a"], [[1, 1], [0, 0]])
    np.testing.assert_array_equal(out["n"], [1, 2])

