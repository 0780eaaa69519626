"""`fnaf reproduce`: the stage cache (unit tests with counting stages) and the whole study
on the `mini` preset (tiny data and models), run twice: the second run must skip everything."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from fnaf_jax import cli
from fnaf_jax.errors import ConfigError
from fnaf_jax.study.pipeline import Pipeline, Stage, StageError
from fnaf_jax.study.presets import PRESET_DIR, load_preset


# ----------------------------------------------------------------------------- pipeline
def make_stages(tmp_path, calls, fail=None, config_b=1):
    out_b = tmp_path / "b_out"

    def run_a():
        calls.append("a")

    def run_b():
        calls.append("b")
        assert not (out_b / "old").exists()  # outputs made under another config are gone
        out_b.mkdir(exist_ok=True)
        (out_b / "old").write_text("x")
        if fail == "b":
            raise RuntimeError("boom")

    def run_c():
        calls.append("c")

    return [Stage("a", run_a, {"x": 1}),
            Stage("b", run_b, {"x": config_b}, outputs=[out_b], after=["a"]),
            Stage("c", run_c, {"x": 3}, after=["b"])]


def test_pipeline_skips_done_stages_and_reruns_changed_ones(tmp_path):
    calls, lines = [], []
    status = Pipeline(tmp_path, make_stages(tmp_path, calls), log=lines.append).run()
    assert calls == ["a", "b", "c"] and set(status.values()) == {"ran"}
    assert any("[stage 2/3] b: running" in line and "ETA" in line for line in lines)

    calls.clear()
    status = Pipeline(tmp_path, make_stages(tmp_path, calls), log=lines.append).run()
    assert calls == [] and set(status.values()) == {"skipped"}

    # b's config changes: b and c (which depends on it) run again, a does not;
    # b's old outputs are removed first (run_b asserts it)
    calls.clear()
    Pipeline(tmp_path, make_stages(tmp_path, calls, config_b=2), log=lines.append).run()
    assert calls == ["b", "c"]
    assert "config changed" in (tmp_path / "reproduce.log").read_text()


def test_failed_stage_is_named_and_resumes(tmp_path):
    calls = []
    with pytest.raises(StageError, match=r"stage 2/3 'b' failed: boom"):
        Pipeline(tmp_path, make_stages(tmp_path, calls, fail="b"), log=lambda m: None).run()
    assert calls == ["a", "b"]
    assert not (tmp_path / ".stages" / "b.done").exists()
    # the re-run keeps b's partial outputs (a verb resumes from them): same config
    (tmp_path / "b_out" / "old").unlink()
    calls.clear()
    Pipeline(tmp_path, make_stages(tmp_path, calls), log=lambda m: None).run()
    assert calls == ["b", "c"]


def test_targets_run_only_what_they_need(tmp_path):
    calls = []
    status = Pipeline(tmp_path, make_stages(tmp_path, calls), log=lambda m: None).run(targets=["b"])
    assert calls == ["a", "b"] and "c" not in status


def test_presets_load_and_bad_presets_are_refused(tmp_path):
    for name in ("mini", "smoke", "synthetic", "paper"):
        preset = load_preset(name)
        assert preset.attack.config.k >= 1 and preset.masks.eval
    paper = load_preset("paper")
    assert paper.attack.config.k == 11 and paper.attack.config.fd_iterations == 2
    assert (paper.train["robust"]["alpha"], paper.train["robust"]["beta"]) == (1.0, 100.0)
    assert paper.train["unet"]["chans"] == 32 and paper.irim_source == "convert"
    assert paper.models() == ["unet", "cleanft", "robust", "robust_wk", "irim"]
    assert paper.train["robust_wk"]["worst_of"] == 11 and paper.train["cleanft"]["robust"] is False
    assert "alpha" not in paper.train["cleanft"] and paper.train["cleanft"]["epochs"] == paper.train["robust"]["epochs"]
    assert paper.raw["compute"]["total_gpu_hours"] > 0
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": {}}))
    with pytest.raises(ConfigError, match="lacks section"):
        load_preset(bad)


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("attack", "fd_h", 10, "attack: unknown key 'fd_h'; known: .*fd_step"),
    ("unet", "chanz", 8, "unet: unknown key 'chanz'"),
    ("unet", "data", "x", "unet: unknown key 'data'"),  # the study sets the data itself
    ("robust", "loss", "l7", "robust: train config loss='l7'"),
    ("data", "volumes", 3, "data: unknown key 'volumes'"),
    (None, "atack", {}, "unknown key 'atack'"),
    ("attack", "num_pixels", 0, "num_pixels must be >= 1"),
])
def test_typed_preset_names_the_bad_key(tmp_path, section, key, value, message):
    raw = json.loads((PRESET_DIR / "smoke.json").read_text())
    (raw if section is None else raw[section])[key] = value
    path = tmp_path / "p.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        load_preset(path)


# ----------------------------------------------------------------------------- the study
@pytest.fixture(scope="module")
def mini_study(tmp_path_factory, installed_fnaf):
    """The mini study, run by a non-editable install of the package (``fnaf`` of a fresh
    venv, sources gone): presets and everything else ship inside the package."""
    import subprocess

    bin_dir, env = installed_fnaf
    out = tmp_path_factory.mktemp("mini") / "study"
    run = subprocess.run([bin_dir / "fnaf", "reproduce", "--preset", "mini", "--out", str(out)], env=env,
                         cwd=out.parent, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


# one worker runs every test of the study (pytest-xdist --dist loadgroup, as README runs it): the
# module fixture then runs once
@pytest.mark.slow
@pytest.mark.xdist_group("mini_study")
def test_mini_study_writes_every_artefact(mini_study):
    out = mini_study
    preset = load_preset("mini")
    accs = [spec.acceleration for spec in preset.masks.eval]
    md = (out / "report.md").read_text()
    for section in ("Table 1", "Table 2", "Table 3", "Transfer", "Table 4", "Figure 1",
                    "Figure 2", "Figure 3", "Does each finding hold?"):
        assert section in md
    assert "84.44" in md  # the paper's numbers are printed beside the measured ones
    assert "<table>" in (out / "report.html").read_text()

    for section in ("Controls beside each attack rate", "Paired comparisons", "oracle eraser",
                    "Can the instrument tell"):
        assert section in md
    results = json.loads((out / "tables" / "results.json").read_text())
    assert results["table2"]["zero-filled"][str(accs[0])]["rs"]["attack_rate"]["n"] >= 0
    for model in ("unet", "cleanft", "robust", "jitter", "irim"):
        for acc in accs:
            t1 = results["table1"][model][str(acc)]
            assert 0.0 < t1["ssim"] <= 1.0 and t1["nmse"] >= 0.0
            for method in ("rs", "fd"):
                t2 = results["table2"][model][str(acc)][method]
                rate = t2["attack_rate"]
                assert (rate["k"], rate["n"]) == (t2["hits"], t2["accepted"])
                assert rate["n"] == 0 or 0.0 <= rate["lo"] <= rate["pct"] <= rate["hi"] <= 100.0
                assert 0.0 <= t2["acceptance"]["pct"] <= 100.0
                for control in ("eraser_rate", "nofeature_rate", "random_rate", "chosen_acceptance"):
                    assert t2[control]["n"] in (t2["accepted"], t2["slices"])
                lines = (out / "attacks" / f"{model}_{acc}x_{method}.jsonl").read_text().splitlines()
                assert len(lines) == t2["slices"] > 0
                assert all(isinstance(json.loads(line), dict) for line in lines)
            recon = out / "recon" / f"{model}_{acc}x"
            files = sorted(recon.glob("*.h5"))
            assert files
            with h5py.File(files[0]) as hf:
                assert np.isfinite(hf["reconstruction"][()]).all()
    assert "cleanft-robust" in results["paired"][str(accs[0])]
    for acc in accs:
        assert (out / "attacks" / f"transfer_unet-irim_{acc}x.jsonl").is_file()
        assert 0.0 <= results["transfer"][str(acc)]["acceptance"]["pct"] <= 100.0
        assert "conditional_rate" in results["transfer"][str(acc)]

    t4 = json.loads((out / "tables" / "table4" / "table4.json").read_text())
    assert t4 and all(0.0 < r["ssim"] <= 1.0 for r in t4)  # the synthetic set plants lesions

    import matplotlib.pyplot as plt

    pngs = sorted((out / "figures").rglob("*.png"))
    assert {p.name.split("_")[0] for p in pngs} >= {"figure1b", "figure2", "figure3"}
    for png in pngs:
        assert plt.imread(png).ndim == 3
        assert str(png.relative_to(out)) in md


def _accepted_mean_difference(ref, own, field):
    """Independent mean of ref - own over the slices accepted in both."""
    by_key = {(r["file"], r["slice"]): r for r in own}
    diffs = [a[field] - b[field] for a in ref if (b := by_key.get((a["file"], a["slice"])))
             and a["accepted"] and b["accepted"]]
    return float(np.mean(diffs))


@pytest.mark.slow
@pytest.mark.xdist_group("mini_study")
def test_mini_study_defenses_table_follows_the_records(mini_study):
    """The mini preset trains one defense (jittering) and runs a hallucination attack: the
    defenses table's paired numbers equal means computed here from the attack records."""
    import math

    from fnaf_jax.attacks.records import read_records

    out = mini_study
    results = json.loads((out / "tables" / "results.json").read_text())
    pair = results["defenses"]["4"]["jitter"]
    ref, own = (read_records(out / "attacks" / f"{m}_4x_rs.jsonl") for m in ("cleanft", "jitter"))
    assert math.isclose(pair["rs"]["lost_fraction_difference"]["mean"],
                        _accepted_mean_difference(ref, own, "lost_fraction"), rel_tol=1e-9, abs_tol=1e-12)
    ref, own = (read_records(out / "attacks" / f"{m}_4x_hallucinate.jsonl") for m in ("cleanft", "jitter"))
    (row,) = pair["hallucinate"]
    shown = np.mean([a["shown"][0] - b["shown"][0] for a, b in zip(ref, own, strict=True)])
    hits = 100 * np.mean([float(a["hit"][0]) - float(b["hit"][0]) for a, b in zip(ref, own, strict=True)])
    assert row["eps"] == 0.01 and math.isclose(row["shown_difference"]["mean"], shown, abs_tol=1e-12)
    assert math.isclose(row["rate_difference"]["mean"], hits, abs_tol=1e-9)
    assert set(results["defense_ssim"]["4"]) == {"unet", "robust", "jitter", "irim"}
    assert "zero-filled" not in results["defenses"]["4"]  # a control, not a defense

    section = (out / "report.md").read_text().split("## Defenses compared on one instrument", 1)[1]
    jitter_rows = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("| jittered U-Net |")]
    assert len(jitter_rows) == 4  # clean cost; RS, FD and hallucination at eps 0.01
    assert all(line.rstrip(" |").endswith(("holds", "does not hold", "inconclusive")) for line in jitter_rows[1:])
    assert "## k-space worst cases and hallucinations" in section


