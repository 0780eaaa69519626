"""CLI consistency: flags generated from the configs, list flags, one default per flag."""

from __future__ import annotations

import json
import re

import pytest

from fnaf_jax import cli
from fnaf_jax.study.pipeline import Stage, eta_seconds


def _help(verb: str, capsys) -> str:
    assert cli.main([verb, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", cli.COMMANDS)
def test_every_help_shows_each_default_once(verb, capsys):
    text = _help(verb, capsys)
    # argparse's own layout: an option line, then its wrapped help, up to the next option
    for block in re.split(r"\n  (?=-)", text):
        assert block.count("(default") <= 1, block


def test_attack_defaults_come_from_the_configs(capsys):
    from fnaf_jax.attacks.config import AttackConfig

    text = " ".join(_help("attack", capsys).split())
    cfg = AttackConfig()
    assert f"candidates per slice (default: {cfg.k})" in text
    assert f"feature size P (default: {cfg.features.num_pixels})" in text
    assert f"(memory) (default: {cfg.objective.max_images_per_call})" in text


def test_attack_takes_a_list_of_accelerations_like_train(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "zf.jsonl"
    argv = ["attack", "--baseline", "zero-filled", "--data", str(synthetic_dir), "--out", str(out),
            "--accelerations", "4", "8", "--limit", "1", "--k", "2", "--batch-size", "1", "--no-progress"]
    assert cli.main(argv) == 0
    for acc, cf in ((4, 0.08), (8, 0.04)):
        (line,) = (tmp_path / f"zf_{acc}x.jsonl").read_text().splitlines()
        record = json.loads(line)
        assert (record["acceleration"], record["center_fraction"]) == (acc, cf)
    assert not out.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--accelerations", "4", "8", "--center-fractions", "0.08"], "2 accelerations"),
    (["--acceleration", "4", "--accelerations", "8"], "given twice"),
    (["--accelerations", "4", "4"], "repeats"),
])
def test_bad_mask_lists_are_refused_before_anything_runs(synthetic_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "r.jsonl"
    argv = ["attack", "--baseline", "zero-filled", "--data", str(synthetic_dir), "--out", str(out), *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_synth_refuses_a_bad_width_before_any_progress_bar(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path / "d"), "--width", "100"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["fnaf synth: error: synthetic data: width must be >= 320, got 100"]
    assert not (tmp_path / "d").exists()


def _stage(name, kind, weight, work):
    return Stage(name, lambda: None, {}, weight=weight, kind=kind, work=work)


def test_eta_uses_measured_rates_per_kind_and_scales_the_priors():
    train_a, train_b = _stage("a", "train", 0.2, 100), _stage("b", "train", 0.2, 50)
    attack = _stage("c", "attack", 0.05, 400)
    assert eta_seconds([train_b, attack], []) is None  # nothing measured yet
    # a took 40 s for 100 units (0.4 s/unit, twice its prior): b runs at the measured rate,
    # the attack at its prior times the measured slow-down
    assert eta_seconds([train_b, attack], [(train_a, 40.0)]) == pytest.approx(50 * 0.4 + 400 * 0.05 * 2)
    # once an attack was measured its own rate is used
    done_attack = _stage("d", "attack", 0.05, 100)
    assert eta_seconds([attack], [(train_a, 40.0), (done_attack, 3.0)]) == pytest.approx(400 * 0.03)
