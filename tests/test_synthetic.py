"""Synthetic knee set: fastMRI format, target consistency, determinism."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from fnaf_jax import cli
from fnaf_jax.data import phantom, synthetic
from fnaf_jax.data.annotations import read_fastmri_plus
from fnaf_jax.errors import ConfigError, DataError

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
        g_attr_types = {k: type(v) for k, v in g.attrs.items()}  # str / numpy.float64
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
            for key in g_attrs:
                assert type(f.attrs[key]) is g_attr_types[key], key
    assert acquisitions == {"CORPD_FBK", "CORPDFS_FBK"}


def test_target_is_cropped_magnitude_of_kspace(synthetic_dir):
    # Independent float64 numpy computation of |center_crop_320(ifft2c(kspace))|.
    with h5py.File(synthetic_dir / "file1000001.h5") as f:
        k, target = f["kspace"][()].astype(np.complex128), f["reconstruction_esc"][()]
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"),
                          axes=(-2, -1))
    ref = np.abs(img[:, 160:480, 24:344])
    assert np.max(np.abs(ref - target)) <= 1e-5 * ref.max()


def test_file_equals_in_memory_volume(synthetic_dir):
    # A volume depends on (seed, index, slices, width) only, not on the set's size.
    vol = synthetic.make_volume(1, n_slices=3, width=368, seed=0)
    with h5py.File(synthetic_dir / "file1000002.h5") as f:
        np.testing.assert_array_equal(f["kspace"][()], vol.kspace)
        np.testing.assert_array_equal(f["reconstruction_esc"][()], vol.target)
        assert f["ismrmrd_header"][()] == vol.header


def test_first_index_numbers_a_second_split_after_the_first(tmp_path):
    paths = synthetic.write_dataset(tmp_path / "val", n_volumes=2, n_slices=1, width=336,
                                    seed=5, first_index=3)
    assert [p.name for p in paths] == ["file1000004.h5", "file1000005.h5"]
    vol = synthetic.make_volume(3, n_slices=1, width=336, seed=5)
    with h5py.File(paths[0]) as f:
        np.testing.assert_array_equal(f["kspace"][()], vol.kspace)
    with pytest.raises(ConfigError, match="first_index"):
        synthetic.write_dataset(tmp_path / "bad", n_volumes=1, first_index=-1)


def test_deterministic_and_seed_dependent(tmp_path):
    a = synthetic.make_volume(0, n_slices=2, width=336, seed=3)
    b = synthetic.make_volume(0, n_slices=2, width=336, seed=3)
    c = synthetic.make_volume(0, n_slices=2, width=336, seed=4)
    np.testing.assert_array_equal(a.kspace, b.kspace)
    assert a.attrs == b.attrs
    assert np.abs(a.target - c.target).max() > 0.05 * a.target.max()


def _kspace_noise_sigma(kspace):
    """Noise std per real component, from the k-space corners (no signal left there)."""
    corners = np.concatenate([kspace[:, :40, 10:40], kspace[:, :40, -40:-10]], axis=-1)
    return float(np.sqrt(np.mean(np.abs(corners) ** 2) / 2))


def test_contrasts_and_snr(synthetic_dir):
    # FS volumes: darker overall (fat and marrow suppressed: a lower median signal in the
    # same scanner units) and a lower SNR.
    stats = {}
    for name in ("file1000001.h5", "file1000002.h5"):
        with h5py.File(synthetic_dir / name) as f:
            target, k = f["reconstruction_esc"][()], f["kspace"][()]
            stats[f.attrs["acquisition"]] = (
                float(np.median(target)),
                float(target.max() / _kspace_noise_sigma(k)),
            )
    (pd_median, pd_snr), (fs_median, fs_snr) = stats["CORPD_FBK"], stats["CORPDFS_FBK"]
    # Expected peak / sigma: sqrt(2) / 0.012 = 118 (PD), sqrt(2) / 0.035 = 40 (FS), each
    # times a per-volume factor in [0.8, 1.25]^2.
    assert 70 < pd_snr < 190 and 25 < fs_snr < 65 and fs_snr < pd_snr
    assert fs_median < pd_median


def test_slices_change_through_the_volume(synthetic_dir):
    with h5py.File(synthetic_dir / "file1000001.h5") as f:
        target = f["reconstruction_esc"][()]
    scale = np.percentile(target, 99)  # not the max: the coil's hot spots set it
    first, last = target[0] / scale, target[-1] / scale
    # Anterior and posterior slices cut different parts of the condyles.
    assert np.mean(np.abs(first - last) > 0.2) > 0.03


def test_lesions_change_only_their_boxes():
    # Exact check on the noise-free magnitude phantom: lesions touch only their boxes.
    rng = np.random.default_rng(7)
    clean, geoms, shape = phantom.knee_volume(rng, 4, 640, 336, False, return_geometry=True)
    painted = clean.copy()
    lesions = phantom.plant_lesions(np.random.default_rng(1), painted, geoms, shape, False,
                                    (160, 8, 320, 320), probability=1.0)
    assert len(lesions) >= 4
    outside = np.ones(clean.shape, bool)
    for les in lesions:
        box = (les.slice, slice(*les.rows), slice(*les.cols))
        assert np.abs(painted[box] - clean[box]).max() > 0.05
        outside[box] = False
    np.testing.assert_array_equal(painted[outside], clean[outside])


def test_annotation_boxes_land_on_lesions(synthetic_lesion_dir):
    # End to end: annotations.csv (read with the fastMRI+ reader) against the targets.
    paths = sorted(synthetic_lesion_dir.glob("*.h5"))
    boxes = read_fastmri_plus(synthetic_lesion_dir / synthetic.ANNOTATIONS)
    assert len(boxes) == 4  # as the fixture's docstring promises
    assert {b.label for b in boxes} <= {phantom.CARTILAGE_PARTIAL, phantom.CARTILAGE_FULL,
                                        phantom.MENISCUS_TEAR, phantom.MARROW_EDEMA}
    for index, path in enumerate(paths):
        clean = synthetic.make_volume(index, n_slices=3, seed=1).target
        with h5py.File(path) as f:
            diff = np.abs(f["reconstruction_esc"][()] - clean)
        inside = np.zeros(diff.shape, bool)
        for b in (b for b in boxes if b.fname == path.name):
            box = (b.slice, slice(*b.rows), slice(*b.cols))
            assert diff[box].max() > 0.04 * clean.max(), b
            inside[box] = True
        # Outside the boxes only round-off and the faint ringing of the zeroed edge
        # columns remain (measured: 0.3% of the lesion contrast).
        if inside.any():
            assert diff[~inside].max() < 0.01 * diff[inside].max()
        else:
            assert diff.max() == 0


def test_cli_writes_files_annotations_and_preview(tmp_path):
    out = tmp_path / "set"
    status = cli.main(["synth", "--out", str(out), "--volumes", "2", "--slices", "2",
                       "--width", "332", "--seed", "5", "--lesions", "--preview"])
    assert status == 0
    assert sorted(p.name for p in out.glob("*.h5")) == ["file1000001.h5", "file1000002.h5"]
    with h5py.File(out / "file1000002.h5") as f:
        assert f["kspace"].shape == (2, 640, 332)
        head = _header_fields(f["ismrmrd_header"][()])
        assert head["encoded"] == (640, 332, 1)
        _, hi, center = head["limits"]
        # fastMRI's padding_left = W//2 - center must equal the first acquired column.
        first = 332 // 2 - center
        k = f["kspace"][()]
        assert np.all(k[..., :first] == 0) and np.all(k[..., first + hi + 1:] == 0)
        assert np.all(np.abs(k[..., first]).max(axis=-1) > 0)
    assert (out / synthetic.ANNOTATIONS).read_text().startswith(
        "file,slice,study_level,x,y,width,height,label")
    png = (out / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_bad_arguments_raise_errors(tmp_path):
    with pytest.raises(ConfigError, match="width"):
        synthetic.make_volume(0, n_slices=1, width=300)
    with pytest.raises(ConfigError, match="n_volumes"):
        synthetic.write_dataset(tmp_path, n_volumes=0)
    with pytest.raises(DataError, match="no .h5"):
        synthetic.save_preview(tmp_path, tmp_path / "p.png")
    (tmp_path / "file1000009.h5").write_bytes(b"")
    with pytest.raises(DataError, match="file1000009.h5"):
        synthetic.write_dataset(tmp_path, n_volumes=1, n_slices=1)
    with pytest.raises(DataError, match="not a folder"):
        synthetic.write_dataset(tmp_path / "file1000009.h5", n_volumes=1, n_slices=1)


def test_anatomy_orientation_and_variation():
    # fastMRI orientation: femur above the joint line, tibia below, in the crop's middle;
    # every volume draws its own size, angle and position.
    shapes, centres = [], []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        _, geoms, shape = phantom.knee_volume(rng, 3, 640, 368, False, return_geometry=True)
        rows = np.arange(640)[:, None] * np.ones((1, 368))
        g = geoms[1]
        femur_row, tibia_row = rows[g.femur < 0].mean(), rows[g.tibia < 0].mean()
        joint_row = rows[(g.femur > 0) & (g.tibia > 0) & (np.abs(g.v) < 2)].mean()
        assert femur_row < joint_row < tibia_row
        assert 160 + 100 < joint_row < 480 - 100
        shapes.append(shape)
        centres.append(joint_row)
    assert shapes[0].scale != shapes[1].scale and shapes[0].angle != shapes[1].angle
    assert centres[0] != centres[1]