@pytest.mark.slow
@pytest.mark.xdist_group("mini_study")
def test_mini_study_second_run_skips_every_stage(mini_study, capsys):
    out = mini_study
    markers = sorted((out / ".stages").glob("*.done"))
    before = {m.name: m.stat().st_mtime_ns for m in markers}
    log_lines = len((out / "reproduce.log").read_text().splitlines())
    capsys.readouterr()
    assert cli.main(["reproduce", "--preset", "mini", "--out", str(out)]) == 0
    new_log = (out / "reproduce.log").read_text().splitlines()[log_lines:]
    stage_lines = [line for line in new_log if "[stage " in line]
    assert len(stage_lines) == len(markers) >= 13
    assert all("skipped (done" in line for line in stage_lines)
    assert {m.name: m.stat().st_mtime_ns for m in (out / ".stages").glob("*.done")} == before
    assert "0 ran" in new_log[-1]


# ----------------------------------------------------------------------------- findings
def _rate(pct, lo, hi, n=128):
    return {"k": round(pct * n / 100), "n": n, "pct": pct, "lo": lo, "hi": hi}


def _diff(mean, lo, hi):
    return {"n": 128, "mean": mean, "lo": lo, "hi": hi}


def _pair(gap_lo, gap_hi):
    return {"rate_difference": _diff((gap_lo + gap_hi) / 2, gap_lo, gap_hi), "mcnemar_p": 0.01,
            "both_accepted": 128, "lost_fraction_difference": _diff(0.1, 0.05, 0.15),
            "worst_loss_difference": {**_diff(1e-4, 0.0, 2e-4), "wilcoxon_p": 0.01}}


