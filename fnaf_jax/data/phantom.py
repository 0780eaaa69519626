"""Coronal knee anatomy for the synthetic data set (magnitude images, no physics).

First version: soft-edged ellipses laid out as a coronal knee (femur on top, tibia
below). Replaced by a fuller anatomy model in a later commit.
"""

from __future__ import annotations

import numpy as np


def _soft_ellipse(yy, xx, cy, cx, ry, rx, edge=1.5):
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) * min(ry, rx) / edge, -50, 50)))


def knee_volume(rng: np.random.Generator, n_slices: int, height: int, width: int,
                fat_suppressed: bool) -> np.ndarray:
    """Magnitude images (n_slices, height, width) float32, peak about 1."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height / 2 + rng.uniform(-10, 10), width / 2 + rng.uniform(-10, 10)
    out = np.empty((n_slices, height, width), np.float32)
    for s in range(n_slices):
        t = (s - (n_slices - 1) / 2) / max(n_slices, 1)
        leg = _soft_ellipse(yy, xx, cy, cx, 400, 140 - 20 * abs(t))
        femur = _soft_ellipse(yy, xx, cy - 90, cx, 100, 95)
        tibia = _soft_ellipse(yy, xx, cy + 95, cx, 90, 90)
        fat = 0.1 if fat_suppressed else 0.9
        img = 0.4 * leg + (fat - 0.4) * (femur + tibia)
        out[s] = img
    return out
