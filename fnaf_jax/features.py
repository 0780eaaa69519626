"""The FNAF search space (SPEC section 2): small connected features, their pixels and regions.

A candidate feature is ``P`` pixel ``offsets`` relative to an anchor ``location`` (row, col)
plus one intensity per pixel. ``sample`` draws a batch of them, ``rasterize`` turns them
into images ``d`` to add to the clean slice, and ``region`` gives the loss region ``T``
(feature pixels and everything within Euclidean distance ``radius`` of one).

Everything here is a pure ``jnp`` function of arrays and a PRNG key (fixed-size loops,
no data-dependent shapes), so it composes with ``jit`` and ``vmap``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax.errors import ConfigError

SHAPES = ("aggregate", "walk")
INTENSITIES = ("uniform", "constant")


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How candidate features are drawn; defaults are the paper's (SPEC 2)."""

    num_pixels: int = 10  # P
    shape: str = "aggregate"  # "aggregate" (paper) or "walk" (released code's random walk)
    box_size: int = 120  # every feature pixel lies in the central box_size x box_size box
    image_shape: tuple[int, int] = (320, 320)
    intensity: str = "uniform"  # Uniform(lo, hi) per pixel, or "constant"
    constant_value: float = 1.0  # used when intensity == "constant"

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ConfigError(f"feature shape {self.shape!r} unknown; expected one of {SHAPES}")
        if self.intensity not in INTENSITIES:
            raise ConfigError(f"feature intensity {self.intensity!r} unknown; expected one of {INTENSITIES}")
        if self.num_pixels < 1:
            raise ConfigError(f"feature num_pixels must be >= 1, got {self.num_pixels}")
        h, w = self.image_shape
        if not 2 * self.num_pixels - 1 <= self.box_size <= min(h, w):
            raise ConfigError(
                f"feature box_size {self.box_size} must hold a {self.num_pixels}-pixel feature "
                f"(>= {2 * self.num_pixels - 1}) and fit in the image {self.image_shape}"
            )

    def box(self):
        """First and last row/col index of the central box, e.g. (100, 219) for 320 / 120."""
        h, w = self.image_shape
        r0, c0 = (h - self.box_size) // 2, (w - self.box_size) // 2
        return (r0, c0), (r0 + self.box_size - 1, c0 + self.box_size - 1)


DEFAULT_FEATURES = FeatureConfig()


class Candidates(NamedTuple):
    """A batch of candidate features (a pytree; leading axes (B, K))."""

    offsets: jax.Array  # (B, K, P, 2) int32, (row, col) relative to location; offsets[..., 0, :] = 0
    location: jax.Array  # (B, K, 2) int32 anchor (row, col) in the image
    values: jax.Array  # (B, K, P) float32 intensities


def pixels(candidates: Candidates) -> jax.Array:
    """Absolute (row, col) of every feature pixel, (B, K, P, 2) int32."""
    return candidates.offsets + candidates.location[..., None, :].astype(jnp.int32)


def location_bounds(offsets, cfg: FeatureConfig):
    """Smallest and largest anchor (row, col) that keep all ``offsets`` inside the box.

    ``offsets`` (..., P, 2); returns ``(lo, hi)`` each (..., 2) int32, inclusive.
    """
    (r0, c0), (r1, c1) = cfg.box()
    first = jnp.array([r0, c0], jnp.int32)
    last = jnp.array([r1, c1], jnp.int32)
    return first - offsets.min(axis=-2), last - offsets.max(axis=-2)


def clip_location(location, offsets, cfg: FeatureConfig):
    """Clip (possibly fractional) anchors so the whole feature stays inside the box."""
    lo, hi = location_bounds(offsets, cfg)
    return jnp.clip(location, lo.astype(location.dtype), hi.astype(location.dtype))


_NEIGHBOURS = jnp.array([[-1, 0], [1, 0], [0, -1], [0, 1]], jnp.int32)