def _results(robust_gap, rs_fd_gap, acceptance, irim_gap, irim_ssim, transfer):
    return {
        "table1": {},
        "table2": {"unet": {4: {"rs": {"acceptance": _rate(*acceptance),
                                       "eraser_rate": _rate(99.0, 96.0, 100.0),
                                       "nofeature_rate": _rate(1.0, 0.1, 4.0)}}}},
        "paired": {4: {"cleanft-robust": _pair(*robust_gap), "rs-fd:unet": _pair(*rs_fd_gap),
                       "unet-irim": _pair(*irim_gap)}},
        "ssim_difference": {4: {"cleanft-robust": _diff(0.002, 0.0, 0.004), "irim-unet": _diff(*irim_ssim)}},
        "transfer": {4: {"conditional_rate": _rate(*transfer), "attack_rate": _rate(*transfer)}},
    }


def test_findings_verdicts_are_decided_by_the_intervals():
    from fnaf_jax.study.paper import findings, instrument_checks

    holds = _results((40, 60), (1, 15), (99.8, 99.6, 99.9), (20, 40), (0.0, 0.01, 0.03, ), (80, 70, 90))
    holds["ssim_difference"][4]["irim-unet"] = _diff(0.02, 0.01, 0.03)
    assert [f["verdict"] for f in findings(holds)] == ["holds"] * 5
    assert [f["verdict"] for f in instrument_checks(holds)] == ["holds"]
    fails = _results((-5, 5), (-20, -5), (80, 75, 85), (-30, -10), (0.02, 0.01, 0.03), (20, 10, 30))
    assert [f["verdict"] for f in findings(fails)] == ["does not hold"] * 5
    unclear = _results((5, 20), (-6, 4), (96, 93, 98), (-5, 10), (0.02, 0.01, 0.03), (55, 40, 70))
    assert [f["verdict"] for f in findings(unclear)] == ["inconclusive"] * 5
    # an i-RIM that does not beat the U-Net on SSIM makes finding 4 untestable, whatever the rates
    untestable = _results((40, 60), (1, 15), (99.8, 99.6, 99.9), (20, 40), (-0.01, -0.02, 0.0), (80, 70, 90))
    item = findings(untestable)[3]
    assert item["verdict"] == "inconclusive" and "untestable" in item["why"]
    assert all(f["verdict"] == "inconclusive" for f in findings({}))


