"""Table 4 region metrics against a hand computation (explicit loops, no filters)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from fnaf_jax.abnormalities import region_metrics, score_model, table4, write_table4
from fnaf_jax.data.annotations import read_fastmri_plus
from fnaf_jax.errors import DataError

N = 320


def hand_region_ssim(gt, pred, rows, cols, data_range):
    """SSIM map by its definition at each box pixel: 7x7 window with mirrored borders
    (scipy "reflect" = numpy "symmetric"), sample (co)variance, then the box mean."""
    g = np.pad(gt.astype(np.float64), 3, mode="symmetric")
    p = np.pad(pred.astype(np.float64), 3, mode="symmetric")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for r in range(*rows):
        for c in range(*cols):
            a, b = g[r:r + 7, c:c + 7].ravel(), p[r:r + 7, c:c + 7].ravel()
            va, vb = a.var(ddof=1), b.var(ddof=1)
            cov = np.sum((a - a.mean()) * (b - b.mean())) / 48
            values.append(((2 * a.mean() * b.mean() + c1) * (2 * cov + c2))
                          / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def hand_region_nmse(gt, pred, rows, cols):
    g = gt[rows[0]:rows[1], cols[0]:cols[1]].astype(np.float64)
    p = pred[rows[0]:rows[1], cols[0]:cols[1]].astype(np.float64)
    return float(((g - p) ** 2).sum() / (g ** 2).sum())


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:N, 0:N] / N
    gt = np.stack([np.exp(-((yy - 0.5) ** 2 + (xx - 0.4 - 0.1 * s) ** 2) * 8) for s in range(2)])
    gt = (gt + 0.05 * rng.random(gt.shape)).astype(np.float32) * 1e-4
    pred = (gt + 2e-6 * rng.standard_normal(gt.shape)).astype(np.float32)
    data, preds = tmp_path / "data", tmp_path / "pred"
    data.mkdir()
    preds.mkdir()
    with h5py.File(data / "file1.h5", "w") as hf:
        hf["reconstruction_esc"] = gt
    with h5py.File(preds / "file1.h5", "w") as hf:
        hf["reconstruction"] = pred
    table = tmp_path / "knee.csv"
    table.write_text(
        "file,slice,study_level,x,y,width,height,label\n"
        "file1,0,No,100,150,12,9,Meniscus Tear\n"      # rows 161..170, cols 100..112
        "file1,1,No,0,310,8,10,Meniscus Tear\n"        # rows 0..10 at the image border
        "file1,1,No,200,40,20,6,Bone- Subchondral edema\n"
        "file2,3,No,10,10,5,5,Meniscus Tear\n"         # file not in the data: skipped
        "file1,7,No,10,10,5,5,Meniscus Tear\n"         # slice out of range: skipped
        "file9,0,Yes,,,,,artifact\n")
    return data, preds, read_fastmri_plus(table), gt, pred


def test_region_scores_match_hand_computation(folders):
    data, preds, anns, gt, pred = folders
    scores = score_model("unet", data, preds, anns)
    assert [(s.fname, s.slice, s.label) for s in scores] == [
        ("file1.h5", 0, "Meniscus Tear"), ("file1.h5", 1, "Meniscus Tear"),
        ("file1.h5", 1, "Bone- Subchondral edema")]
    data_range = float(gt.max())
    boxes = [(0, (161, 170), (100, 112)), (1, (0, 10), (0, 8)), (1, (274, 280), (200, 220))]
    for score, (s, rows, cols) in zip(scores, boxes):
        assert score.n_pixels == (rows[1] - rows[0]) * (cols[1] - cols[0])
        np.testing.assert_allclose(score.nmse, hand_region_nmse(gt[s], pred[s], rows, cols), rtol=1e-6)
        np.testing.assert_allclose(score.ssim, hand_region_ssim(gt[s], pred[s], rows, cols, data_range),
                                   rtol=1e-6, atol=1e-9)
        assert score.ssim < 1.0  # noise was added: not a trivial identity
    region = np.zeros((N, N), bool)
    region[161:170, 100:112] = True
    nmse, ssim = region_metrics(gt[0], pred[0], region, data_range)
    assert (nmse, ssim) == pytest.approx((scores[0].nmse, scores[0].ssim), rel=1e-9)


def test_table4_means_per_label_and_all(folders, tmp_path):
    data, preds, anns, _, _ = folders
    scores = score_model("unet", data, preds, anns) + score_model("perfect", data, data, [])
    rows = table4(scores)
    men = [s for s in scores if s.label == "Meniscus Tear"]
    row = next(r for r in rows if r["label"] == "Meniscus Tear" and r["model"] == "unet")
    assert row["boxes"] == 2
    assert row["nmse"] == pytest.approx(np.mean([s.nmse for s in men]))
    assert row["ssim"] == pytest.approx(np.mean([s.ssim for s in men]))
    assert rows[-1]["label"] == "all" and rows[-1]["boxes"] == 3
    out = write_table4(scores, tmp_path / "t4")
    assert json.loads((tmp_path / "t4" / "table4.json").read_text()) == out["rows"]
    assert "Meniscus Tear" in (tmp_path / "t4" / "table4.md").read_text()


def test_shape_mismatch_names_the_file(folders):
    data, preds, anns, _, pred = folders
    with h5py.File(preds / "file1.h5", "w") as hf:
        hf["reconstruction"] = pred[:, :300]
    with pytest.raises(DataError, match="file1.h5"):
        score_model("unet", data, preds, anns)
