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
    assert cfg.objective.max_images_per_call is None and "(default: the backend's rule, 2 on CPU" in text


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


def test_eta_follows_the_current_load_and_each_kinds_own_pace():
    a, b = _stage("a", "train", 0.2, 100), _stage("b", "train", 0.2, 50)
    attack, report = _stage("c", "attack", 0.05, 400), _stage("r", "report", 8.0, 1)
    assert eta_seconds([b, attack], []) is None  # nothing measured yet
    # a ran at twice its prior: everything left is expected twice as slow
    assert eta_seconds([b, attack, report], [(a, 40.0)]) == pytest.approx(2 * (0.2 * 50 + 0.05 * 400 + 8))
    # attacks ran 3x slower than trainings relative to their priors: each kind keeps its own
    # factor against the overall pace (35 s for 25 s of priors); the current load is the
    # pace of the latest stages covering RECENT_SHARE of the time (here the attack alone)
    done_attack = _stage("d", "attack", 0.05, 100)  # prior 5 s, took 15 s
    measured = [(a, 20.0), (done_attack, 15.0)]  # ratios 1 (train) and 3 (attack)
    overall, load = 35.0 / 25.0, 3.0
    expected = 0.05 * 400 * load * (3.0 / overall) + 0.2 * 50 * load * (1.0 / overall)
    assert eta_seconds([attack, b], measured) == pytest.approx(expected)
    # the machine got quieter: the last RECENT stages ran at their priors, the ETA follows
    quiet = [(a, 80.0), *[(_stage(f"t{i}", "train", 0.2, 100), 20.0) for i in range(3)]]
    assert eta_seconds([b], quiet) == pytest.approx(0.2 * 50 * 1.0 * 1.0)
