"""fastMRI single-coil HDF5 volumes as a dataset of slices.

``SliceDataset`` scans a folder (or one file, or a list of files) once at construction,
reading only shapes, the ISMRMRD header and attrs, and then reads one slice per item,
opening the file for that read only: no h5py handle outlives a call, so the dataset
pickles into loader worker processes. Items are dicts of numpy values whose
keys are fixed by docs/interfaces.md ("unet" and "raw" transforms).

Bad files (missing, truncated, not HDF5, no ``kspace``, wrong rank or dtype, header
without sizes, ...) are collected during the scan and reported together in one
``DataError``; ``skip_bad=True`` drops them with one logged warning instead. NaN/Inf
values are found when a slice is read (checking whole volumes up front would read the
whole data set) and raise a ``DataError`` naming the file and slice.

The "unet" transform is fastMRI's ``UnetDataTransform``: the mask is drawn from the
file name (``use_seed``) and applied without zeroing the padding columns (fastMRI's
UnetDataTransform passes no padding to ``apply_mask``; ``zero_padding=True`` does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from fnaf_jax.data.header import Header, HeaderError, metadata_onehot, parse_header
from fnaf_jax.data.loader import make_loader  # re-exported beside the dataset
from fnaf_jax.data.transforms import unet_sample
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.masks import file_seed

__all__ = [
    "TRANSFORMS",
    "SliceDataset",
    "Volume",
    "file_seed",
    "make_loader",
    "metadata_onehot",
    "scan_volume",
]

log = logging.getLogger(__name__)

TRANSFORMS = ("unet", "raw")
RECONS_KEY = {"singlecoil": "reconstruction_esc"}


@dataclass(frozen=True)
class Volume:
    """What the scan learned about one file; small and picklable (no h5py objects)."""

    path: str
    num_slices: int
    kspace_shape: tuple[int, int]  # (rows, columns) of one slice
    header: Header
    acquisition: str
    max_value: float
    target_shape: tuple[int, int] | None  # None for test/challenge files
    stored_mask: np.ndarray | None = field(default=None, repr=False)  # test files: (W,)
    stored_num_low: int = 0
    metadata: np.ndarray = field(default=None, repr=False)  # (8,) i-RIM one-hot
    stored_acceleration: float | None = None  # test files: the file's 'acceleration' attr

    @property
    def fname(self) -> str:
        return os.path.basename(self.path)


class _BadFile(ValueError):
    """A problem found while scanning a file; ``scan_volume`` adds the path (DataError)."""


def _attr_str(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    return str(value)


def _central_run(mask: np.ndarray) -> int:
    """Length of the run of sampled columns around the centre (num_low fallback)."""
    center = mask.shape[0] // 2
    if not mask[center]:
        return 0
    left, right = center, center
    while left > 0 and mask[left - 1]:
        left -= 1
    while right < mask.shape[0] - 1 and mask[right + 1]:
        right += 1
    return right - left + 1


def _check_kspace(dataset) -> tuple[int, int, int]:
    if not isinstance(dataset, h5py.Dataset):
        raise _BadFile("'kspace' is not a dataset")
    if dataset.ndim != 3:
        raise _BadFile(f"'kspace' has rank {dataset.ndim} (shape {dataset.shape}); "
                          "expected (slices, rows, columns) for single-coil data")
    if not np.issubdtype(dataset.dtype, np.complexfloating):
        raise _BadFile(f"'kspace' has dtype {dataset.dtype}; expected complex64")
    if min(dataset.shape) == 0:
        raise _BadFile(f"'kspace' is empty (shape {dataset.shape})")
    return dataset.shape


def _read_volume(hf: h5py.File, path: str, recons_key: str) -> Volume:
    if "kspace" not in hf:
        raise _BadFile("missing dataset 'kspace'")
    num_slices, rows, cols = _check_kspace(hf["kspace"])
    if "ismrmrd_header" not in hf:
        raise _BadFile("missing dataset 'ismrmrd_header'")
    raw = hf["ismrmrd_header"][()]
    header = parse_header(raw.tobytes() if isinstance(raw, np.ndarray) else raw)

    target_shape = None
    if recons_key in hf:
        target = hf[recons_key]
        if target.ndim != 3 or target.shape[0] != num_slices:
            raise _BadFile(f"{recons_key!r} has shape {target.shape}; expected "
                              f"({num_slices}, height, width) like 'kspace'")
        if not np.issubdtype(target.dtype, np.floating):
            raise _BadFile(f"{recons_key!r} has dtype {target.dtype}; expected float32")
        target_shape = tuple(target.shape[1:])
        if target_shape[0] > rows:
            raise _BadFile(f"{recons_key!r} slices {target_shape} are taller than "
                              f"the k-space ({rows} rows)")

    attrs = hf.attrs
    stored_mask, stored_num_low = None, 0
    if "mask" in hf:  # test/challenge file: k-space is already under-sampled
        stored_mask = np.asarray(hf["mask"][()]).astype(np.float32).reshape(-1)
        if stored_mask.shape != (cols,):
            raise _BadFile(f"'mask' has shape {hf['mask'].shape}; expected ({cols},)")
        key = next((k for k in ("num_low_frequency", "num_low_frequencies") if k in attrs),
                   None)
        stored_num_low = int(attrs[key]) if key else _central_run(stored_mask)
    elif target_shape is None:
        raise _BadFile(f"neither {recons_key!r} (training/validation file) nor "
                          "'mask' (test file) is present")

    acquisition = _attr_str(attrs.get("acquisition", ""))
    metadata = metadata_onehot(acquisition, header.system_model, strict=False)
    if not metadata.any():
        log.warning("%s: unknown scanner %r / acquisition %r: i-RIM metadata set to zeros",
                    path, header.system_model, acquisition)
    return Volume(
        path=path,
        num_slices=int(num_slices),
        kspace_shape=(int(rows), int(cols)),
        header=header,
        acquisition=acquisition,
        max_value=float(attrs["max"]) if "max" in attrs else 0.0,
        target_shape=target_shape,
        stored_mask=stored_mask,
        stored_num_low=stored_num_low,
        metadata=metadata,
        stored_acceleration=(float(attrs["acceleration"])
                             if stored_mask is not None and "acceleration" in attrs else None),
    )


def scan_volume(path: str | os.PathLike, recons_key: str = "reconstruction_esc") -> Volume:
    """Read shapes, header and attrs of one fastMRI file; DataError naming file and problem."""
    path = str(path)
    try:
        with h5py.File(path, "r") as hf:
            return _read_volume(hf, path, recons_key)
    except (HeaderError, _BadFile) as err:
        raise DataError(f"{path}: {err}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:  # h5py: truncated, corrupt or not HDF5 at all
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None


def _list_files(root) -> list[str]:
    if isinstance(root, (str, os.PathLike)):
        path = Path(root)
        if path.is_dir():
            files = sorted(str(p) for p in path.iterdir() if p.suffix == ".h5" and p.is_file())
            if not files:
                raise DataError(f"{path}: folder has no .h5 files")
            return files
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        return [str(path)]
    files = [str(p) for p in root]
    if not files:
        raise DataError("empty list of data files")
    return files


def scan_files(files: Sequence[str], recons_key: str, skip_bad: bool) -> list[Volume]:
    """Scan every file; all bad ones are reported in one DataError (or skipped, logged)."""
    volumes, bad = [], []
    for path in files:
        try:
            volumes.append(scan_volume(path, recons_key))
        except DataError as err:
            bad.append(str(err))
    if bad and not skip_bad:
        raise DataError(f"{len(bad)} of {len(files)} data files are unusable:\n  "
                        + "\n  ".join(bad))
    if bad:
        log.warning("skipping %d of %d data files:\n  %s", len(bad), len(files),
                    "\n  ".join(bad))
    if not volumes:
        raise DataError(f"no usable data files among {len(files)}")
    return volumes


def unet_crop_size(volume: Volume) -> tuple[int, int]:
    """fastMRI's crop: the target's size (header recon size for test files), but square
    of the k-space width when that is narrower (its "FLAIR 203" rule)."""
    rows, cols = volume.kspace_shape
    crop = volume.target_shape or tuple(volume.header.recon_size[:2])
    if cols < crop[1]:
        crop = (cols, cols)
    if crop[0] > rows:
        raise DataError(f"{volume.path}: crop size {crop} exceeds k-space size {(rows, cols)}")
    return crop


def unet_transform(kspace, mask, target, volume: Volume) -> dict:
    """fastMRI UnetDataTransform on one slice, at the volume's crop (``unet_crop_size``)."""
    return unet_sample(kspace, mask, target, unet_crop_size(volume))._asdict()


