"""Synthetic knee set: fastMRI format, target consistency, determinism."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from fnaf_jax.data import synthetic

NS = {"m": "http://www.ismrm.org/ISMRMRD"}


def _header_fields(raw: bytes) -> dict:
    root = ET.fromstring(raw)
    enc = root.find("m:encoding", NS)

    def ints(path):
        node = enc.find(path, NS)
        return tuple(int(node.find(f"m:{k}", NS).text) for k in ("x", "y", "z")) \
            if "matrixSize" in path else \
            tuple(int(node.find(f"m:{k}", NS).text) for k in ("minimum", "maximum", "center"))

    return {
        "encoded": ints("m:encodedSpace/m:matrixSize"),
        "recon": ints("m:reconSpace/m:matrixSize"),
        "limits": ints("m:encodingLimits/m:kspace_encoding_step_1"),
        "system": root.find("m:acquisitionSystemInformation/m:systemModel", NS).text,
    }


def test_files_match_golden_format(synthetic_dir, golden):
    files = sorted(synthetic_dir.glob("*.h5"))
    assert [f.name for f in files] == ["file1000001.h5", "file1000002.h5"]
    with h5py.File(golden / "unet_transform_file1000031.h5") as g:
        g_keys, g_attrs = set(g), set(g.attrs)
        g_dtypes = {k: g[k].dtype for k in ("kspace", "reconstruction_esc")}
        g_head = _header_fields(g["ismrmrd_header"][()])
    acquisitions = set()
    for path in files:
        with h5py.File(path) as f:
            assert set(f) == g_keys and set(f.attrs) == g_attrs
            assert f["kspace"].shape == (3, 640, 368)
            assert f["reconstruction_esc"].shape == (3, 320, 320)
            for k, dt in g_dtypes.items():
                assert f[k].dtype == dt
            head = _header_fields(f["ismrmrd_header"][()])
            assert head["encoded"] == g_head["encoded"] and head["recon"] == g_head["recon"]
            assert head["limits"] == g_head["limits"]
            assert head["system"] in synthetic.SCANNERS
            target = f["reconstruction_esc"][()]
            assert f.attrs["max"] == pytest.approx(float(target.max()), rel=1e-7)
            assert f.attrs["norm"] == pytest.approx(
                float(np.linalg.norm(target.astype(np.float64))), rel=1e-6)
            assert 1e-4 <= f.attrs["max"] <= 5e-4
            acquisitions.add(f.attrs["acquisition"])
            int(f.attrs["patient_id"], 16)  # a hex string
    assert acquisitions == {"CORPD_FBK", "CORPDFS_FBK"}


def test_target_is_cropped_magnitude_of_kspace(synthetic_dir):
    # Independent float64 numpy computation of |center_crop_320(ifft2c(kspace))|.
    with h5py.File(synthetic_dir / "file1000001.h5") as f:
        k, target = f["kspace"][()].astype(np.complex128), f["reconstruction_esc"][()]
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"),
                          axes=(-2, -1))
    ref = np.abs(img[:, 160:480, 24:344])
    assert np.max(np.abs(ref - target)) <= 1e-5 * ref.max()


def test_deterministic_and_seed_dependent(tmp_path):
    a = synthetic.make_volume(0, n_slices=2, width=336, seed=3)
    b = synthetic.make_volume(0, n_slices=2, width=336, seed=3)
    c = synthetic.make_volume(0, n_slices=2, width=336, seed=4)
    np.testing.assert_array_equal(a.kspace, b.kspace)
    assert a.attrs == b.attrs
    assert np.abs(a.target - c.target).max() > 0.05 * a.target.max()
