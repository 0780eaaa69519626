"""Attacks on pure-function "models" whose weak spots are known: a model that erases
whatever lies in one quadrant of the box (RS and FD must hit there and only there) and
a smooth attenuation bump (FD must climb it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import features as F
from fnaf_jax import objective as O
from fnaf_jax.attacks.config import AttackConfig, summarize, worst_of_k
from fnaf_jax.attacks.finite_diff import finite_diff
from fnaf_jax.attacks.random_search import draw, random_search

H = 64
# Constant intensity 0.1 on a background of std 0.05: features stay inside the target's
# [-6, 6] clamp, so a faithful model has zero loss (the output is never clamped).
FEATURES = F.FeatureConfig(num_pixels=5, image_shape=(H, H), box_size=40, intensity="constant",
                           constant_value=0.1)  # box rows/cols 12..51
ROWS, COLS = np.mgrid[0:H, 0:H]
Y0 = (1 + 0.1 * np.sin(ROWS / 9.0) * np.cos(COLS / 7.0)).astype(np.float32)
QUADRANT = (ROWS >= 12) & (ROWS < 24) & (COLS >= 12) & (COLS < 24)  # a corner of the box
B = 8


def _batch():
    # Fully sampled: the input is exactly y + d, so a faithful model loses nothing.
    return {"target_raw": np.stack([Y0] * B), "mask": np.ones((B, H), np.float32)}


def eraser(u, mask, metadata):
    """Identity, except that it returns the clean image inside QUADRANT (erases features)."""
    return jnp.where(QUADRANT, Y0, jnp.abs(u))


def _touches_quadrant(offsets, locations):
    """(B, S) bool, computed directly from pixel coordinates."""
    pix = np.asarray(offsets)[:, :, None] if offsets.ndim == 3 else np.asarray(offsets)
    pix = pix + np.asarray(locations)[:, :, None, :]
    return QUADRANT[pix[..., 0], pix[..., 1]].any(-1)


def test_worst_of_k_and_summary_by_hand():
    loss = jnp.array([[1.0, 5.0, 3.0], [2.0, 2.5, 9.0], [4e-4, 2e-4, 1e-4]])
    ip = jnp.array([[1.0, 1e-5, 1.0], [1e-5, 1e-5, 1e-5], [1.0, 1.0, 1.0]])
    index, accepted = worst_of_k(loss, ip, 1e-4)
    assert index.tolist() == [2, 2, 0]  # 5.0 is rejected (IP); none accepted -> plain argmax
    assert accepted.tolist() == [True, False, True]
    cands = F.Candidates(jnp.zeros((3, 3, 1, 2), jnp.int32), jnp.arange(18).reshape(3, 3, 2), jnp.ones((3, 3, 1)))
    nan = jnp.full_like(loss, jnp.nan)
    res = summarize(O.Scores(loss, ip, nan, nan, nan), cands, AttackConfig(gamma=1e-3))
    np.testing.assert_allclose(res.worst_loss, [3.0, 9.0, 4e-4], rtol=1e-6)
    assert res.hit.tolist() == [True, False, False]  # not accepted / below gamma
    assert res.num_accepted.tolist() == [2, 0, 3]
    assert res.candidate.location[:, 0].tolist() == [[4, 5], [10, 11], [12, 13]]


def test_random_search_hits_exactly_where_the_model_erases():
    cfg = AttackConfig(k=5, features=FEATURES)
    keys = jax.random.split(jax.random.key(0), B)
    res = random_search(O.make_scorer(eraser), _batch(), keys, cfg)
    cands = draw(keys, jnp.asarray(_batch()["target_raw"]), 5, FEATURES)  # the same draw
    touches = _touches_quadrant(cands.offsets, cands.location)
    losses = np.asarray(res.losses)
    assert ((losses > 1e-3) == touches).all()  # per candidate: lost iff in the quadrant
    assert (losses[~touches] < 1e-9).all()
    assert (np.asarray(res.hit) == touches.any(-1)).all()
    assert 0 < touches.any(-1).sum() < B  # both outcomes occur in this draw
    chosen = _touches_quadrant(res.candidate.offsets, res.candidate.location)[:, 0]
    assert (chosen == np.asarray(res.hit)).all()  # a hit reports a feature in the quadrant
    assert np.asarray(res.accepted).all()


def test_finite_differences_hit_only_when_a_scored_point_reaches_the_quadrant():
    cfg = AttackConfig(features=FEATURES)
    keys = jax.random.split(jax.random.key(7), B)
    res = finite_diff(O.make_scorer(eraser), _batch(), keys, cfg)
    assert res.losses.shape == (B, 11)  # 1 + 2 x (4 probes + 1 new point): the RS budget
    offsets = np.repeat(np.asarray(res.candidate.offsets), 11, axis=1)
    touches = _touches_quadrant(offsets, res.locations)
    assert ((np.asarray(res.losses) > 1e-3) == touches).all()
    assert (np.asarray(res.hit) == touches.any(-1)).all()
    assert 0 < touches.any(-1).sum() < B
    # Every scored feature stays inside the box.
    pix = offsets + np.asarray(res.locations)[:, :, None, :]
    assert pix.min() >= 12 and pix.max() <= 51


def test_finite_differences_climb_a_smooth_loss_surface():
    centre = np.array([44.0, 44.0])
    bump = jnp.asarray(0.9 * np.clip(1 - np.hypot(ROWS - 44, COLS - 44) / 50, 0, 1), jnp.float32)

    def attenuator(u, mask, metadata):  # loses more of a feature the nearer it is to centre
        return jnp.abs(u) * (1 - bump)

    cfg = AttackConfig(features=FEATURES, fd_lr=100.0)  # lr scaled to this surface's slope
    keys = jax.random.split(jax.random.key(1), 6)
    batch = {k: v[:6] for k, v in _batch().items()}
    res = finite_diff(O.make_scorer(attenuator), batch, keys, cfg)
    losses, locs = np.asarray(res.losses), np.asarray(res.locations)
    start, end = np.hypot(*(locs[:, 0] - centre).T), np.hypot(*(locs[:, 10] - centre).T)
    assert (end < start - 5).all(), (start, end)  # moved up the slope
    assert (losses[:, 10] > 1.2 * losses[:, 0]).all()
    np.testing.assert_array_equal(np.asarray(res.worst_loss), losses.max(-1))  # max over all points


def identity(u, mask, metadata):
    """Reproduces the target exactly (the batch is fully sampled)."""
    return jnp.abs(u)


def clean_eraser(y0):
    """The oracle itself: always the clean image, whatever the input."""
    return lambda u, mask, metadata: jnp.broadcast_to(jnp.asarray(y0), jnp.abs(u).shape)


def test_controls_on_known_answer_models():
    """Identity: loss 0, lost 0. Eraser: loss = eraser loss, lost 1. Quadrant eraser: lost 1
    exactly on the features it touches, 0 elsewhere. No-feature control 0 for all three
    (fully sampled: no background error), eraser loss the same for all three."""
    cfg = AttackConfig(k=5, features=FEATURES)
    keys = jax.random.split(jax.random.key(0), B)
    runs = {name: random_search(O.make_scorer(fn), _batch(), keys, cfg)
            for name, fn in (("identity", identity), ("eraser", clean_eraser(Y0)), ("quadrant", eraser))}
    cands = draw(keys, jnp.asarray(_batch()["target_raw"]), 5, FEATURES)
    touches = _touches_quadrant(cands.offsets, cands.location)
    # feature-only loss, computed independently: the feature pixels z-scored by the input's std
    d = np.asarray(F.rasterize(cands, (H, H)))
    x = Y0 + d
    std = x.reshape(B, 5, -1).std(axis=-1, ddof=1)
    expected_eraser = (d**2).sum(axis=(-2, -1)) / std**2 / (H * H)
    for name, res in runs.items():
        np.testing.assert_allclose(np.asarray(res.eraser), expected_eraser, rtol=1e-4, err_msg=name)
        assert np.abs(np.asarray(res.nofeature)).max() < 1e-10, name
    ident, erase, quad = runs["identity"], runs["eraser"], runs["quadrant"]
    assert np.abs(np.asarray(ident.losses)).max() < 1e-10
    assert np.abs(np.asarray(ident.lost)).max() < 1e-5
    np.testing.assert_allclose(np.asarray(erase.losses), np.asarray(erase.eraser), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(erase.lost), 1.0, atol=1e-5)
    lost = np.asarray(quad.lost)
    # a feature partly in the quadrant loses its pixels there: lost in (0, 1]; outside 0
    assert (lost[~touches] < 1e-5).all() and (lost[touches] > 0.05).all() and (lost <= 1 + 1e-5).all()
    assert np.asarray(erase.hit).sum() >= np.asarray(quad.hit).sum() > 0


def test_no_feature_control_sees_background_error():
    """A model that adds a fixed blob everywhere has background error: the no-feature control
    is its region loss, independently computed, and the feature-lost fraction stays 0."""
    blob = jnp.asarray(0.05 * np.exp(-((ROWS - 30) ** 2 + (COLS - 30) ** 2) / 50.0), jnp.float32)

    def biased(u, mask, metadata):
        return jnp.abs(u) + blob

    cfg = AttackConfig(k=3, features=FEATURES)
    keys = jax.random.split(jax.random.key(3), B)
    res = random_search(O.make_scorer(biased), _batch(), keys, cfg)
    cands = draw(keys, jnp.asarray(_batch()["target_raw"]), 3, FEATURES)
    region = np.asarray(F.region(cands, (H, H)))
    std0 = Y0.std(ddof=1)
    expected = ((np.asarray(blob) / std0) ** 2 * region).sum(axis=(-2, -1)) / (H * H)
    np.testing.assert_allclose(np.asarray(res.nofeature), expected, rtol=1e-3, atol=1e-9)  # float32 FFTs
    assert expected.max() > 1e-4  # the check is not vacuous
    assert np.abs(np.asarray(res.lost)).max() < 1e-5  # the feature itself is kept


def test_fd_start_is_not_rs_candidate_zero():
    cfg = AttackConfig(k=5, features=FEATURES)
    keys = jax.random.split(jax.random.key(0), B)
    rs = random_search(O.make_scorer(identity), _batch(), keys, cfg)
    fd = finite_diff(O.make_scorer(identity), _batch(), keys, cfg)
    rs0 = np.asarray(draw(keys, jnp.asarray(_batch()["target_raw"]), 5, FEATURES).offsets[:, 0])
    assert not np.array_equal(np.asarray(fd.candidate.offsets[:, 0]), rs0)
    assert not np.array_equal(np.asarray(fd.locations[:, 0]), np.asarray(rs.locations[:, 0]))


def test_the_recon_fn_contract_is_checked_up_front_with_one_clear_error(tmp_path):
    import pytest
    from flax import nnx

    from fnaf_jax.attacks import (  # the public API
        AttackConfig,
        MaskSpec,
        random_search,
        run_attack,
    )
    from fnaf_jax.errors import ConfigError

    assert callable(random_search) and AttackConfig().k == 11 and MaskSpec().acceleration == 4

    class NoReconstruct(nnx.Module):
        pass

    cases = [
        (lambda u, m, md: jnp.abs(u)[..., None], r"must return \(N, h, w\) real .* \(2, 320, 320, 1\)"),
        (lambda u, m, md: np.asarray(u).real, "pure JAX function"),
        (NoReconstruct(), "no .reconstruct"),
        (lambda u, m, md: u, "real magnitude images"),
        ("not a model", "expected an NNX model"),
    ]
    for fn, match in cases:
        out = tmp_path / "r.jsonl"
        with pytest.raises(ConfigError, match=match):
            run_attack(fn, [], out, progress=False)
        assert not out.exists()  # a run that fails before its first record leaves no file
