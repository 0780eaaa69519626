"""`fnaf profile`: the location heatmap of a quadrant eraser shows the quadrant (known
answer), sweep points equal direct scorer calls on the same features, runs resume and
refuse other settings, and the command writes its CSV, JSON and plots."""

from __future__ import annotations

import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest
from test_attacks import FEATURES, QUADRANT, Y0, eraser

from fnaf_jax import features as F
from fnaf_jax import objective as O
from fnaf_jax.attacks.config import AttackConfig
from fnaf_jax.attacks.random_search import draw
from fnaf_jax.attacks.runner import batch_keys, make_batch
from fnaf_jax.errors import ConfigError
from fnaf_jax.profile import (
    ProfileConfig,
    _spec,
    cell_centres,
    run_profile,
    summarize_point,
)

ITEMS = [{"target_raw": Y0, "fname": f"file{v}.h5", "slice_num": s} for v in range(3) for s in range(2)]


def _cfg(tmp_path, **kw):
    base = {"data": "unused", "out": str(tmp_path / "prof"), "baseline": "zero-filled", "acceleration": 1,
                "sweeps": ("location", "contrast"), "contrasts": (0.2, 1.0), "grid": 4, "k": 1, "limit": None,
                "batch_size": 4, "attack": AttackConfig(features=FEATURES)}
    return ProfileConfig(**{**base, **kw})


def test_location_heatmap_of_a_quadrant_eraser_and_points_equal_direct_calls(tmp_path):
    cfg = _cfg(tmp_path)
    res = run_profile(eraser, ITEMS, cfg, "quadrant-eraser", progress=False)
    cells = {tuple(p["cell"]): p for p in res["sweeps"]["location"]}
    assert len(cells) == 16 and all(p["accepted"] == len(ITEMS) for p in cells.values())
    inside = cells[(0, 0)]  # centre (17, 17): every pixel of a 5-pixel feature in the quadrant
    assert inside["hit_rate"]["pct"] == 100.0 and inside["lost"]["mean"] == pytest.approx(1.0, abs=1e-5)
    centres = np.asarray(cell_centres(4, FEATURES))
    for (r, c), p in cells.items():
        if max(centres[r * 4 + c]) >= 37:  # at least 9 px from the quadrant's last row or column
            assert p["hits"] == 0 and p["lost"]["mean"] == pytest.approx(0.0, abs=1e-5), (r, c)
    assert inside["hit_rate"]["n"] == len(ITEMS)  # the denominator: accepted features
    for p in cells.values():  # a rate's interval holds the rate and stays within [0, 100]
        assert 0.0 <= p["hit_rate"]["lo"] <= p["hit_rate"]["pct"] <= p["hit_rate"]["hi"] <= 100.0
    # the contrast points, recomputed by direct calls on the same features
    batch = make_batch(ITEMS, _spec(1), (64, 64))
    keys = batch_keys(0, batch)
    base = draw(keys, jnp.asarray(batch["target_raw"]), 1, FEATURES)
    for point, c in zip(res["sweeps"]["contrast"], (0.2, 1.0), strict=True):
        cands = base._replace(values=jnp.full_like(base.values, c * float(Y0.max() - Y0.min())))
        scores = O.score_controls(eraser, batch, cands)
        files = np.asarray(batch["fname"])[:, None]
        want = summarize_point(scores.loss, scores.ip, scores.lost, files, cfg.attack)
        assert point["hits"] == want["hits"] and point["accepted"] == want["accepted"]
        assert point["lost"]["mean"] == pytest.approx(want["lost"]["mean"], rel=1e-5)
        touches = QUADRANT[(np.asarray(F.pixels(cands))[..., 0], np.asarray(F.pixels(cands))[..., 1])].any(-1)
        if c == 1.0:  # bright enough that one erased pixel is a hit: hits exactly where features meet it
            assert point["hits"] == int(touches.sum()) > 0
        assert point["hits"] <= int(touches.sum())

    # outputs, then resume: nothing recomputed; other settings refused before any work
    out = tmp_path / "prof"
    rows = list(csv.DictReader((out / "profile.csv").open()))
    assert len(rows) == 18 and {r["sweep"] for r in rows} == {"location", "contrast"}
    assert (out / "profile_location.png").stat().st_size > 1000 and (out / "profile_contrast.png").is_file()
    lines = (out / "points.jsonl").read_text()
    again = run_profile(eraser, ITEMS, cfg, "quadrant-eraser", progress=False)
    assert (out / "points.jsonl").read_text() == lines and again["sweeps"] == json.loads(
        (out / "profile.json").read_text())["sweeps"]
    with pytest.raises(ConfigError, match="k = 1"):
        run_profile(eraser, ITEMS, _cfg(tmp_path, k=2), "quadrant-eraser", progress=False)


def test_read_off_names_the_size_below_which_features_are_lost():
    from fnaf_jax.profile import read_off

    def point(value, lo, hi):
        return {"value": value, "lost": {"n": 10, "mean": (lo + hi) / 2, "lo": lo, "hi": hi}}

    sweeps = {"size": [point(1, 0.8, 0.95), point(3, 0.6, 0.9), point(10, 0.3, 0.7), point(30, 0.1, 0.3)]}
    (line,) = read_off(sweeps, 8)
    assert "At 8x" in line and "size <= 3 pixels" in line and "from 30 pixels" in line
    (line,) = read_off({"size": [point(1, 0.3, 0.7)]}, 4)
    assert "inconclusive" in line


def test_cli_profile(tiny_unet_checkpoint, synthetic_dir, tmp_path, capsys):
    from fnaf_jax.cli import main

    argv = ["profile", "--checkpoint", str(tiny_unet_checkpoint), "--data", str(synthetic_dir),
            "--out", str(tmp_path / "p"), "--sweeps", "size", "acceleration", "--sizes", "1", "10",
            "--accelerations", "4", "8", "--k", "2", "--limit", "2", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "At 8x" in printed and "profile.csv" in printed
    rows = list(csv.DictReader((tmp_path / "p" / "profile.csv").open()))
    assert [(r["sweep"], r["value"]) for r in rows] == [("size", "1"), ("size", "10"),
                                                        ("acceleration", "4"), ("acceleration", "8")]
    assert all(int(r["features"]) == 4 for r in rows)
    other = list(argv)
    other[other.index("--k") + 1] = "3"
    assert main(other) == 2  # other settings into the same folder
    assert "profile into another --out" in capsys.readouterr().err
