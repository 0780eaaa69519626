"""The fastMRI reconstruction-file format, read and written in one place.

A submission file ``OUT/fileNNNNNNN.h5`` holds ``reconstruction`` (slices, 320, 320)
float32 and attributes (``acceleration``, ``center_fraction``, ``checkpoint``). Targets
are read with the same checks: the dataset exists, is (slices, H, W), real and finite.
Files are written atomically, so a partial file never appears under a real name.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from fnaf_jax.errors import DataError
from fnaf_jax.fileio import atomic_path

PREDICTION_KEY = "reconstruction"


def _attr(attrs, name):
    value = attrs[name]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_volume(path, key: str = PREDICTION_KEY, role: str = "prediction") -> tuple[np.ndarray, dict]:
    """``(volume (S, H, W), attrs)`` of dataset ``key``, checked; errors name the file."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                found = ", ".join(sorted(f.keys())) or "nothing"
                raise DataError(f"{path}: {role} file has no '{key}' dataset (found {found})")
            volume = np.asarray(f[key][()])
            attrs = {name: _attr(f.attrs, name) for name in f.attrs}
    except OSError as exc:
        raise DataError(f"{path}: cannot read {role} file as HDF5 ({exc})") from None
    if volume.ndim != 3:
        raise DataError(f"{path}: '{key}' must be (slices, H, W), got shape {volume.shape}")
    if np.iscomplexobj(volume):
        raise DataError(f"{path}: '{key}' must be a real magnitude image, got {volume.dtype}")
    if not np.all(np.isfinite(volume)):
        raise DataError(f"{path}: '{key}' holds NaN or infinite values")
    return volume, attrs


def write_reconstruction(path, images, *, acceleration, center_fraction, checkpoint) -> Path:
    """Write one volume's reconstruction file (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(PREDICTION_KEY, data=np.asarray(images, np.float32))
        f.attrs["acceleration"] = acceleration
        f.attrs["center_fraction"] = float(center_fraction)
        f.attrs["checkpoint"] = str(Path(checkpoint).absolute())
    return path
