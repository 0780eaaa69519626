"""Gather the measured numbers of a study from its stages' output files.

- Table 1 from ``metrics/MODEL_ACCx/metrics.json`` (``fnaf evaluate --out``);
- Tables 2 and 3 and the transfer rates from the attack JSONL files (one line per
  attacked slice), tabulated by ``fnaf_jax.report.summarize_records`` (SPEC 3: attack
  rate = hits / accepted slices; acceptance = accepted candidates / scored candidates).
"""

from __future__ import annotations

import json
from pathlib import Path

from fnaf_jax.errors import DataError


def summarize_file(path) -> dict:
    """Table 2/3 numbers of one attack results file (``fnaf_jax.report``'s tabulation, so
    the study's tables agree with ``fnaf report``)."""
    from fnaf_jax.attacks.evaluate import read_records
    from fnaf_jax.report import summarize_records

    records = read_records(path)
    if not records:
        raise DataError(f"{path}: no attack records")
    return summarize_records(records)


def table1(metrics_json) -> dict:
    path = Path(metrics_json)
    try:
        groups = json.loads(path.read_text())["groups"]["all"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read fnaf evaluate's metrics ({exc})") from None
    return {"ssim": groups["ssim"]["mean"], "nmse": groups["nmse"]["mean"],
            "psnr": groups["psnr"]["mean"], "volumes": groups["ssim"]["n"]}


def gather(layout, accs, models, methods) -> dict:
    """The ``results`` dict of ``fnaf_jax.study.paper``."""
    results: dict = {"table1": {}, "table2": {}, "transfer": {}}
    for model in models:
        for acc in accs:
            metrics = layout.metrics(model, acc) / "metrics.json"
            if metrics.is_file():
                results["table1"].setdefault(model, {})[acc] = table1(metrics)
            for method in methods:
                path = layout.attack(model, acc, method)
                if path.is_file():
                    results["table2"].setdefault(model, {}).setdefault(acc, {})[method] = summarize_file(path)
    for acc in accs:
        path = layout.transfer(acc)
        if path.is_file():
            summary = summarize_file(path)
            summary["source_rate"] = results["table2"].get("unet", {}).get(acc, {}).get("rs", {}).get("attack_rate")
            summary["target_rate"] = results["table2"].get("irim", {}).get(acc, {}).get("rs", {}).get("attack_rate")
            results["transfer"][acc] = summary
    return results
