"""The defenses study (preset ``defenses``): presets with extra fine-tunes (``defenses``),
attack ``methods`` and no i-RIM; a tiny run whose defenses table is checked against the
attack records it was made from."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fnaf_jax.attacks.records import read_records
from fnaf_jax.errors import ConfigError
from fnaf_jax.study.build import build_pipeline, reproduce
from fnaf_jax.study.presets import PRESET_DIR, load_preset


def _write(tmp_path, raw) -> str:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_defenses_preset_trains_every_defense_budget_matched():
    preset = load_preset("defenses")
    assert preset.models() == ["unet", "cleanft", "robust", "robust_wk", "robust_pgd", "jitter", "kspace_adv"]
    assert preset.fine_tunes() == preset.models()[1:]
    epochs = {m: preset.train[m]["epochs"] for m in preset.fine_tunes()}
    assert set(epochs.values()) == {preset.train["robust"]["epochs"]}  # budget-matched
    assert [preset.train[m]["robust"] for m in ("robust_pgd", "jitter", "kspace_adv")] == ["pgd", "jitter", "kspace-adv"]
    assert preset.attack.methods == ("rs", "fd", "pgd", "kspace-pgd", "hallucinate")
    names = [s.name for s in build_pipeline(preset, "/nonexistent/study").stages]
    assert "train_irim" not in names and "transfer" not in names
    assert names.index("train_unet") < names.index("train_kspace_adv") < names.index("attack_kspace_adv")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["defenses"].update(x={"robust": "magic"}), "defenses.x: robust must be one of"),
    (lambda r: r["defenses"].update(robust={"robust": "pgd"}), "defenses.robust: the name is taken"),
    (lambda r: r["defenses"].update(x={"robust": "pgd", "chanz": 3}), "defenses.x: unknown key 'chanz'"),
    (lambda r: r["attack"].update(methods=["rs", "pgdd"]), "methods must be a non-empty list.*'pgdd'"),
    (lambda r: r["attack"].update(methods=[]), "methods must be a non-empty list"),
    (lambda r: r["irim"].update(source="nowhere"), "irim.source must be"),
])
def test_bad_defense_sections_are_refused(tmp_path, edit, message):
    raw = json.loads((PRESET_DIR / "defenses.json").read_text())
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        load_preset(_write(tmp_path, raw))


def _mean_difference(ref, own, field):
    by_key = {(r["file"], r["slice"]): r for r in own}
    diffs = [a[field] - by_key[(a["file"], a["slice"])][field] for a in ref
             if (a["file"], a["slice"]) in by_key and a["accepted"] and by_key[(a["file"], a["slice"])]["accepted"]]
    return float(np.mean(diffs))


@pytest.mark.xdist_group("defenses_study")
def test_tiny_defenses_study_tables_follow_the_records(tmp_path):
    raw = json.loads((PRESET_DIR / "mini.json").read_text())
    raw["defenses"] = {"jitter": {"robust": "jitter", "jitter": 0.05}}
    raw["irim"] = {"source": "none"}
    raw["attack"].update(methods=["rs", "hallucinate"], eps=[0.01], kspace_steps=1)
    preset = load_preset(_write(tmp_path, raw))
    out = tmp_path / "study"
    result = reproduce(preset, out, log=lambda _: None)
    assert "train_irim" not in result["status"] and result["status"]["train_jitter"] == "ran"

    results = json.loads((out / "tables" / "results.json").read_text())
    pair = results["defenses"]["4"]["jitter"]
    ref, own = (read_records(out / "attacks" / f"{m}_4x_rs.jsonl") for m in ("cleanft", "jitter"))
    assert math.isclose(pair["rs"]["lost_fraction_difference"]["mean"],
                        _mean_difference(ref, own, "lost_fraction"), rel_tol=1e-9, abs_tol=1e-12)
    ref, own = (read_records(out / "attacks" / f"{m}_4x_hallucinate.jsonl") for m in ("cleanft", "jitter"))
    shown = np.mean([a["shown"][0] - b["shown"][0] for a, b in zip(ref, own, strict=True)])
    (row,) = pair["hallucinate"]
    assert row["eps"] == 0.01 and math.isclose(row["shown_difference"]["mean"], shown, abs_tol=1e-12)
    hits = 100 * np.mean([float(a["hit"][0]) - float(b["hit"][0]) for a, b in zip(ref, own, strict=True)])
    assert math.isclose(row["rate_difference"]["mean"], hits, abs_tol=1e-9)
    assert set(results["defense_ssim"]["4"]) == {"unet", "robust", "jitter"}

    report = (out / "report.md").read_text()
    section = report.split("## Defenses compared on one instrument", 1)[1].split("\n## ", 1)[0]
    jitter_rows = [line for line in section.splitlines() if line.startswith("| jittered U-Net |")]
    assert len(jitter_rows) == 3  # clean cost, RS, hallucination at eps 0.01
    assert all(line.rstrip(" |").endswith(("holds", "does not hold", "inconclusive")) for line in jitter_rows[1:])
    assert (out / "figures" / "4x" / "defenses.png").stat().st_size > 1000
