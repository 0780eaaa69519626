"""Eq. 5 loss, IP and batched scoring against hand computations and an independent float64
numpy pipeline (which under-samples y + d directly, without the linearity shortcut)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnaf_jax import features as F
from fnaf_jax import objective as O
from fnaf_jax.errors import DataError

CFG = F.FeatureConfig(num_pixels=5, image_shape=(32, 28), box_size=16)
B, K = 2, 5


def test_fnaf_loss_reductions_by_hand():
    o = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    t = jnp.array([[1.0, 0.0], [3.0, 0.0]])
    region = jnp.array([[False, True], [False, True]])
    # squared errors [[0, 4], [0, 16]]: whole-image MSE 20/4 = 5, region sum 20 over 2 pixels,
    # ||T*o||^2 = 4 + 16 = 20.
    expected = {"mse": 0.5 * 5 + 2 * 20 / 4, "region_mean": 0.5 * 5 + 2 * 20 / 2, "nmse": 0.5 * 5 + 2 * 20 / 20}
    for reduction, value in expected.items():
        cfg = O.ObjectiveConfig(alpha=0.5, beta=2.0, reduction=reduction)
        assert float(O.fnaf_loss(o, t, region, cfg)) == pytest.approx(value, rel=1e-6)


def test_information_preservation_by_hand():
    clean = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    feat = clean.at[1, 1].add(2.0)
    # clean std (ddof 1) = sqrt(5/3); one pixel differs by 2 / std; mean over 4 pixels.
    assert float(O.information_preservation(feat, clean)) == pytest.approx(4 / (5 / 3) / 4, rel=1e-6)


def _blur(x):
    """3x3 mean filter with edge padding: a small stand-in for a model."""
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[-2:]
    return sum(p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _blur_recon(u, mask, metadata):
    return _blur(jnp.abs(u))


def _np_blur(x):
    p = np.pad(x, 1, mode="edge")
    h, w = x.shape
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _np_undersample(img, mask):
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=ax), norm="ortho"), axes=ax)
    k = k * mask[None, :]
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)


def _np_reference(y, mask, cand, cfg):
    """Loss and IP of every candidate in float64 numpy, one image at a time."""
    eps = 1e-11
    h, w = y.shape[-2:]
    rows, cols = np.mgrid[0:h, 0:w]
    loss, ip = np.zeros((B, K)), np.zeros((B, K))
    for b in range(B):
        xc = np.abs(_np_undersample(y[b], mask[b]))
        sc = xc.std(ddof=1)  # the mean cancels in the difference
        for k in range(K):
            pix = cand.offsets[b, k] + cand.location[b, k]
            d = np.zeros((h, w))
            d[pix[:, 0], pix[:, 1]] = cand.values[b, k]
            u = _np_undersample(y[b] + d, mask[b])
            x = np.abs(u)
            m, s = x.mean(), x.std(ddof=1)
            o = (_np_blur(x) - m) / (s + eps)
            t = np.clip((y[b] + d - m) / (s + eps), -6, 6)
            dist2 = ((rows[..., None] - pix[:, 0]) ** 2 + (cols[..., None] - pix[:, 1]) ** 2).min(-1)
            region = dist2 <= cfg.radius**2
            sq = (o - t) ** 2
            reg = {"mse": (sq * region).mean(), "region_mean": sq[region].mean(),
                   "nmse": (sq * region).sum() / ((o * region) ** 2).sum()}[cfg.reduction]
            loss[b, k] = cfg.alpha * sq.mean() + cfg.beta * reg
            ip[b, k] = (((x - xc) / (sc + eps)) ** 2).mean()
    return loss, ip


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:28] / 30.0
    y = np.stack([0.2 + np.exp(-((yy - 0.5) ** 2 + (xx - 0.4) ** 2) * 8), 0.1 + xx * yy]).astype(np.float32)
    mask = (rng.uniform(size=(B, 28)) < 0.4).astype(np.float32)
    mask[:, 12:16] = 1  # a centre, like fastMRI's low frequencies
    lo, hi = F.intensity_range(y)
    cand = jax.jit(lambda key: F.sample(key, B, K, CFG, lo=lo, hi=hi))(jax.random.key(7))
    return {"target_raw": y, "mask": mask}, jax.tree.map(np.asarray, cand)


@pytest.mark.parametrize("reduction,alpha,beta", [("mse", 0.0, 1.0), ("region_mean", 1.0, 100.0), ("nmse", 0.5, 2.0)])
def test_score_matches_independent_numpy_pipeline(problem, reduction, alpha, beta):
    batch, cand = problem
    cfg = O.ObjectiveConfig(alpha=alpha, beta=beta, reduction=reduction)
    loss, ip = O.make_scorer(_blur_recon, cfg)(batch, cand)[:2]
    ref_loss, ref_ip = _np_reference(batch["target_raw"].astype(np.float64), batch["mask"], cand, cfg)
    # float32 FFTs of O(1) images: agreement to ~1e-6 relative; 1e-4 leaves room, not slack.
    np.testing.assert_allclose(np.asarray(loss), ref_loss, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(ip), ref_ip, rtol=1e-4)
    assert (ref_ip > 1e-4).all() and (ref_loss > 0).all()  # the comparison is not vacuous


def test_model_runs_once_over_all_candidates_and_chunking_gives_same_numbers(problem, optimized_xla):
    batch, cand = problem
    calls = []

    def counting_recon(u, mask, metadata):
        calls.append(u.shape)  # runs at trace time: one entry per model call in the program
        return _blur_recon(u, mask, metadata)

    whole = O.make_scorer(counting_recon, O.ObjectiveConfig(max_images_per_call=10**6))(batch, cand)
    assert calls == [(B, 32, 28), (B * K, 32, 28)]  # the no-feature control, then all candidates
    calls.clear()
    chunked = O.make_scorer(counting_recon, O.ObjectiveConfig(max_images_per_call=3))(batch, cand)
    # one compilation for 4 calls of 3 images (the last padded with 2); the no-feature
    # program is the one compiled above
    assert calls == [(3, 32, 28)]
    calls.clear()
    auto = O.ObjectiveConfig()  # the backend's rule (CPU here: IMAGES_PER_CALL["cpu"])
    rule = O.images_per_call(auto, B * K)
    assert rule == min(O.IMAGES_PER_CALL["cpu"], B * K) and rule < B * K  # the rule really chunks
    by_rule = O.make_scorer(counting_recon, auto)(batch, cand)
    assert calls == [(rule, 32, 28)]
    # inside a compiled program (training) an explicit cap chunks with lax.map: same numbers
    in_jit = jax.jit(lambda bt, c: O.score_controls(_blur_recon, bt, c, O.ObjectiveConfig(max_images_per_call=3)))
    for other in (chunked, by_rule, in_jit(batch, cand)):
        for a, b in zip(whole, other, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-12)


def test_bad_batch_names_the_missing_key(problem):
    batch, cand = problem
    with pytest.raises(DataError, match="'mask'"):
        O.score(_blur_recon, {"target_raw": batch["target_raw"]}, cand)
    with pytest.raises(DataError, match="target_raw"):
        O.score(_blur_recon, {"target_raw": batch["target_raw"], "mask": batch["mask"][:, :5]}, cand)


def test_unet_chunks_in_a_loop_and_irim_in_calls_give_the_same_numbers(problem):
    from flax import nnx

    from fnaf_jax.models.families import family_of
    from fnaf_jax.models.irim import IRIM
    from fnaf_jax.models.registry import build_model

    batch, cand = problem
    cand = jax.tree.map(lambda a: a[:, :2], cand)  # 4 candidates: 2 chunks of 2 (compile time)
    unet = build_model({"arch": "unet", "chans": 2, "num_pool_layers": 1})
    irim = IRIM(n_steps=1, n_hidden=[12], n_network_hidden=[4], dilations=[1], multiplicity=1, rngs=nnx.Rngs(0))
    assert family_of(unet).attack_chunks == "loop" and family_of(irim).attack_chunks == "calls"
    for model in (unet, irim):
        model.eval()
        rule = O.make_scorer(model)(batch, cand)  # chunks of IMAGES_PER_CALL["cpu"]
        whole = O.score_controls(model.reconstruct, batch, cand)  # no chunking at all
        for a, b in zip(whole, rule, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-9)
