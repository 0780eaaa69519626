"""Tables (Markdown, CSV, JSON) and figures from ``fnaf attack`` result files.

Table 2: attack rate % (hits / accepted slices) and mean worst loss (accepted slices),
RS and FD, per model and acceleration, with the paper's numbers beside them.
Table 3: acceptance % (candidates with IP >= threshold / candidates scored) and mean IP of
the chosen features. Transfer runs (records with ``transfer_from``) get their own table.
Figures (``fnaf_jax.figures``): 1 (a failed and a successful attack, re-run through the
model: needs a checkpoint and the data), 2 (IP vs FNAF loss), 3 (worst-feature locations).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from fnaf_jax.attacks.evaluate import read_records
from fnaf_jax.errors import DataError

# The paper's numbers live with the study code; imported, not copied.
from fnaf_jax.study.paper import MODEL_NAMES, PUBLISHED

_REQUIRED = ("file", "slice", "method", "acceleration", "worst_loss", "hit", "ip", "accepted")


def load_results(paths) -> list[dict]:
    """All records of the given JSONL files, checked; each keeps its ``source`` file."""
    records = []
    for path in paths:
        recs = read_records(path)
        for n, r in enumerate(recs, start=1):
            missing = [k for k in _REQUIRED if k not in r]
            if missing:
                raise DataError(f"{path}: record {n} lacks {missing}")
            records.append({**r, "source": str(path)})
    if not records:
        raise DataError(f"no attack records in {', '.join(map(str, paths))}")
    return records


def paper_model(name: str) -> str | None:
    """The paper's model key ("unet", "robust", "irim") a model name refers to, if any."""
    low = (name or "").lower()
    if "robust" in low:
        return "robust"
    if "irim" in low or "i-rim" in low:
        return "irim"
    if "unet" in low or "u-net" in low:
        return "unet"
    return None


def summarize_records(records: list[dict]) -> dict:
    """Counts, attack rate %, mean worst loss, acceptance % and mean IP of one group."""
    if not records:
        raise DataError("no attack records to summarize")
    accepted = np.array([bool(r["accepted"]) for r in records])
    hits = np.array([bool(r["hit"]) for r in records])
    worst = np.array([float(r["worst_loss"]) for r in records])
    ips = np.array([float(r["ip"]) for r in records])
    n_acc = int(accepted.sum())
    scored = sum(int(r.get("num_scored", 1)) for r in records)
    ok = sum(int(r.get("num_accepted", int(bool(r["accepted"])))) for r in records)
    nan = float("nan")
    return {
        "slices": len(records),
        "accepted": n_acc,
        "hits": int(hits.sum()),
        "attack_rate": float(100.0 * hits.sum() / n_acc) if n_acc else nan,
        "mean_worst_loss": float(worst[accepted].mean()) if n_acc else nan,
        "acceptance": float(100.0 * ok / scored) if scored else nan,
        "slice_acceptance": float(100.0 * n_acc / len(records)),
        "mean_ip": float(ips[accepted].mean()) if n_acc else nan,
    }


def tabulate(records: list[dict]) -> dict:
    """``{"attacks": [row...], "transfer": [row...]}``: one row per (model, acceleration,
    method) with its summary and the paper's numbers where they apply."""
    groups: dict = {}
    for r in records:
        kind = "transfer" if r.get("transfer_from") else "attacks"
        key = (kind, r.get("model", ""), int(r["acceleration"]), r["method"], r.get("source_model", ""))
        groups.setdefault(key, []).append(r)
    out = {"attacks": [], "transfer": []}
    for (kind, model, acc, method, source), recs in sorted(groups.items()):
        row = {"model": model, "acceleration": acc, "method": method, **summarize_records(recs)}
        pm = paper_model(model)
        if kind == "transfer":
            row["source_model"] = source
            if paper_model(source) == "unet" and pm == "irim" and acc == 4:
                row["paper_attack_rate"] = PUBLISHED["transfer_unet_to_irim"]
        else:
            paper = PUBLISHED["table2"].get((pm, acc), {})
            row["paper_attack_rate"] = paper.get(method)
            row["paper_mean_worst_loss"] = paper.get(f"loss_{method}")
            row["paper_acceptance_range"] = list(PUBLISHED["table3"]["acceptance_range"])
            row["paper_mean_ip"] = PUBLISHED["table3"]["mean_ip"]
        out[kind].append(row)
    return out


def _f(value, fmt):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _name(model: str) -> str:
    pm = paper_model(model)
    return f"{model} ({MODEL_NAMES[pm]})" if pm and MODEL_NAMES.get(pm) != model else model


def table2_markdown(rows: list[dict]) -> str:
    header = ("| model | acceleration | method | attack rate % | paper % | mean worst loss | paper loss "
              "| hits / accepted | slices |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {_name(r['model'])} | {r['acceleration']}x | {r['method'].upper()} | "
            f"{_f(r['attack_rate'], '{:.2f}')} | {_f(r.get('paper_attack_rate'), '{:.2f}')} | "
            f"{_f(r['mean_worst_loss'], '{:.3g}')} | {_f(r.get('paper_mean_worst_loss'), '{:.3g}')} | "
            f"{r['hits']} / {r['accepted']} | {r['slices']} |")
    return "\n".join(lines) + "\n"


