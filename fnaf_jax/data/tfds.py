"""TFDS builder ``fastmri_knee_singlecoil`` (optional extra ``tfds``).

fastMRI cannot be downloaded by a script (it needs a signed data-use agreement), so the
builder uses TFDS's manual-download pattern: it reads the ``.h5`` files from
``manual_dir`` through ``SliceDataset`` and writes one example per slice, so the stored
values are exactly the dataset's items. Two configs:

* ``unet``: z-scored ``image``/``target`` with ``mean``, ``std``, ``target_raw`` and the
  column ``mask``; masks are fastMRI's validation masks (seeded by file name), set by the
  config's ``mask_type``/``center_fractions``/``accelerations`` (default 4x random).
* ``kspace``: fully sampled ``kspace`` as (640, W, 2) float32 (real, imaginary) plus
  ``target_raw``, for training with masks drawn on the fly.

Built with ``file_format="array_record"`` it reads back with ``tfds.data_source`` and
needs no TensorFlow (``pip install tensorflow-datasets``); the default TFRecord format
and ``tfds.load`` need ``tensorflow`` too.

Splits come from sub-folders of ``manual_dir`` (``singlecoil_train``/``train`` and
``singlecoil_val``/``val``, fastMRI's own names first) or from ``train.txt``/``val.txt``
listing file names relative to ``manual_dir``, one per line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from fnaf_jax.data.fastmri import SliceDataset
from fnaf_jax.errors import DataError
from fnaf_jax.masks import create_mask_for_mask_type

__all__ = ["FastmriConfig", "FastmriKneeSinglecoil", "build", "split_files"]

SPLITS = {"train": ("singlecoil_train", "train"), "validation": ("singlecoil_val", "val")}
LIST_FILES = {"train": "train.txt", "validation": "val.txt"}


@dataclasses.dataclass
class FastmriConfig(tfds.core.BuilderConfig):
    """Which items to store: ``transform`` "unet" (masked, z-scored) or "kspace"."""

    transform: str = "unet"
    mask_type: str = "random"
    center_fractions: tuple[float, ...] = (0.08,)
    accelerations: tuple[int, ...] = (4,)


def _read_list(path: Path, root: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    files = [root / name for name in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{path}: lists {len(missing)} missing files: {', '.join(missing)}")
    return [str(f) for f in files]


def split_files(manual_dir) -> dict[str, list[str]]:
    """{split: sorted .h5 paths} found in ``manual_dir`` (sub-folders or list files)."""
    root = Path(manual_dir)
    if not root.is_dir():
        raise DataError(f"{root}: manual_dir is not a folder")
    out = {}
    for split, folders in SPLITS.items():
        listing = root / LIST_FILES[split]
        if listing.is_file():
            out[split] = _read_list(listing, root)
            continue
        for name in folders:
            if (root / name).is_dir():
                out[split] = sorted(str(p) for p in (root / name).glob("*.h5"))
                break
    out = {split: files for split, files in out.items() if files}
    if not out:
        raise DataError(f"{root}: no split found; expected sub-folders singlecoil_train/ "
                        "and singlecoil_val/ of .h5 files, or train.txt/val.txt lists")
    return out


def _image(*channels):
    # Sizes vary between files (widths 368, 372, ...); TFDS stores such arrays as bytes.
    return tfds.features.Tensor(shape=(None, None, *channels), dtype=np.float32,
                                encoding="bytes")


def _scalar(dtype, doc):
    return tfds.features.Scalar(dtype=dtype, doc=doc)


class FastmriKneeSinglecoil(tfds.core.GeneratorBasedBuilder):
    """fastMRI knee single-coil slices, as fnaf-jax's SliceDataset reads them."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict] = {"1.0.0": "First release: unet and kspace configs."}
    BUILDER_CONFIGS: ClassVar[list] = [
        FastmriConfig(name="unet", description="4x random-mask zero-filled inputs, "
                      "z-scored as fastMRI's UnetDataTransform"),
        FastmriConfig(name="kspace", transform="kspace",
                      description="fully sampled k-space and the target"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Request fastMRI at https://fastmri.med.nyu.edu/ (data-use agreement), download the
    knee single-coil archives and extract them into `manual_dir` so that it holds
    `singlecoil_train/*.h5` and `singlecoil_val/*.h5` (or `train/` and `val/`). To pick
    files yourself, put `train.txt` and `val.txt` in `manual_dir` instead, each listing
    .h5 paths relative to `manual_dir`, one per line.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        common = {
            "fname": tfds.features.Text(doc="file name, e.g. file1000001.h5"),
            "slice_num": _scalar(np.int32, "slice index in the volume"),
            "max_value": _scalar(np.float64, "attrs['max'] of the volume"),
            "acquisition": tfds.features.Text(),
            "system_model": tfds.features.Text(),
            "metadata": tfds.features.Tensor(shape=(8,), dtype=np.float32,
                                             doc="i-RIM scanner x fat-suppression one-hot"),
            "target_raw": _image(),
        }
        if cfg.transform == "unet":
            common.update(
                image=_image(),
                target=_image(),
                mean=_scalar(np.float32, "mean of the zero-filled image"),
                std=_scalar(np.float32, "unbiased std of the zero-filled image"),
                mask=tfds.features.Tensor(shape=(None,), dtype=np.float32),
                num_low_frequencies=_scalar(np.int32, "fully sampled centre columns"),
            )
        else:
            common["kspace"] = _image(2)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(common),
            homepage="https://fastmri.med.nyu.edu/",
        )

    def _split_generators(self, dl_manager):
        files = split_files(dl_manager.manual_dir)
        return {split: self._generate_examples(paths) for split, paths in files.items()}

    def _mask_func(self):
        cfg = self.builder_config
        if cfg.transform != "unet":
            return None
        return create_mask_for_mask_type(cfg.mask_type, list(cfg.center_fractions),
                                         list(cfg.accelerations))

    def _generate_examples(self, paths):
        cfg = self.builder_config
        transform = "unet" if cfg.transform == "unet" else "raw"
        dataset = SliceDataset(paths, mask_func=self._mask_func(), transform=transform)
        for volume in dataset.volumes:
            if volume.target_shape is None:
                raise DataError(f"{volume.path}: test file (no reconstruction_esc); the "
                                "TFDS builder stores training/validation files only")
        for index in range(len(dataset)):
            item = dataset[index]
            yield f"{item['fname']}/{item['slice_num']}", to_example(item, cfg.transform)


def to_example(item: dict, transform: str) -> dict:
    """A SliceDataset item as a TFDS example of the config's features."""
    keys = ["fname", "slice_num", "max_value", "acquisition", "system_model", "metadata",
            "target_raw"]
    if transform == "unet":
        keys += ["image", "target", "mean", "std", "mask", "num_low_frequencies"]
    example = {key: item[key] for key in keys}
    if transform != "unet":
        kspace = item["kspace"]
        example["kspace"] = np.stack([kspace.real, kspace.imag], axis=-1).astype(np.float32)
    return example


def build(manual_dir, data_dir, config: str = "unet", file_format: str = "array_record"):
    """Prepare the dataset into ``data_dir``; returns the builder (see module docstring)."""
    builder = FastmriKneeSinglecoil(config=config, data_dir=str(data_dir),
                                    file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder
