"""Gather the measured numbers of a study from its stages' output files.

- Table 1 from ``metrics/MODEL_ACCx/metrics.json`` (``fnaf evaluate --out``), with the
  per-volume SSIM kept for paired differences;
- Tables 2 and 3 from the attack JSONL files (``fnaf_jax.tabulation.summarize_records``,
  the same tabulation as ``fnaf report``);
- k-space curves (``tabulation.summarize_kspace``) of the k-space methods;
- paired comparisons (``tabulation.paired``) of the models the findings compare, on the
  same slices and, with one seed, the same candidate features, and of every defense
  against the budget-matched clean fine-tune for every method (``defense_pairs``);
- transfer rates with P(target hit | source hit) (``tabulation.transfer_summary``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fnaf_jax.errors import DataError
from fnaf_jax.study.stages import BASELINE
from fnaf_jax.tabulation import (
    KSPACE_METHODS,
    mean_ci,
    paired,
    paired_kspace,
    summarize_kspace,
    summarize_records,
    transfer_summary,
)

#: model pairs the findings compare (first - second)
PAIRS = (("unet", "robust"), ("cleanft", "robust"), ("unet", "cleanft"), ("robust", "robust_wk"),
         ("unet", "irim"))
#: per-volume SSIM differences (first - second)
SSIM_PAIRS = (("unet", "robust"), ("cleanft", "robust"), ("irim", "unet"))


def _records(path) -> list[dict]:
    from fnaf_jax.attacks.runner import read_records

    records = read_records(path)
    if not records:
        raise DataError(f"{path}: no attack records")
    return records


def table1(metrics_json) -> dict:
    path = Path(metrics_json)
    try:
        payload = json.loads(path.read_text())
        groups = payload["groups"]["all"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read fnaf evaluate's metrics ({exc})") from None
    per_volume = {v["fname"]: v.get("ssim") for v in payload.get("volumes", []) if "fname" in v}
    return {"ssim": groups["ssim"]["mean"], "nmse": groups["nmse"]["mean"],
            "psnr": groups["psnr"]["mean"], "volumes": groups["ssim"]["n"], "per_volume_ssim": per_volume}


def ssim_difference(first: dict, second: dict) -> dict | None:
    """Mean per-volume SSIM(first) - SSIM(second) with a bootstrap interval over volumes."""
    a, b = first.get("per_volume_ssim") or {}, second.get("per_volume_ssim") or {}
    names = sorted(n for n in a if n in b and a[n] is not None and b[n] is not None)
    if not names:
        return None
    return mean_ci(np.array([a[n] - b[n] for n in names]), names)


def defense_pairs(records: dict, acc: int, models, methods, reference: str = "cleanft") -> dict:
    """{model: {method: reference - model}} for every fine-tune beside the budget-matched
    clean fine-tune, paired on the same slices (``paired`` for the FNAF methods, one row per
    eps of ``paired_kspace`` for the k-space ones); empty without the reference."""
    out: dict = {}
    for model in models:
        if model in (reference, BASELINE):  # the baseline is a control, not a defense
            continue
        for method in methods:
            ref, own = records.get((reference, acc, method)), records.get((model, acc, method))
            if ref and own:
                pair = paired_kspace if method in KSPACE_METHODS else paired
                out.setdefault(model, {})[method] = pair(ref, own)
    return out


def gather(layout, accs, models, methods) -> dict:
    """The ``results`` dict of ``fnaf_jax.study.paper``."""
    results: dict = {"table1": {}, "table2": {}, "kspace": {}, "transfer": {}, "paired": {},
                     "ssim_difference": {}, "defenses": {}, "defense_ssim": {}}
    records: dict = {}
    for model in models:
        for acc in accs:
            metrics = layout.metrics(model, acc) / "metrics.json"
            if metrics.is_file():
                results["table1"].setdefault(model, {})[acc] = table1(metrics)
            for method in methods:
                path = layout.attack(model, acc, method)
                if path.is_file():
                    records[(model, acc, method)] = recs = _records(path)
                    table, summarize = (("kspace", summarize_kspace) if method in KSPACE_METHODS
                                        else ("table2", summarize_records))
                    results[table].setdefault(model, {}).setdefault(acc, {})[method] = summarize(recs)
    for acc in accs:
        pairs = results["paired"].setdefault(acc, {})
        for first, second in PAIRS:
            if (first, acc, "rs") in records and (second, acc, "rs") in records:
                pairs[f"{first}-{second}"] = paired(records[(first, acc, "rs")], records[(second, acc, "rs")])
        for model in models:
            if (model, acc, "rs") in records and (model, acc, "fd") in records:
                pairs[f"rs-fd:{model}"] = paired(records[(model, acc, "rs")], records[(model, acc, "fd")])
        diffs = results["ssim_difference"].setdefault(acc, {})
        for first, second in SSIM_PAIRS:
            t1a = results["table1"].get(first, {}).get(acc)
            t1b = results["table1"].get(second, {}).get(acc)
            if t1a and t1b and (d := ssim_difference(t1a, t1b)):
                diffs[f"{first}-{second}"] = d
        results["defenses"][acc] = defense_pairs(records, acc, models, methods)
        reference = results["table1"].get("cleanft", {}).get(acc)
        if reference:  # each model's per-volume SSIM minus the clean fine-tune's
            results["defense_ssim"][acc] = {
                m: d for m in models if m != "cleanft" and (t1 := results["table1"].get(m, {}).get(acc))
                and (d := ssim_difference(t1, reference))}
        path = layout.transfer(acc)
        if path.is_file():
            results["transfer"][acc] = transfer_summary(_records(path), records.get(("unet", acc, "rs")),
                                                        records.get(("irim", acc, "rs")))
    return results