class SliceDataset:
    """Slices of fastMRI single-coil volumes; ``ds[i]`` is a dict (see docs/interfaces.md).

    ``root`` is a folder of ``.h5`` files, one file, or a list of files. ``mask_func``
    follows fastMRI's API (``mask_func(shape, offset=None, seed=None) -> (mask, num_low)``);
    with ``use_seed`` the seed is the file name, so a volume always gets the same mask.
    Test files (``mask`` dataset, no reconstruction) use their stored mask.
    """

    def __init__(self, root, challenge: str = "singlecoil", mask_func=None,
                 use_seed: bool = True, transform: str = "unet", skip_bad: bool = False,
                 zero_padding: bool = False):
        if challenge not in RECONS_KEY:
            raise ConfigError(f"challenge {challenge!r} is not supported (only 'singlecoil')")
        if transform not in TRANSFORMS:
            raise ConfigError(f"transform {transform!r} unknown; choose one of {TRANSFORMS}")
        self.root = root if isinstance(root, (str, os.PathLike)) else list(root)
        self.challenge = challenge
        self.recons_key = RECONS_KEY[challenge]
        self.mask_func = mask_func
        self.use_seed = use_seed
        self.transform = transform
        self.zero_padding = zero_padding
        self.volumes = scan_files(_list_files(root), self.recons_key, skip_bad)
        counts = np.array([v.num_slices for v in self.volumes])
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return (f"SliceDataset({self.root!r}, {len(self.volumes)} volumes, {len(self)} "
                f"slices, transform={self.transform!r})")

    def locate(self, index: int) -> tuple[Volume, int]:
        """(volume, slice number) of dataset item ``index``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"slice index {index} out of range for {n} slices")
        index %= n
        v = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.volumes[v], index - int(self._starts[v])

    def read_slice(self, volume: Volume, slice_num: int):
        """(kspace (rows, W) complex64, target or None) of one slice, checked finite."""
        where = f"{volume.path} slice {slice_num}"
        try:
            with h5py.File(volume.path, "r") as hf:
                kspace = np.asarray(hf["kspace"][slice_num], dtype=np.complex64)
                target = (np.asarray(hf[self.recons_key][slice_num], dtype=np.float32)
                          if volume.target_shape is not None else None)
        except (OSError, KeyError) as err:
            raise DataError(f"{where}: cannot read ({err})") from None
        if not np.isfinite(kspace).all():
            raise DataError(f"{where}: 'kspace' contains NaN or Inf")
        if target is not None and not np.isfinite(target).all():
            raise DataError(f"{where}: {self.recons_key!r} contains NaN or Inf")
        return kspace, target

    def column_mask(self, volume: Volume) -> tuple[np.ndarray, int]:
        """(mask (W,) float32, num_low_frequencies) used for every slice of ``volume``."""
        rows, cols = volume.kspace_shape
        if volume.stored_mask is not None:
            return volume.stored_mask, volume.stored_num_low
        if self.mask_func is None:
            return np.ones(cols, np.float32), 0
        seed = file_seed(volume.fname) if self.use_seed else None
        # fastMRI gives mask functions the single-coil tensor shape (rows, W, 2).
        mask, num_low = self.mask_func((rows, cols, 2), offset=None, seed=seed)
        mask = np.asarray(mask, dtype=np.float32).reshape(-1)
        if mask.shape != (cols,):
            raise ConfigError(f"mask_func returned {mask.size} values for {cols} columns")
        if self.zero_padding:
            mask = mask.copy()
            mask[: volume.header.padding_left] = 0
            mask[volume.header.padding_right:] = 0
        return mask, int(num_low)

    def __getitem__(self, index: int) -> dict:
        volume, slice_num = self.locate(index)
        kspace, target = self.read_slice(volume, slice_num)
        mask, num_low = self.column_mask(volume)
        item = {
            "mask": mask,
            "num_low_frequencies": num_low,
            "target_raw": target,
            "fname": volume.fname,
            "slice_num": slice_num,
            "max_value": volume.max_value,
            "acquisition": volume.acquisition,
            "system_model": volume.header.system_model,
            "metadata": volume.metadata,
        }
        if self.transform == "raw":
            item["kspace"] = kspace * mask[None, :].astype(np.complex64)
        else:
            item.update(unet_transform(kspace, mask, target, volume))
        return item