def _aggregate_shape(key, p: int):
    """P distinct 4-connected offsets by random aggregation (SPEC 2), jit-able.

    Works on a (2P+1)^2 occupancy grid centred on the anchor: each step adds a cell drawn
    uniformly from the frontier (4-neighbours of the current set not yet in it).
    """
    n = 2 * p + 1
    centre = p
    grid0 = jnp.zeros((n, n), bool).at[centre, centre].set(True)
    offsets0 = jnp.zeros((p, 2), jnp.int32)

    # All random numbers up front: one threefry call instead of one per step (compiles faster).
    uniforms = jax.random.uniform(key, (p, n, n))

    def step(i, carry):
        grid, offsets = carry
        padded = jnp.pad(grid, 1)
        neighbour = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
        frontier = neighbour & ~grid
        # Uniform choice among frontier cells: argmax of iid uniforms restricted to it.
        scores = jnp.where(frontier, uniforms[i], -1.0)
        flat = jnp.argmax(scores.ravel())
        row, col = flat // n, flat % n
        grid = grid.at[row, col].set(True)
        offsets = offsets.at[i].set(jnp.stack([row, col]).astype(jnp.int32) - centre)
        return grid, offsets

    _, offsets = jax.lax.fori_loop(1, p, step, (grid0, offsets0))
    return offsets


def _walk_shape(key, p: int):
    """The released code's random walk: P visited positions, each step +-1 on a random axis.

    Revisits make duplicate offsets (about 7 distinct pixels for P = 10); ``rasterize``
    keeps the last value written to a pixel, as the released code did.
    """
    k_axis, k_sign = jax.random.split(key)
    axis = jax.random.bernoulli(k_axis, 0.5, (p - 1,)).astype(jnp.int32)
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (p - 1,)), 1, -1).astype(jnp.int32)
    moves = jnp.stack([sign * (1 - axis), sign * axis], axis=-1)
    return jnp.concatenate([jnp.zeros((1, 2), jnp.int32), jnp.cumsum(moves, axis=0)])


def pinned_prng():
    """Context under which every draw of the search space is made.

    JAX's ``jax_threefry_partitionable`` flag (whose default changed in JAX 0.5) changes
    the bits ``split`` and ``uniform`` produce; pinning it here keeps a seed's features
    the same whatever the user's setting or JAX version (tests/test_features.py).
    """
    return jax.threefry_partitionable(True)


def stream_keys(keys, stream: int):
    """Per-sample keys (B,) folded with ``stream``: each search draws from its own stream of
    a slice's key (FD's start is not RS's first candidate), the same under any JAX setting."""
    with pinned_prng():
        return jax.vmap(lambda key: jax.random.fold_in(key, stream))(keys)


def sample(key, batch_size: int, k: int, cfg: FeatureConfig = DEFAULT_FEATURES, *, lo=None, hi=None) -> Candidates:
    """Draw ``k`` candidate features for each of ``batch_size`` samples.

    ``lo``/``hi`` (scalars or (B,) arrays) bound the intensities: the min and max of each
    sample's clean image (SPEC 2; see ``intensity_range``). Not needed for a constant
    intensity. Anchors are uniform over the positions that keep the feature in the box.
    """
    if cfg.intensity == "uniform" and (lo is None or hi is None):
        raise ConfigError("features.sample: uniform intensities need lo and hi (min/max of the clean image)")
    with pinned_prng():
        return _sample(key, batch_size, k, cfg, lo, hi)


def _sample(key, batch_size, k, cfg, lo, hi) -> Candidates:
    p = cfg.num_pixels
    k_shape, k_loc, k_val = jax.random.split(key, 3)
    shape_fn = _aggregate_shape if cfg.shape == "aggregate" else _walk_shape
    shape_keys = jax.random.split(k_shape, batch_size * k)
    offsets = jax.vmap(lambda kk: shape_fn(kk, p))(shape_keys).reshape(batch_size, k, p, 2)

    low, high = location_bounds(offsets, cfg)
    location = jax.random.randint(k_loc, (batch_size, k, 2), low, high + 1, dtype=jnp.int32)

    if cfg.intensity == "constant":
        values = jnp.full((batch_size, k, p), cfg.constant_value, jnp.float32)
    else:
        lo = jnp.broadcast_to(jnp.asarray(lo, jnp.float32), (batch_size,))[:, None, None]
        hi = jnp.broadcast_to(jnp.asarray(hi, jnp.float32), (batch_size,))[:, None, None]
        values = jax.random.uniform(k_val, (batch_size, k, p), jnp.float32, lo, hi)
    return Candidates(offsets, location, values)


