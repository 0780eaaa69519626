"""Properties of the FNAF search space: connected shapes of exactly P pixels inside the box,
intensities in range, and a region equal to a brute-force distance map."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fnaf_jax import features as F
from fnaf_jax.errors import ConfigError

PAPER = F.FeatureConfig()  # P = 10, 320x320, box rows/cols 100..219
SMALL = F.FeatureConfig(num_pixels=6, image_shape=(40, 36), box_size=20)
B, K = 2, 5

# Local settings (not a global profile, which would change other modules' tests).
FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def _sampler(cfg):
    return jax.jit(lambda key, lo, hi: F.sample(key, B, K, cfg, lo=lo, hi=hi))


def _draw(seed, cfg, lo=0.0, hi=1.0):
    c = _sampler(cfg)(jax.random.key(seed), np.full(B, lo, np.float32), np.full(B, hi, np.float32))
    return jax.tree.map(np.asarray, c)


def _connected(pix) -> bool:
    """4-connectivity by flood fill from the first pixel (independent of the sampler)."""
    cells = {tuple(p) for p in pix}
    seen, todo = set(), [tuple(pix[0])]
    while todo:
        r, c = todo.pop()
        if (r, c) in seen:
            continue
        seen.add((r, c))
        todo += [n for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)) if n in cells]
    return seen == cells


@FEW
@given(seed=st.integers(0, 2**31 - 1))
def test_aggregate_shapes_connected_exact_inside_box(seed):
    c = _draw(seed, PAPER, lo=0.2, hi=0.7)
    pix = np.asarray(F.pixels(c))
    for b in range(B):
        for k in range(K):
            p = pix[b, k]
            assert len({tuple(x) for x in p}) == 10  # exactly P distinct pixels
            assert _connected(p)
            assert (p >= 100).all() and (p <= 219).all()  # central 120 box of 320
    assert (c.values >= 0.2).all() and (c.values < 0.7).all()
    assert (c.offsets[..., 0, :] == 0).all()  # the anchor is a feature pixel


@FEW
@given(seed=st.integers(0, 2**31 - 1))
def test_region_equals_brute_force_distance_map(seed):
    c = _draw(seed, SMALL)
    reg = np.asarray(F.region(c, SMALL.image_shape, radius=5))
    rows, cols = np.mgrid[0:40, 0:36]
    pix = np.asarray(F.pixels(c))
    for b in range(B):
        for k in range(K):
            dist2 = ((rows[..., None] - pix[b, k, :, 0]) ** 2 + (cols[..., None] - pix[b, k, :, 1]) ** 2).min(-1)
            np.testing.assert_array_equal(reg[b, k], dist2 <= 25)
            assert reg[b, k][pix[b, k, :, 0], pix[b, k, :, 1]].all()  # contains the feature


@FEW
@given(seed=st.integers(0, 2**31 - 1))
def test_rasterize_puts_each_value_at_its_pixel(seed):
    c = _draw(seed, SMALL, lo=1.0, hi=2.0)
    d = np.asarray(F.rasterize(c, SMALL.image_shape))
    pix = np.asarray(F.pixels(c))
    for b in range(B):
        for k in range(K):
            expected = np.zeros(SMALL.image_shape, np.float32)
            expected[pix[b, k, :, 0], pix[b, k, :, 1]] = c.values[b, k]
            np.testing.assert_array_equal(d[b, k], expected)
            (r0, c0), (r1, c1) = SMALL.box()
            assert (pix[b, k] >= [r0, c0]).all() and (pix[b, k] <= [r1, c1]).all()


def test_walk_matches_released_random_walk_statistics():
    cfg = F.FeatureConfig(shape="walk")
    draw = jax.jit(lambda key: F.sample(key, 40, 10, cfg, lo=1.0, hi=2.0))
    c = jax.tree.map(np.asarray, draw(jax.random.key(3)))
    steps = np.abs(np.diff(c.offsets, axis=-2)).sum(-1)
    assert (steps == 1).all()  # every move is one 4-neighbour step
    pix = np.asarray(F.pixels(c)).reshape(-1, 10, 2)
    distinct = np.array([len({tuple(p) for p in f}) for f in pix])
    # SPEC 2: about 7 distinct pixels for P = 10. A 20,000-walk numpy simulation of the
    # released walk gives a mean of 7.29; the std error over these 400 walks is 0.07.
    assert 6.9 < distinct.mean() < 7.7
    assert (pix >= 100).all() and (pix <= 219).all()
    # A revisited pixel keeps the value written last, never a sum.
    d = np.asarray(F.rasterize(c, (320, 320))).reshape(-1, 320, 320)
    vals = c.values.reshape(-1, 10)
    for f in range(20):
        expected = np.zeros((320, 320), np.float32)
        for (r, col), v in zip(pix[f], vals[f], strict=True):
            expected[r, col] = v
        np.testing.assert_array_equal(d[f], expected)


def test_sample_each_is_independent_of_batch_companions():
    keys = jax.random.split(jax.random.key(0), 4)
    y = np.random.default_rng(0).uniform(size=(4, 320, 320)).astype(np.float32)
    lo, hi = F.intensity_range(y)
    each = jax.jit(lambda keys, lo, hi: F.sample_each(keys, 3, PAPER, lo=lo, hi=hi))
    full = each(keys, lo, hi)
    order = np.array([2, 3, 1, 0])  # the same samples in other batch positions
    moved = each(keys[order], lo[order], hi[order])
    for a, b in zip(full, moved, strict=True):
        np.testing.assert_array_equal(np.asarray(a)[order], np.asarray(b))
    assert (np.asarray(full.values) >= lo[:, None, None]).all()
    assert (np.asarray(full.values) <= hi[:, None, None]).all()


def test_constant_intensity_and_clip_location():
    cfg = F.FeatureConfig(intensity="constant", constant_value=3.5)
    c = jax.jit(lambda key: F.sample(key, 2, 3, cfg))(jax.random.key(1))
    assert (np.asarray(c.values) == 3.5).all()
    far = np.asarray(F.clip_location(c.location.astype(np.float32) + 1000.0, c.offsets, cfg))
    pix = far[..., None, :] + np.asarray(c.offsets)
    assert pix.max() == 219  # pushed back onto the box edge, not beyond


def test_bad_config_raises_config_error():
    with pytest.raises(ConfigError, match="shape"):
        F.FeatureConfig(shape="spiral")
    with pytest.raises(ConfigError, match="box_size"):
        F.FeatureConfig(box_size=400)
    with pytest.raises(ConfigError, match="lo and hi"):
        F.sample(jax.random.key(0), 1, 1, PAPER)


def _pinned_draws():
    from fnaf_jax.attacks.finite_diff import start_keys
    from fnaf_jax.attacks.random_search import draw
    from fnaf_jax.attacks.runner import slice_key

    y = np.linspace(0, 1, 320 * 320, dtype=np.float32).reshape(1, 320, 320)
    keys = jnp.stack([slice_key(0, "file1000000.h5", 3)])
    return draw(keys, y, 3, F.DEFAULT_FEATURES), draw(start_keys(keys), y, 1, F.DEFAULT_FEATURES)


@pytest.mark.parametrize("partitionable", [False, True])
def test_feature_draws_do_not_depend_on_the_threefry_setting(partitionable):
    """The attack's features for a (seed, file, slice) are pinned: the same under either
    ``jax_threefry_partitionable`` setting and equal to the recorded draw."""
    import json
    from pathlib import Path

    golden = json.loads((Path(__file__).parent / "golden" / "feature_draws.json").read_text())
    with jax.threefry_partitionable(partitionable):
        rs, fd = _pinned_draws()
    for name, cand in (("rs", rs), ("fd", fd)):
        np.testing.assert_array_equal(np.asarray(cand.offsets), golden[name]["offsets"])
        np.testing.assert_array_equal(np.asarray(cand.location), golden[name]["location"])
        np.testing.assert_allclose(np.asarray(cand.values), golden[name]["values"], atol=1e-6)
    # FD's start is not an RS candidate (independent key streams)
    assert not any(np.array_equal(np.asarray(fd.offsets[0, 0]), o) for o in np.asarray(rs.offsets[0]))