def test_paper_preset_needs_data_and_the_released_irim(tmp_path):
    from fnaf_jax.errors import DataError
    from fnaf_jax.study.build import build_pipeline

    paper = load_preset("paper")
    with pytest.raises(ConfigError, match="give --data"):
        build_pipeline(paper, tmp_path / "out")
    with pytest.raises(DataError, match="singlecoil_train"):
        build_pipeline(paper, tmp_path / "out", data=tmp_path)
    for split in ("singlecoil_train", "singlecoil_val"):
        (tmp_path / split).mkdir()
    with pytest.raises(ConfigError, match="--irim-checkpoint"):
        build_pipeline(paper, tmp_path / "out", data=tmp_path)
    pt = tmp_path / "irim.pt"
    pt.write_bytes(b"")
    pipeline = build_pipeline(paper, tmp_path / "out", data=tmp_path, irim_checkpoint=pt)
    names = [s.name for s in pipeline.stages]
    assert "data" not in names and names[:5] == ["train_unet", "train_cleanft", "train_robust",
                                                 "train_robust_wk", "train_irim"]
    by_name = {s.name: s.config for s in pipeline.stages}
    robust, clean, wk = by_name["train_robust"], by_name["train_cleanft"], by_name["train_robust_wk"]
    # the clean fine-tune matches the robust one in everything but the FNAF term
    fnaf = ("alpha", "beta", "worst_of", "ip_threshold", "robust")
    assert clean["robust"] is None and clean["epochs"] == robust["epochs"] == 10
    assert {k: v for k, v in robust.items() if k not in fnaf} == {k: v for k, v in clean.items() if k not in fnaf}
    assert wk["worst_of"] == 11 and wk["robust"] == "worst-of-k"
    assert (robust["alpha"], robust["beta"], robust["worst_of"], robust["robust"]) == (1.0, 100.0, 1, "rs")
    assert robust["init_from"].endswith("models/unet/best")


def test_an_attack_stage_gives_its_methods_one_control_cache(tmp_path, monkeypatch):
    """The jobs of one model's attack stage (each method at each acceleration) share one
    ControlCache, so each slice's no-feature output is computed once per acceleration."""
    from fnaf_jax.attacks import runner
    from fnaf_jax.attacks.controls import ControlCache
    from fnaf_jax.study.stages import Layout, attack_stage

    seen = []
    monkeypatch.setattr(runner, "attack_folder", lambda job, controls=None: seen.append((job, controls)))
    layout = Layout(out=tmp_path, data_root=tmp_path, train_split="train", val_split="val", synthetic=True)
    attack_stage(layout, load_preset("smoke"), "unet").run()
    methods = {(job.method, job.mask.acceleration) for job, _ in seen}
    assert {m for m, _ in methods} == {"rs", "fd"} and len(methods) == len(seen) >= 2
    assert isinstance(seen[0][1], ControlCache) and all(c is seen[0][1] for _, c in seen)
