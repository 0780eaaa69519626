"""The gradient attack on known-answer models: it finds the quadrant a model erases from
a start outside it (and, without the relaxation, cannot), its gradient read-out equals a
finite difference of the loss, its intensities stay in range, and `fnaf attack --method
pgd` runs end to end with its passes recorded."""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
from test_attacks import (
    FEATURES,
    QUADRANT,
    Y0,
    B,
    H,
    _batch,
    _touches_quadrant,
    clean_eraser,
    eraser,
)

from fnaf_jax import features as F
from fnaf_jax import objective as O
from fnaf_jax.attacks.config import AttackConfig, passes
from fnaf_jax.attacks.pgd import location_gradient, pgd
from fnaf_jax.attacks.random_search import draw
from fnaf_jax.gradients import FeatureGradient, blur


def _outside_start(keys):
    """Each sample's drawn shape, anchored at (34, 34): every pixel at least 6 px from the
    quadrant (rows and columns 12..23)."""
    base = draw(keys, jnp.asarray(_batch()["target_raw"]), 1, FEATURES)
    start = base._replace(location=jnp.full_like(base.location, 34))
    assert not _touches_quadrant(start.offsets, start.location).any()
    return start


def test_gradient_attack_finds_the_erased_quadrant_from_outside():
    keys = jax.random.split(jax.random.key(0), B)
    start = _outside_start(keys)
    scorer = O.make_scorer(eraser)
    trace = []
    res = pgd(scorer, _batch(), keys, AttackConfig(features=FEATURES), start=start, trace=trace)
    assert len(trace) == 4  # the start and three steps
    dist = [np.hypot(*(np.asarray(c.location[:, 0]) - 17.5).T) for c in trace]
    assert all((later < earlier).all() for earlier, later in itertools.pairwise(dist))  # always closer
    assert np.asarray(res.hit).all()
    assert _touches_quadrant(res.candidate.offsets, res.candidate.location).all()
    # the recorded scores are the exact Eq. 5 of the final feature, with its controls
    exact = O.score_controls(eraser, _batch(), res.candidate)
    np.testing.assert_allclose(np.asarray(res.losses), np.asarray(exact.loss), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.lost), np.asarray(exact.lost), rtol=1e-6)
    assert (np.asarray(res.lost) > 0.05).all()
    # without the relaxation the exact loss is flat out there: its gradient is round-off
    # noise, and the normalised steps wander instead of closing in
    flat = pgd(scorer, _batch(), keys, AttackConfig(features=FEATURES, pgd_sigma=0.0), start=start)
    assert np.asarray(flat.hit).sum() < B // 2


def test_location_gradient_is_the_derivative_of_a_feature_shift():
    """``sum_i v_i grad G(p_i)`` against a central finite difference of the loss of the
    feature image moved by ``delta`` along each axis (``d - delta * D d`` with the same
    central-difference derivative D, the region held fixed), on a model with a smooth,
    position-dependent loss."""
    bump = jnp.asarray(0.5 * np.exp(-((np.mgrid[0:H, 0:H] - 30.0) ** 2).sum(0) / 200.0), jnp.float32)

    def attenuator(u, mask, metadata):
        return jnp.abs(u) * (1 - bump)

    keys = jax.random.split(jax.random.key(2), B)
    batch = _batch()
    cands = draw(keys, jnp.asarray(batch["target_raw"]), 1, FEATURES)
    radius = 21.0  # the relaxed region of the default attack (5 + 2 sigma): one compilation
    _, grad = FeatureGradient(O.make_scorer(attenuator), radius)(batch, cands, 0.0)
    got = np.asarray(location_gradient(grad, cands))[:, 0]

    d0 = np.asarray(F.rasterize(cands, (H, H))[:, 0], np.float64)
    reg = F.region(cands, (H, H), radius)[:, 0]
    clean = np.asarray(O.clean_outputs(attenuator, batch), np.float64)
    idx = jnp.arange(B)

    def loss(d):
        # in float64: the loss differences are a few float32 roundings of the loss
        with jax.enable_x64(True):
            y = jnp.asarray(batch["target_raw"], jnp.float64)
            mask = jnp.asarray(batch["mask"], jnp.float64)
            out = O.forward_images(attenuator, y, mask, None, O.undersample(y, mask), idx,
                                   jnp.asarray(d), reg, jnp.asarray(clean))
            return np.asarray(O.scores_of(out, O.ATTACK).loss, np.float64)

    delta = 0.05
    for axis in (0, 1):
        deriv = (np.roll(d0, -1, axis=axis + 1) - np.roll(d0, 1, axis=axis + 1)) / 2.0
        fd = (loss(d0 - delta * deriv) - loss(d0 + delta * deriv)) / (2 * delta)
        np.testing.assert_allclose(got[:, axis], fd, rtol=2e-2, atol=1e-9)
    assert np.abs(got).min() > 0


def test_intensities_climb_to_the_range_bound_and_stay_in_it():
    """On the oracle eraser the loss grows with every intensity (it is the feature's energy):
    ascent ends at the slice's maximum, never beyond."""
    cfg_f = F.FeatureConfig(num_pixels=5, image_shape=(H, H), box_size=40)  # uniform intensities
    keys = jax.random.split(jax.random.key(4), B)
    batch = _batch()
    base = draw(keys, jnp.asarray(batch["target_raw"]), 1, FEATURES)  # FEATURES' shapes, drawn values:
    values = jax.random.uniform(jax.random.key(5), base.values.shape, minval=Y0.min(), maxval=Y0.max() - 0.01)
    start = base._replace(values=values)
    res = pgd(O.make_scorer(clean_eraser(Y0)), batch, keys, AttackConfig(features=cfg_f), start=start)
    np.testing.assert_allclose(np.asarray(res.candidate.values), Y0.max(), rtol=1e-6)


def test_blur_keeps_mass_and_zero_width_is_the_identity():
    img = jnp.zeros((H, H)).at[30, 30].set(1.0)
    np.testing.assert_array_equal(np.asarray(blur(img, 0.0)), np.asarray(img))
    out = np.asarray(blur(img, 3.0))
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-5)
    rows = np.arange(H)
    np.testing.assert_allclose((out.sum(1) * (rows - 30) ** 2).sum(), 9.0, rtol=1e-3)  # variance sigma^2


def test_passes_accounting():
    cfg = AttackConfig(k=11, fd_iterations=2, pgd_starts=2, pgd_steps=3)
    assert passes("rs", cfg) == {"forward": 11, "backward": 0}
    assert passes("fd", cfg) == {"forward": 11, "backward": 0}
    assert passes("pgd", cfg) == {"forward": 8, "backward": 6}


def test_cli_gradient_attack_records(tiny_unet_checkpoint, synthetic_dir, tmp_path):
    from fnaf_jax.cli import main

    out = tmp_path / "pgd.jsonl"
    argv = ["attack", "--checkpoint", str(tiny_unet_checkpoint), "--data", str(synthetic_dir), "--out", str(out),
            "--method", "pgd", "--pgd-steps", "2", "--limit", "2", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["method"] == "pgd" and r["num_scored"] == 1
        assert r["passes"] == {"forward": 3, "backward": 2}
        assert r["settings"]["pgd"]["steps"] == 2
        pix = np.asarray(r["feature"]["pixels"])
        assert pix.min() >= 100 and pix.max() <= 219  # in the box
    assert main(argv) == 0  # resumed: nothing new
    assert len(out.read_text().splitlines()) == 2
    assert QUADRANT.any()
