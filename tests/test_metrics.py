"""fastMRI metrics against tests/golden/metrics.json, a direct SSIM, and the jnp SSIM."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnaf_jax import metrics
from fnaf_jax.errors import DataError

# Tolerances suggested by tests/golden/README.md (float32 vs float64: 1.5e-7, 2e-9 dB, 3e-9).
NMSE_RTOL, PSNR_ATOL, SSIM_ATOL = 1e-5, 1e-4, 1e-5


@pytest.fixture(scope="module")
def golden_metrics(golden):
    spec = json.loads((golden / "metrics.json").read_text())
    arrays = np.load(golden / "metrics_inputs.npz")
    cases = [(c, arrays[c["gt_key"]], arrays[c["pred_key"]]) for c in spec["cases"]]
    return spec, cases


def test_golden_volume_metrics(golden_metrics):
    _, cases = golden_metrics
    for case, gt, pred in cases:
        assert gt.dtype == np.float32
        assert metrics.mse(gt, pred) == pytest.approx(case["mse"], rel=NMSE_RTOL)
        assert metrics.nmse(gt, pred) == pytest.approx(case["nmse"], rel=NMSE_RTOL)
        assert metrics.psnr(gt, pred) == pytest.approx(case["psnr"], abs=PSNR_ATOL)
        assert metrics.ssim(gt, pred) == pytest.approx(case["ssim"], abs=SSIM_ATOL)
        maxval = np.float32(case["explicit_maxval"])
        assert metrics.psnr(gt, pred, maxval) == pytest.approx(
            case["psnr_explicit_maxval"], abs=PSNR_ATOL
        )
        assert metrics.ssim(gt, pred, maxval) == pytest.approx(
            case["ssim_explicit_maxval"], abs=SSIM_ATOL
        )
        f64 = case["float64_inputs"]
        gt64, pred64 = gt.astype(np.float64), pred.astype(np.float64)
        assert metrics.nmse(gt64, pred64) == pytest.approx(f64["nmse"], rel=NMSE_RTOL)
        assert metrics.psnr(gt64, pred64) == pytest.approx(f64["psnr"], abs=PSNR_ATOL)
        assert metrics.ssim(gt64, pred64) == pytest.approx(f64["ssim"], abs=SSIM_ATOL)


def test_golden_mean_over_volumes_via_aggregate(golden_metrics):
    spec, cases = golden_metrics
    records = [
        {
            "fname": case["gt_key"],
            "acceleration": 4,
            "acquisition": "CORPD_FBK",
            **metrics.volume_metrics(gt, pred),
        }
        for case, gt, pred in cases
    ]
    overall = metrics.aggregate(records)["all"]
    expected = spec["mean_over_volumes"]
    assert overall["nmse"][0] == pytest.approx(expected["nmse"], rel=NMSE_RTOL)
    assert overall["psnr"][0] == pytest.approx(expected["psnr"], abs=PSNR_ATOL)
    assert overall["ssim"][0] == pytest.approx(expected["ssim"], abs=SSIM_ATOL)
    assert overall["ssim"][2] == len(cases)


def _ssim_by_definition(x, y, data_range):
    """SSIM of one image straight from the definition: a loop over every 7x7 window
    that fits, sample (co)variances, mean of the per-window values."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(x.shape[0] - 6):
        for j in range(x.shape[1] - 6):
            a, b = x[i : i + 7, j : j + 7].ravel(), y[i : i + 7, j : j + 7].ravel()
            cov = np.cov(a, b, ddof=1)
            values.append(
                (2 * a.mean() * b.mean() + c1)
                * (2 * cov[0, 1] + c2)
                / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_the_definition_on_odd_sizes():
    rng = np.random.default_rng(0)
    gt = rng.random((2, 11, 14)) + 0.5
    pred = gt + 0.2 * rng.normal(size=gt.shape)
    maxval = gt.max()
    expected = np.mean([_ssim_by_definition(g, p, maxval) for g, p in zip(gt, pred)])
    assert metrics.ssim(gt, pred) == pytest.approx(expected, abs=1e-12)


def test_perfect_reconstruction():
    gt = np.random.default_rng(1).random((1, 16, 16)) + 1
    assert metrics.ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
    assert metrics.nmse(gt, gt) == 0.0
    assert metrics.psnr(gt, gt) == math.inf


def test_psnr_definition_and_scaling():
    gt = np.full((1, 8, 8), 2.0)
    pred = gt + 0.1
    assert metrics.psnr(gt, pred) == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-9)
    # nmse and ssim do not depend on the units when maxval follows the data
    rng = np.random.default_rng(2)
    a = rng.random((2, 12, 12))
    b = a + 0.1 * rng.normal(size=a.shape)
    assert metrics.nmse(1e-4 * a, 1e-4 * b) == pytest.approx(
        metrics.nmse(a, b), rel=1e-10
    )
    assert metrics.ssim(1e-4 * a, 1e-4 * b) == pytest.approx(
        metrics.ssim(a, b), abs=1e-10
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.nmse(np.ones((1, 8, 8)), np.ones((1, 8, 9))), "shape"),
        (lambda: metrics.ssim(np.ones((8, 8)), np.ones((8, 8))), "S, H, W"),
        (lambda: metrics.ssim(np.ones((1, 5, 8)), np.ones((1, 5, 8))), "7x7"),
        (lambda: metrics.psnr(np.zeros((1, 8, 8)), np.ones((1, 8, 8))), "data range"),
        (lambda: metrics.nmse(np.zeros((1, 8, 8)), np.ones((1, 8, 8))), "all zeros"),
    ],
)
def test_bad_inputs_raise_data_error(call, match):
    with pytest.raises(DataError, match=match):
        call()


