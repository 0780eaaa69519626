"""fastMRI's per-sample z-scoring (``normalize_instance``), for numpy and jax arrays alike.

The standard deviation is the unbiased one (ddof=1) as ``torch.std`` computes it, with
``eps = 1e-11`` added, and results are clamped to [-6, 6]. Statistics are taken over
the last two axes, one pair per leading index (per sample, never pooled over a batch).
"""

from __future__ import annotations

EPS = 1e-11
CLAMP = 6.0
_AXES = (-2, -1)


def instance_stats(x):
    """Mean and unbiased std over the last two axes, with kept dims for broadcasting."""
    mean = x.mean(axis=_AXES, keepdims=True)
    std = x.std(axis=_AXES, keepdims=True, ddof=1)
    return mean, std


def normalize(x, mean, std, eps=EPS, clamp=CLAMP):
    """``clip((x - mean) / (std + eps), -clamp, clamp)``; ``clamp=None`` skips clipping."""
    out = (x - mean) / (std + eps)
    return out if clamp is None else out.clip(-clamp, clamp)


def normalize_instance(x, eps=EPS, clamp=CLAMP):
    """Z-score ``x`` with its own statistics; returns ``(normalized, mean, std)``."""
    mean, std = instance_stats(x)
    return normalize(x, mean, std, eps, clamp), mean, std


def unnormalize(x, mean, std):
    """Undo ``normalize`` (without the clamp): ``x * std + mean``."""
    return x * std + mean
