"""Single-coil MRI physics: centred orthonormal FFTs, crops and column under-sampling.

All functions are pure ``jnp`` and act on the last two axes, so they compose with
``jit`` and ``vmap``. Conventions follow fastMRI: ``fft2c(x) =
fftshift(fft2(ifftshift(x), norm="ortho"))``; shifts use ``n // 2`` (fftshift) and
``(n + 1) // 2`` (ifftshift), which matters for odd sizes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fnaf_jax.errors import DataError

_AXES = (-2, -1)


def _centred(transform, x, axes):
    """``fftshift(transform(ifftshift(x), norm="ortho"))`` over ``axes`` (fastMRI's centring);
    ``transform`` is ``jnp.fft.fftn`` or ``jnp.fft.ifftn``."""
    x = transform(jnp.fft.ifftshift(jnp.asarray(x), axes=axes), axes=axes, norm="ortho")
    return jnp.fft.fftshift(x, axes=axes)


def fft2c(image):
    """Centred orthonormal 2-D FFT over the last two axes (image -> k-space)."""
    return _centred(jnp.fft.fftn, image, _AXES)


def ifft2c(kspace):
    """Centred orthonormal inverse 2-D FFT over the last two axes (k-space -> image)."""
    return _centred(jnp.fft.ifftn, kspace, _AXES)


def _crop_start(n: int, size: int, axis_name: str) -> int:
    if size > n:
        # DataError is a ValueError: one clear CLI line instead of a traceback
        raise DataError(f"cannot crop {axis_name} of size {n} to {size}")
    return (n - size) // 2


def center_crop(x, shape):
    """Centre crop of the last two axes to ``shape = (h, w)``; start at ``(n - s) // 2``."""
    h, w = shape
    top = _crop_start(x.shape[-2], h, "rows")
    left = _crop_start(x.shape[-1], w, "columns")
    return x[..., top : top + h, left : left + w]


def complex_center_crop(x, shape):
    """Centre crop of a complex array (native complex dtype: same as ``center_crop``)."""
    return center_crop(x, shape)


def complex_abs(x):
    """Magnitude of a complex array (native complex dtype)."""
    return jnp.abs(x)


def apply_column_mask(kspace, mask):
    """Zero the k-space columns where ``mask`` is 0. ``mask`` has shape (..., W)."""
    mask = jnp.asarray(mask)
    return kspace * mask[..., None, :].astype(kspace.dtype)


def undersample(image, mask):
    """``U(x) = ifft2c(M * fft2c(x))`` for a real or complex image (..., H, W).

    ``mask`` (..., W) selects k-space columns. Linear in ``image``, so
    ``U(y + d) = U(y) + U(d)``; returns complex64 (complex128 for float64 input).
    """
    image = jnp.asarray(image)
    if not jnp.iscomplexobj(image):
        image = image.astype(jnp.result_type(image.dtype, jnp.complex64))
    # The mask depends on the column only, so the row transforms of fft2c and ifft2c
    # cancel exactly: 1-D transforms along the rows give the same U (within rounding)
    # for a third less time (the attacks under-sample every candidate).
    kspace_rows = apply_column_mask(_centred(jnp.fft.fftn, image, (-1,)), mask)
    return _centred(jnp.fft.ifftn, kspace_rows, (-1,))


def undersample_points(rows, cols, values, mask, shape):
    """``U(d)`` (n, H, W) complex64 of sparse images ``d``: ``values`` at (``rows``, ``cols``),
    each (n, P); ``mask`` (n, W). Pixels outside ``shape`` drop.

    Because the mask depends on the column only, ``U`` acts on each row alone (see
    ``undersample``), so by linearity ``U(d)`` is, for every pixel, its value times ``U``
    of a one-pixel row, added into the pixel's row: P transforms of length W instead of H
    (the attacks' features have P = 10 pixels in a 320-row image).
    """
    h, w = shape
    # Rows padded to a multiple of 16 (pixels off the image, dropped): with 10 rows per
    # feature, RS records on 4 simulated CPU devices differed in the last digits from run
    # to run (however the rows were then placed: scatter, product or masked sum); padded,
    # 6 runs were identical. Most likely the FFT's vectorised blocks of rows, which round
    # unlike its leftover rows and were split over the shared threads differently each run.
    pad = -rows.shape[-1] % 16
    rows, cols = (jnp.pad(a, ((0, 0), (0, pad)), constant_values=-1) for a in (rows, cols))
    values = jnp.pad(values, ((0, 0), (0, pad)))
    deltas = jax.nn.one_hot(cols, w, dtype=jnp.complex64) * values[..., None]  # (n, P, W); off-image cols: 0
    responses = undersample(deltas, mask)  # each of the P rows transformed along W
    # added into the rows (a scatter runs its updates in order: repeated rows sum alike)
    rows = jnp.where((rows >= 0) & (rows < h), rows, h)  # off-image rows go past the end: dropped
    n = rows.shape[0]
    out = jnp.zeros((n, h, w), responses.dtype)
    return out.at[jnp.arange(n)[:, None], rows].add(responses, mode="drop")


def zero_filled(kspace, mask, crop=(320, 320)):
    """Zero-filled magnitude image: ``|center_crop(ifft2c(M * k))|``."""
    return complex_abs(center_crop(ifft2c(apply_column_mask(kspace, mask)), crop))
