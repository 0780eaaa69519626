"""k-space attacks on known-answer models: on a linear model the worst-case perturbation
is the top singular vector of the restricted operator (closed form, computed here by a
dense SVD); hallucinations on an identity-on-zero-filled model have the expected sign and
grow with eps, and a model that ignores its input shows nothing; `fnaf attack --method
hallucinate` writes its per-eps records."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import features as F
from fnaf_jax import objective as O
from fnaf_jax.attacks.config import AttackConfig
from fnaf_jax.attacks.kspace import kspace_attack
from fnaf_jax.physics import fft2c, ifft2c, undersample

H = 16
RNG = np.random.default_rng(0)
Y = (1 + 0.2 * RNG.random((H, H))).astype(np.float32)
MASK = np.zeros(H, np.float32)
MASK[[0, 3, 6, 7, 8, 9, 12]] = 1
B = 2
FEATURES = F.FeatureConfig(num_pixels=3, image_shape=(H, H), box_size=8)
EPS = (0.01, 0.05)
# a frequency filter with one dominant weight: a clear gap between the top singular values
WEIGHTS = jnp.ones((H, H)).at[5, 7].set(3.0).at[4, 8].set(2.0)
U0 = undersample(jnp.asarray(Y), jnp.asarray(MASK))


def _batch():
    return {"target_raw": np.stack([Y] * B), "mask": np.stack([MASK] * B)}


def _filter(delta):
    return jnp.real(ifft2c(WEIGHTS * fft2c(delta)))


def linear(u, mask, metadata):
    """Exact on the clean input, linear in the perturbation: f(U(y) + e) = y + L e."""
    return jnp.asarray(Y) + _filter(u - U0)


def _keys():
    return jax.random.split(jax.random.key(0), B)


def test_kspace_pgd_on_a_linear_model_reaches_the_top_singular_vector():
    cfg = AttackConfig(features=FEATURES, eps=EPS, kspace_steps=20, kspace_target="image")
    res = kspace_attack(O.make_scorer(linear), _batch(), _keys(), cfg)
    cols = np.flatnonzero(MASK)

    def restricted(x):  # real coordinates of the sampled columns -> the output change
        n = H * len(cols)
        er = jnp.zeros((H, H)).at[:, cols].set(x[:n].reshape(H, len(cols)))
        ei = jnp.zeros((H, H)).at[:, cols].set(x[n:].reshape(H, len(cols)))
        return _filter(ifft2c(MASK[None, :] * (er + 1j * ei))).ravel()

    jac = np.asarray(jax.jacfwd(restricted)(jnp.zeros(2 * H * len(cols))), np.float64)
    top = np.linalg.svd(jac, compute_uv=False)[0]
    norm_k = float(np.sqrt((np.abs(np.asarray(U0)) ** 2).sum()))
    worst = np.array([(top * e * norm_k) ** 2 / (Y.astype(np.float64) ** 2).sum() for e in EPS])
    got = np.asarray(res.objective)
    assert (got <= worst * (1 + 1e-3)).all()  # never beyond the closed form
    np.testing.assert_allclose(got, np.broadcast_to(worst, got.shape), rtol=5e-3)  # 20 steps of 0.5
    np.testing.assert_allclose(np.asarray(res.ratio), np.broadcast_to(EPS, got.shape), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(res.nmse), got, rtol=1e-6)  # the image target is the NMSE
    assert np.abs(np.asarray(res.clean)[:, :2]).max() < 1e-10  # exact without a perturbation


def identity(u, mask, metadata):
    """The zero-filled input itself: a perturbation on sampled columns passes straight through."""
    return jnp.abs(u)


def test_hallucination_has_the_expected_sign():
    cfg = AttackConfig(features=FEATURES, eps=(0.01, 0.05, 0.2), kspace_steps=5)
    res = kspace_attack(O.make_scorer(identity), _batch(), _keys(), cfg, method="hallucinate")
    shown = np.asarray(res.shown)
    assert (shown > 0).all() and (np.diff(shown, axis=1) > 0).all()  # appears, more with eps
    np.testing.assert_allclose(np.asarray(res.clean)[:, 3], 0.0, atol=1e-6)  # nothing without one
    assert np.isnan(np.asarray(res.lost)).all()

    def ignores(u, mask, metadata):  # a model that ignores its input cannot be made to hallucinate
        return jnp.broadcast_to(jnp.asarray(Y), jnp.abs(u).shape)

    none = kspace_attack(O.make_scorer(ignores), _batch(), _keys(), cfg, method="hallucinate")
    np.testing.assert_allclose(np.asarray(none.shown), 0.0, atol=1e-6)


def test_cli_hallucinate_records(tiny_unet_checkpoint, synthetic_dir, tmp_path):
    from fnaf_jax.cli import main

    out = tmp_path / "h.jsonl"
    argv = ["attack", "--checkpoint", str(tiny_unet_checkpoint), "--data", str(synthetic_dir), "--out", str(out),
            "--method", "hallucinate", "--eps", "0.01", "0.05", "--kspace-steps", "2", "--limit", "2",
            "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["method"] == "hallucinate" and r["eps"] == [0.01, 0.05]
        assert len(r["shown"]) == 2 and len(r["hit"]) == 2 and r["clean"]["shown"] is not None
        assert r["passes"] == {"forward": 6, "backward": 4}
        np.testing.assert_allclose(r["ratio"], [0.01, 0.05], rtol=1e-4)
    assert main(argv) == 0  # resumed: nothing new
    assert len(out.read_text().splitlines()) == 2
    # the report tabulates the curves with intervals and denominators, and plots them
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## k-space attacks" in md and "hallucinate" in md and "(hits / slices)" in md
    assert "| 0.05 |" in md and "/ 2]" not in md
    assert (tmp_path / "rep" / "kspace_curves.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    (curve,) = summary["tables"]["kspace"].values()
    assert [row["eps"] for row in curve] == [0.0, 0.01, 0.05]
    assert curve[0]["hit_rate"]["k"] == 0 and curve[1]["hit_rate"]["n"] == 2
