"""Gather the measured numbers of a study from its stages' output files.

- Table 1 from ``metrics/MODEL_ACCx/metrics.json`` (``fnaf evaluate --out``);
- Tables 2 and 3 and the transfer rates from the attack JSONL files (one line per
  attacked slice), tabulated by ``fnaf_jax.report`` when it offers ``summarize_records``,
  else by ``attack_summary`` below (SPEC 3: attack rate = hits / accepted samples).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fnaf_jax.errors import DataError


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: attack results not found")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not a JSON line ({exc})") from None
    return records


def _field(record: dict, *names, path="", default=None):
    for name in names:
        if name in record:
            return record[name]
    if default is not None:
        return default
    raise DataError(f"{path}: attack record lacks {names[0]!r} (keys: {sorted(record)})")


def attack_summary(records: list[dict], path="") -> dict:
    """attack rate % (hits / accepted slices), mean worst loss over accepted slices,
    acceptance % (accepted candidates / scored candidates when recorded, else accepted
    slices / slices), mean IP of the chosen features."""
    if not records:
        raise DataError(f"{path}: no attack records")
    accepted = np.array([bool(_field(r, "accepted", path=path)) for r in records])
    hits = np.array([bool(_field(r, "hit", path=path)) for r in records])
    worst = np.array([float(_field(r, "worst_loss", "loss", path=path)) for r in records])
    ips = np.array([float(_field(r, "ip", "IP", path=path)) for r in records])
    n_acc = int(accepted.sum())
    scored = [r.get("num_scored") for r in records]
    n_ok = [r.get("num_accepted") for r in records]
    if all(v is not None for v in scored + n_ok) and sum(scored) > 0:
        acceptance = 100.0 * sum(n_ok) / sum(scored)
    else:
        acceptance = 100.0 * n_acc / len(records)
    return {
        "slices": len(records),
        "accepted": n_acc,
        "hits": int(hits.sum()),
        "attack_rate": float(100.0 * hits.sum() / n_acc) if n_acc else float("nan"),
        "mean_worst_loss": float(worst[accepted].mean()) if n_acc else float("nan"),
        "acceptance": acceptance,
        "mean_ip": float(ips[accepted].mean()) if n_acc else float("nan"),
    }


def summarize_file(path) -> dict:
    records = read_jsonl(path)
    try:  # prefer the report module's tabulation, so tables agree with `fnaf report`
        from fnaf_jax.report import summarize_records  # type: ignore[attr-defined]
    except ImportError:
        return attack_summary(records, path)
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