def intensity_range(images):
    """Per-sample (min, max) over the last two axes: the default intensity bounds."""
    return images.min(axis=(-2, -1)), images.max(axis=(-2, -1))


def _last_occurrence(pix):
    """(…, P) bool: True where no later pixel of the same feature has the same position."""
    same = (pix[..., :, None, :] == pix[..., None, :, :]).all(-1)  # (..., P, P)
    later = jnp.triu(jnp.ones(same.shape[-2:], bool), k=1)
    return ~(same & later).any(-1)


def scatter(rows, cols, vals, shape):
    """Add ``vals`` at (rows, cols) into zero images of ``shape``; out-of-image pixels drop."""
    h, w = shape
    lead = rows.shape[:-1]
    n = rows.shape[-1]
    m = math.prod(lead)
    # Negative indices would wrap around; send every out-of-image pixel past the end instead.
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    rows = jnp.where(inside, rows, h).reshape(m, n)
    cols = jnp.where(inside, cols, w).reshape(m, n)
    img = jnp.zeros((m, h, w), vals.dtype)
    img = img.at[jnp.arange(m)[:, None], rows, cols].add(vals.reshape(m, n), mode="drop")
    return img.reshape(*lead, h, w)


def points(candidates: Candidates):
    """``(rows, cols, values)`` of every feature pixel, (B, K, P) each, the values float32.

    A duplicate pixel (``shape="walk"``) keeps its last value and the others are zeroed,
    so summing the points never counts a pixel twice.
    """
    pix = pixels(candidates)
    vals = jnp.where(_last_occurrence(pix), candidates.values, 0.0).astype(jnp.float32)
    return pix[..., 0], pix[..., 1], vals


def rasterize(candidates: Candidates, shape) -> jax.Array:
    """Feature images ``d`` (B, K, H, W): the ``points`` summed into zero images (``scatter``)."""
    return scatter(*points(candidates), shape)


def disk_offsets(radius: float):
    """Integer (dr, dc) with dr^2 + dc^2 <= radius^2, as a static numpy array (D, 2)."""
    r = int(np.floor(radius))
    dr, dc = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    grid = np.stack([dr.ravel(), dc.ravel()], -1)
    return grid[(grid**2).sum(-1) <= radius**2].astype(np.int32)


def region(candidates: Candidates, shape, radius: float = 5) -> jax.Array:
    """Loss region ``T`` (B, K, H, W) bool: pixels within distance ``radius`` of a feature pixel.

    The union of a disk around every feature pixel, built by scattering the disk's
    offsets (81 for radius 5) around each pixel: exact, and cheap next to a distance map.
    """
    pix = pixels(candidates)  # (B, K, P, 2)
    disk = disk_offsets(radius)  # (D, 2)
    pts = (pix[..., :, None, :] + disk).reshape(*pix.shape[:-2], -1, 2)
    ones = jnp.ones(pts.shape[:-1], jnp.float32)
    return scatter(pts[..., 0], pts[..., 1], ones, shape) > 0


def sample_each(keys, k: int, cfg: FeatureConfig = DEFAULT_FEATURES, *, lo=None, hi=None) -> Candidates:
    """Like ``sample`` with one PRNG key per sample (``keys`` (B,)), so a sample's features
    do not depend on which other samples share its batch (resumable evaluation)."""
    b = keys.shape[0]
    if cfg.intensity == "constant":
        lo = hi = jnp.zeros((b,), jnp.float32)
    lo = jnp.broadcast_to(jnp.asarray(lo, jnp.float32), (b,))
    hi = jnp.broadcast_to(jnp.asarray(hi, jnp.float32), (b,))
    one = jax.vmap(lambda key, a, z: sample(key, 1, k, cfg, lo=a, hi=z))(keys, lo, hi)
    return jax.tree.map(lambda x: x[:, 0], one)
