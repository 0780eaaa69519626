"""Host-side (NumPy) transforms, one per model family, each returning a typed sample.

- ``unet_sample``: fastMRI's ``UnetDataTransform`` (z-scored zero-filled magnitude of the
  centre crop, and the target z-scored with the image's statistics);
- ``irim_sample``: the i-RIM release's ``TrainingTransform`` (field of view cropped or
  padded to F x F in image space, under-sampled, zero-filled complex image).

``SliceDataset`` (validation, ``fnaf reconstruct``) and the training tasks both call
these, so the data a model trains on and the data it is evaluated on cannot drift apart.
``fft2c``/``ifft2c`` are the NumPy twins of ``fnaf_jax.physics`` (no JAX in data workers).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fnaf_jax.normalize import normalize, normalize_instance
from fnaf_jax.physics import center_crop

_AXES = (-2, -1)


def fft2c(image: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT of the last two axes (NumPy twin of ``physics.fft2c``)."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=_AXES), axes=_AXES, norm="ortho"), axes=_AXES)


def ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse FFT (NumPy twin of ``physics.ifft2c``)."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=_AXES), axes=_AXES, norm="ortho"), axes=_AXES)


def zero_filled_image(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``ifft2c(M * k)`` as complex64: the under-sampled image every model starts from."""
    return ifft2c(kspace * np.asarray(mask)[..., None, :].astype(np.complex64)).astype(np.complex64)


class UnetSample(NamedTuple):
    image: np.ndarray  # (h, w) float32 z-scored zero-filled magnitude
    target: np.ndarray  # (h, w) float32 target z-scored with the image's statistics
    mean: np.float32
    std: np.float32


def unet_sample(kspace: np.ndarray, mask: np.ndarray, target: np.ndarray | None, crop) -> UnetSample:
    """One slice through fastMRI's UnetDataTransform; a missing target (test file) gives zeros."""
    crop = tuple(crop)
    image = np.abs(center_crop(zero_filled_image(kspace, mask), crop)).astype(np.float32)
    image, mean, std = normalize_instance(image)
    target_z = (np.zeros(crop, np.float32) if target is None
                else normalize(center_crop(np.asarray(target, np.float32), crop), mean, std))
    return UnetSample(np.asarray(image, np.float32), np.asarray(target_z, np.float32),
                      np.float32(np.asarray(mean).item()), np.float32(np.asarray(std).item()))


def crop_field_of_view(kspace: np.ndarray, size: int) -> np.ndarray:
    """k-space of the ``size x size`` centre of the image, zero-padded where it is smaller.

    The release pads by ``p = max(H - size, W - size) // 2 + 1`` on every side before the
    centre crop; padding by any amount large enough gives the same crop.
    """
    image = ifft2c(kspace)
    h, w = image.shape[-2:]
    pad_h, pad_w = max(0, size - h) // 2 + 1, max(0, size - w) // 2 + 1
    image = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w)))
    return fft2c(center_crop(image, (size, size))).astype(np.complex64)


class IrimSample(NamedTuple):
    y: np.ndarray  # (F, F) complex64 zero-filled image of the cropped field of view
    mask: np.ndarray  # (F,) float32 column mask applied
    target: np.ndarray  # (c, c) float32 centre of the target


def irim_sample(kspace: np.ndarray, target: np.ndarray, fov: int, out_size: int,
                mask: np.ndarray) -> IrimSample:
    """One slice through the i-RIM release's transform, with the (F,) column ``mask``."""
    cropped = crop_field_of_view(np.asarray(kspace), fov)
    mask = np.asarray(mask, np.float32)
    return IrimSample(zero_filled_image(cropped, mask), mask,
                      center_crop(np.asarray(target, np.float32), (out_size, out_size)))