def test_ssim_jax_matches_numpy_per_image(golden_metrics):
    _, cases = golden_metrics
    _, gt, pred = cases[0]
    maxval = float(gt.max())
    got = np.asarray(jax.jit(metrics.ssim_jax)(gt, pred, maxval))
    expected = metrics.ssim_map(gt, pred, maxval).mean(axis=(-2, -1))
    assert got.shape == (gt.shape[0],)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # per-image data range (B,) and the fastMRI volume value
    per_image = np.asarray(metrics.ssim_jax(gt, pred, jnp.full((gt.shape[0],), maxval)))
    np.testing.assert_allclose(per_image, got, atol=1e-7)
    assert float(got.mean()) == pytest.approx(cases[0][0]["ssim"], abs=SSIM_ATOL)


def test_ssim_jax_gradient_is_usable_as_a_loss():
    rng = np.random.default_rng(3)
    gt = jnp.asarray(rng.random((2, 16, 16)), jnp.float32)
    pred = gt + 0.1 * jnp.asarray(rng.normal(size=gt.shape), jnp.float32)

    @jax.jit
    def loss(p):
        return jnp.mean(1.0 - metrics.ssim_jax(gt, p, 1.0))

    grad_fn = jax.jit(jax.grad(loss))
    grad = grad_fn(pred)
    assert grad.shape == pred.shape and bool(jnp.all(jnp.isfinite(grad)))
    # directional derivative agrees with a central difference
    direction = jnp.asarray(rng.normal(size=gt.shape), jnp.float32)
    h = 1e-2
    numeric = (loss(pred + h * direction) - loss(pred - h * direction)) / (2 * h)
    assert float(jnp.vdot(grad, direction)) == pytest.approx(float(numeric), rel=2e-2)
    # SSIM is maximal at pred = gt: zero gradient there
    assert float(jnp.abs(grad_fn(gt)).max()) < 1e-5


def test_aggregate_groups_and_statistics():
    records = [
        {"fname": "a", "acceleration": 4, "acquisition": "CORPD_FBK", "nmse": 0.1, "psnr": 30.0, "ssim": 0.7},
        {"fname": "b", "acceleration": 4, "acquisition": "CORPD_FBK", "nmse": 0.3, "psnr": 32.0, "ssim": 0.9},
        {"fname": "c", "acceleration": 4.0, "acquisition": "CORPDFS_FBK", "nmse": 0.2, "psnr": 28.0, "ssim": 0.6},
        {"fname": "d", "acceleration": 8, "acquisition": "CORPD_FBK", "nmse": 0.5, "psnr": 25.0, "ssim": 0.5},
        {"fname": "e", "acceleration": None, "acquisition": None, "nmse": 0.4, "psnr": 26.0, "ssim": 0.4},
    ]  # fmt: skip
    groups = metrics.aggregate(records)
    assert list(groups) == [
        "all",
        "4x",
        "4x/CORPDFS_FBK",
        "4x/CORPD_FBK",
        "8x",
        "8x/CORPD_FBK",
        "unknown",
        "unknown/unknown",
    ]
    ssim_all = [r["ssim"] for r in records]
    mean, std, n = groups["all"]["ssim"]
    assert (mean, n) == (pytest.approx(np.mean(ssim_all)), 5)
    assert std == pytest.approx(np.std(ssim_all, ddof=1))
    mean, std, n = groups["4x/CORPD_FBK"]["psnr"]
    assert (mean, std, n) == (pytest.approx(31.0), pytest.approx(math.sqrt(2)), 2)
    assert groups["4x"]["nmse"] == (pytest.approx(0.2), pytest.approx(0.1), 3)
    assert groups["8x"]["nmse"] == (pytest.approx(0.5), 0.0, 1)  # single volume: std 0
    with pytest.raises(DataError, match="lacks ssim"):
        metrics.aggregate([{"fname": "x.h5", "nmse": 0.1, "psnr": 1.0}])
    with pytest.raises(DataError, match="no volumes"):
        metrics.aggregate([])