def table3_markdown(rows: list[dict]) -> str:
    lo, hi = PUBLISHED["table3"]["acceptance_range"]
    lines = ["| model | acceleration | method | acceptance % (candidates) | accepted slices % | mean IP |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_name(r['model'])} | {r['acceleration']}x | {r['method'].upper()} | "
                     f"{_f(r['acceptance'], '{:.2f}')} | {_f(r['slice_acceptance'], '{:.2f}')} | "
                     f"{_f(r['mean_ip'], '{:.3g}')} |")
    lines.append(f"\nPaper (Table 3): acceptance {lo}-{hi} %, mean IP about {PUBLISHED['table3']['mean_ip']:.0e}.")
    return "\n".join(lines) + "\n"


def transfer_markdown(rows: list[dict]) -> str:
    lines = ["| source model | target model | acceleration | method | attack rate % | paper % | slices |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source_model']} | {r['model']} | {r['acceleration']}x | {r['method'].upper()} | "
                     f"{_f(r['attack_rate'], '{:.2f}')} | {_f(r.get('paper_attack_rate'), '{:.2f}')} | "
                     f"{r['slices']} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})


def write_report(paths, out_dir, checkpoint=None, data=None, figure_model: str | None = None) -> Path:
    """Write ``report.md``, ``table2.csv``, ``table3.csv``, (``transfer.csv``),
    ``summary.json`` and PNG figures into ``out_dir``; returns the Markdown path."""
    from fnaf_jax import figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = load_results(paths)
    tables = tabulate(records)
    attacks, transfer = tables["attacks"], tables["transfer"]
    if attacks:
        _write_csv(out / "table2.csv", [{k: r[k] for k in ("model", "acceleration", "method", "attack_rate",
                                                          "paper_attack_rate", "mean_worst_loss",
                                                          "paper_mean_worst_loss", "hits", "accepted",
                                                          "slices")} for r in attacks])
        _write_csv(out / "table3.csv", [{k: r[k] for k in ("model", "acceleration", "method", "acceptance",
                                                          "slice_acceptance", "mean_ip", "paper_mean_ip")}
                                        for r in attacks])
    if transfer:
        _write_csv(out / "transfer.csv", transfer)

    notes = []
    made = {}
    made["figure2"] = figures.ip_vs_loss(records, out / "figure2_ip_vs_loss.png")
    made["figure3"] = figures.location_heatmaps(records, out / "figure3_locations.png")
    if checkpoint is not None and data is not None:
        made["figure1"] = figures.attack_examples(records, checkpoint, data, out / "figure1_examples.png",
                                                  model_name=figure_model)
        if made["figure1"] is None:
            notes.append("Figure 1 skipped: the results hold no accepted hit and no accepted miss for this model.")
    else:
        notes.append("Figure 1 skipped: it re-runs the model, so it needs `--checkpoint` and `--data`.")

    summary = {"inputs": [str(p) for p in paths], "tables": tables,
               "figures": {k: v["file"] for k, v in made.items() if v},
               "figure_stats": {k: {kk: vv for kk, vv in v.items() if kk != "file"} for k, v in made.items() if v},
               "notes": notes}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True))

    inputs = f"Results: {', '.join(Path(p).name for p in paths)} ({len(records)} attacked slices)."
    intro = ("Attack rate = hits / accepted slices; a hit is an accepted slice whose worst FNAF loss "
             "exceeds gamma (1e-3 by default). Paper numbers: Cheng, Caliva et al., MIDL 2020, fastMRI "
             "knee single-coil validation set.")
    md = ["# FNAF attack report", "", inputs, "", intro, ""]
    if attacks:
        md += ["## Table 2: attack rate and mean worst loss", "", table2_markdown(attacks),
               "## Table 3: information preservation", "", table3_markdown(attacks)]
    if transfer:
        md += ["## Transfer (worst features of one model scored on another)", "", transfer_markdown(transfer)]
    md += ["## Figures", ""]
    if made.get("figure1"):
        f1 = made["figure1"]
        caption = (f"Figure 1: a successful attack (top, {f1['hit_caption']}) and a failed one (bottom, "
                   f"{f1['miss_caption']}). Zero-filled input, ground truth with the feature, reconstruction "
                   "and error (z-scored), zoomed on the feature; the FNAF loss region is outlined.")
        md += [f"![Figure 1]({f1['file']})", "", caption, ""]
    if made.get("figure2"):
        caption = ("Figure 2: information preservation vs worst FNAF loss, one point per slice; "
                   f"Pearson r = {_f(made['figure2']['pearson_r'], '{:.3f}')}.")
        md += [f"![Figure 2]({made['figure2']['file']})", "", caption, ""]
    if made.get("figure3"):
        md += [f"![Figure 3]({made['figure3']['file']})", "",
               "Figure 3: where the worst features lie in the central box (feature pixels of hits), per model.", ""]
    md += [f"- {n}" for n in notes]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
