"""The defenses study (preset ``defenses``): presets with extra fine-tunes (``defenses``),
attack ``methods`` and no i-RIM. The defenses table of a run is checked against its attack
records on the mini study (tests/test_reproduce.py), which trains one defense."""

from __future__ import annotations

import json

import pytest

from fnaf_jax.errors import ConfigError
from fnaf_jax.study.build import build_pipeline
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
