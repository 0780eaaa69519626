"""fastMRI's image-quality metrics (``fastmri.evaluate``), plus a jit-able SSIM loss.

Volume metrics take (S, H, W) arrays (ground truth first) and follow fastMRI 0.3.0:

- ``mse  = mean((gt - pred)^2)``
- ``nmse = ||gt - pred||^2 / ||gt||^2``
- ``psnr = 10 log10(maxval^2 / mse)``
- ``ssim`` = mean over slices of scikit-image's ``structural_similarity`` with a 7x7
  uniform window, sample covariance (49/48), K1 = 0.01, K2 = 0.03; the SSIM map is
  averaged after dropping a 3-pixel border (the border that a 7x7 window overhangs).

``maxval`` (the data range) defaults to the ground-truth volume's max, as in
``fastmri.evaluate``. Everything here is computed in float64 on the host; fastMRI
computes float32 inputs in float32, and the two agree to ~1e-7 relative.

``ssim_jax`` is the per-image SSIM in ``jnp`` (differentiable, for ``1 - ssim`` losses),
and ``aggregate`` turns per-volume records into mean/std tables.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax.errors import DataError

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03
_NP = WIN_SIZE * WIN_SIZE
COV_NORM = _NP / (_NP - 1)  # sample covariance, as skimage's use_sample_covariance=True
METRIC_NAMES = ("nmse", "psnr", "ssim")


def _pair(gt, pred, what: str, ndim: int | None = None):
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape:
        raise DataError(
            f"{what}: ground truth shape {gt.shape} != prediction shape {pred.shape}"
        )
    if ndim is not None and gt.ndim != ndim:
        raise DataError(
            f"{what}: expected ({'S, H, W' if ndim == 3 else ndim}) arrays, got shape {gt.shape}"
        )
    if gt.size == 0:
        raise DataError(f"{what}: empty arrays")
    return gt, pred


def _data_range(gt: np.ndarray, maxval, what: str) -> float:
    value = float(gt.max()) if maxval is None else float(maxval)
    if not math.isfinite(value) or value <= 0:
        raise DataError(
            f"{what}: data range (maxval) must be positive and finite, got {value}"
        )
    return value


def mse(gt, pred) -> float:
    """Mean squared error over all voxels."""
    gt, pred = _pair(gt, pred, "mse")
    return float(np.mean((gt - pred) ** 2))


def nmse(gt, pred) -> float:
    """Normalized MSE ``||gt - pred||^2 / ||gt||^2``."""
    gt, pred = _pair(gt, pred, "nmse")
    denominator = float(np.sum(gt**2))
    if denominator == 0:
        raise DataError("nmse: ground truth is all zeros")
    return float(np.sum((gt - pred) ** 2)) / denominator


def psnr(gt, pred, maxval=None) -> float:
    """Peak SNR in dB with ``data_range = maxval`` (default: ``gt.max()``)."""
    gt, pred = _pair(gt, pred, "psnr")
    data_range = _data_range(gt, maxval, "psnr")
    err = np.mean((gt - pred) ** 2)
    if err == 0:
        return math.inf
    return float(10 * np.log10(data_range**2 / err))


def _box_mean_valid(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over every full ``size x size`` window of the last two axes ('valid' mode).

    Uses an integral image; the windows kept are exactly those skimage keeps after
    cropping its (reflect-padded) map by ``(size - 1) // 2``.
    """
    integral = np.zeros(x.shape[:-2] + (x.shape[-2] + 1, x.shape[-1] + 1))
    integral[..., 1:, 1:] = x.cumsum(-2).cumsum(-1)
    window_sum = (
        integral[..., size:, size:]
        - integral[..., :-size, size:]
        - integral[..., size:, :-size]
        + integral[..., :-size, :-size]
    )
    return window_sum / (size * size)


def ssim_map(gt, pred, data_range) -> np.ndarray:
    """SSIM map of the windows that fit inside each image: (..., H - 6, W - 6), float64.

    Local variances are taken of the mean-centred images: that leaves them unchanged
    and keeps ``E[x^2] - E[x]^2`` from cancelling badly.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    ux = _box_mean_valid(gt, WIN_SIZE)
    uy = _box_mean_valid(pred, WIN_SIZE)
    gc = gt - gt.mean(axis=(-2, -1), keepdims=True)
    pc = pred - pred.mean(axis=(-2, -1), keepdims=True)
    mx, my = _box_mean_valid(gc, WIN_SIZE), _box_mean_valid(pc, WIN_SIZE)
    vx = COV_NORM * (_box_mean_valid(gc * gc, WIN_SIZE) - mx * mx)
    vy = COV_NORM * (_box_mean_valid(pc * pc, WIN_SIZE) - my * my)
    vxy = COV_NORM * (_box_mean_valid(gc * pc, WIN_SIZE) - mx * my)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / (
        (ux**2 + uy**2 + c1) * (vx + vy + c2)
    )


def ssim(gt, pred, maxval=None) -> float:
    """fastMRI volume SSIM: mean over slices of the 7x7-window SSIM (data range = maxval)."""
    gt, pred = _pair(gt, pred, "ssim", ndim=3)
    if gt.shape[-2] < WIN_SIZE or gt.shape[-1] < WIN_SIZE:
        raise DataError(
            f"ssim: slices of shape {gt.shape[1:]} are smaller than the 7x7 window"
        )
    data_range = _data_range(gt, maxval, "ssim")
    per_slice = ssim_map(gt, pred, data_range).mean(axis=(-2, -1))
    return float(per_slice.mean())


def volume_metrics(gt, pred, maxval=None) -> dict:
    """All fastMRI metrics of one volume: ``{"mse", "nmse", "psnr", "ssim"}``."""
    return {
        "mse": mse(gt, pred),
        "nmse": nmse(gt, pred),
        "psnr": psnr(gt, pred, maxval),
        "ssim": ssim(gt, pred, maxval),
    }


# ---------------------------------------------------------------------------- jnp SSIM


def _box_mean_valid_jax(x):
    window = (1, WIN_SIZE, WIN_SIZE)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1), "VALID")
    return total / _NP


def ssim_jax(gt, pred, data_range):
    """Per-image SSIM of (B, H, W) batches, (B,) out; same definition as ``ssim``.

    ``data_range`` is a scalar or (B,). Pure ``jnp``: jit-able and differentiable,
    so ``1 - ssim_jax(target, output, data_range)`` works as a training loss.
    """
    gt = jnp.asarray(gt)
    pred = jnp.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise DataError(
            f"ssim_jax: expected two (B, H, W) batches, got {gt.shape} and {pred.shape}"
        )
    dtype = jnp.result_type(gt.dtype, pred.dtype, jnp.float32)
    gt, pred = gt.astype(dtype), pred.astype(dtype)
    data_range = jnp.broadcast_to(jnp.asarray(data_range, dtype), gt.shape[:1])[
        :, None, None
    ]
    ux = _box_mean_valid_jax(gt)
    uy = _box_mean_valid_jax(pred)
    # Centre before the second moments: same variances, far less float32 cancellation.
    gc = gt - gt.mean(axis=(-2, -1), keepdims=True)
    pc = pred - pred.mean(axis=(-2, -1), keepdims=True)
    mx, my = _box_mean_valid_jax(gc), _box_mean_valid_jax(pc)
    vx = COV_NORM * (_box_mean_valid_jax(gc * gc) - mx * mx)
    vy = COV_NORM * (_box_mean_valid_jax(pc * pc) - my * my)
    vxy = COV_NORM * (_box_mean_valid_jax(gc * pc) - mx * my)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(axis=(-2, -1))


# ------------------------------------------------------------------------- aggregation


def acceleration_label(acceleration) -> str:
    """ "4x" for 4 or 4.0, "2.5x" for 2.5, "unknown" when missing."""
    if acceleration is None:
        return "unknown"
    return f"{float(acceleration):g}x"


def group_names(record: Mapping) -> tuple[str, ...]:
    """The groups a volume record counts in: "all", "<acc>", "<acc>/<acquisition>"."""
    acc = acceleration_label(record.get("acceleration"))
    acq = record.get("acquisition") or "unknown"
    return ("all", acc, f"{acc}/{acq}")


def summarize(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n); std is 0.0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        raise DataError("cannot summarize an empty group")
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return float(values.mean()), std, n


def aggregate(
    records: Iterable[Mapping], metrics: Sequence[str] = METRIC_NAMES
) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per-group ``{metric: (mean, std, n)}`` over volumes.

    ``records`` are per-volume dicts with the metric values and optional
    ``acceleration`` and ``acquisition``. Groups: "all", each acceleration ("4x"),
    and each acceleration x acquisition ("4x/CORPD_FBK"); ordered "all" first, then
    by acceleration and acquisition.
    """
    grouped: dict[str, list[Mapping]] = defaultdict(list)
    for i, record in enumerate(records):
        missing = [m for m in metrics if m not in record]
        if missing:
            name = record.get("fname", f"record {i}")
            raise DataError(f"{name}: metric record lacks {', '.join(missing)}")
        for group in group_names(record):
            grouped[group].append(record)
    if not grouped:
        raise DataError("no volumes to aggregate")

    def order(name):
        if name == "all":
            return (0, 0.0, "")
        acc, _, acq = name.partition("/")
        value = math.inf if acc == "unknown" else float(acc[:-1])
        return (1, value, acq)

    return {
        group: {m: summarize([r[m] for r in grouped[group]]) for m in metrics}
        for group in sorted(grouped, key=order)
    }
