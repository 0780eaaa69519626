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
import dataclasses
import json
import math
from pathlib import Path

from fnaf_jax.attacks.runner import read_records
from fnaf_jax.errors import DataError
from fnaf_jax.fileio import atomic_path, write_text
from fnaf_jax.published import MODEL_NAMES, PUBLISHED
from fnaf_jax.tabulation import (
    fmt_mean,
    fmt_rate,
    is_kspace,
    summarize_kspace,
    summarize_records,
    transfer_summary,
)

_REQUIRED = ("file", "slice", "method", "acceleration", "worst_loss", "hit", "ip", "accepted")
_REQUIRED_KSPACE = ("file", "slice", "method", "acceleration", "eps", "nmse", "clean")


def load_results(paths) -> list[dict]:
    """All records of the given JSONL files, checked; each keeps its ``source`` file."""
    records = []
    for path in paths:
        recs = read_records(path)
        for n, r in enumerate(recs, start=1):
            missing = [k for k in (_REQUIRED_KSPACE if is_kspace(r) else _REQUIRED) if k not in r]
            if missing:
                raise DataError(f"{path}: record {n} lacks {missing}")
            records.append({**r, "source": str(path)})
    if not records:
        raise DataError(f"no attack records in {', '.join(map(str, paths))}")
    return records


def tabulate(records: list[dict]) -> dict:
    """``{"attacks": [row...], "transfer": [row...]}``: one row per (model, acceleration,
    method) with its summary (``fnaf_jax.tabulation``) and, for records whose ``role``
    is one of the paper's models (set by ``fnaf attack --role``), the paper's numbers."""
    groups: dict = {}
    for r in records:
        kind = "transfer" if r.get("transfer_from") else "attacks"
        key = (kind, r.get("model", ""), r.get("role") or "", int(r["acceleration"]), r["method"],
               r.get("source_model", ""), r.get("source_role") or "")
        groups.setdefault(key, []).append(r)
    out = {"attacks": [], "transfer": []}
    for (kind, model, role, acc, method, source, source_role), recs in sorted(groups.items()):
        row = {"model": model, "role": role or None, "acceleration": acc, "method": method}
        if kind == "transfer":
            # the source's and the target's own runs, when they are among the inputs
            def own(name, run_method, _acc=acc):
                return next((v for k, v in groups.items() if k[0] == "attacks" and k[1] == name
                             and k[3] == _acc and k[4] == run_method), None)

            row.update(source_model=source, source_role=source_role or None,
                       **transfer_summary(recs, own(source, method), own(model, "rs")))
            if source_role == "unet" and role == "irim" and acc == 4:
                row["paper_attack_rate"] = PUBLISHED["transfer_unet_to_irim"]
        else:
            row = attack_row(model, role or None, acc, method, summarize_records(recs))
        out[kind].append(row)
    return out


def tabulate_kspace(records: list[dict]) -> dict:
    """``{"MODEL ACCx METHOD (target)": [per-eps rows]}`` of the k-space records."""
    groups: dict = {}
    for r in records:
        label = f"{r.get('model', '')} {int(r['acceleration'])}x {r['method']} ({r.get('target', '')})"
        groups.setdefault(label, []).append(r)
    return {label: summarize_kspace(recs) for label, recs in sorted(groups.items())}


def kspace_markdown(curves: dict) -> str:
    """One table per k-space run: eps, NMSE, Eq. 5 loss, lost or shown fraction, hits."""
    out = []
    for label, rows in curves.items():
        other = "lost" if "lost" in rows[0] else "shown"
        hits = "hit_rate" in rows[0]
        out += [f"**{label}** ({rows[0]['nmse']['n']} slices, {rows[0]['nmse']['volumes']} volumes)", "",
                f"| eps | NMSE [95% CI] | Eq. 5 loss [95% CI] | {other} fraction [95% CI] |"
                + (" hit rate [95% CI] (hits / slices) |" if hits else ""),
                "|---|---|---|---|" + ("---|" if hits else "")]
        for r in rows:
            out.append(f"| {r['eps']:g} | {fmt_mean(r['nmse'])} | {fmt_mean(r['loss'])} | "
                       f"{fmt_mean(r[other], '{:.2f}')} |" + (f" {fmt_rate(r['hit_rate'])} |" if hits else ""))
        out.append("")
    return "\n".join(out)


KSPACE_NOTE = (
    "Additive perturbations e of the sampled k-space with ||e|| <= eps ||y_k|| (projected gradient "
    "ascent, the best of its iterates). kspace-pgd maximises the output's NMSE (target image) or a "
    "feature's Eq. 5 loss (target feature; its hit: loss > gamma). hallucinate adds no feature and "
    "pushes the output to show one: shown fraction 1 - ||T((o_e - o_0) - d)||^2 / ||T d||^2, a hit "
    "when it reaches the threshold (0.5). eps = 0 is the unperturbed model. Means carry 95% "
    "volume-bootstrap intervals, rates Wilson intervals with their denominators.")


def attack_row(model: str, role: str | None, acc: int, method: str, summary: dict) -> dict:
    """One Table 2/3 row: the run's summary and, for a paper role, the paper's numbers."""
    paper = PUBLISHED["table2"].get((role, acc), {})
    return {"model": model, "role": role, "acceleration": acc, "method": method, **summary,
            "paper_attack_rate": paper.get(method), "paper_mean_worst_loss": paper.get(f"loss_{method}"),
            "paper_acceptance_range": list(PUBLISHED["table3"]["acceptance_range"]),
            "paper_mean_ip": PUBLISHED["table3"]["mean_ip"]}


def _f(value, fmt):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _name(row: dict) -> str:
    role = row.get("role")
    pretty = MODEL_NAMES.get(role) if role else None
    return f"{row['model']} ({pretty})" if pretty and pretty != row["model"] else row["model"]


def _table(rows: list[dict], columns) -> str:
    """A Markdown table: model, acceleration and method, then ``columns`` of
    ``(header, row -> cell text)``."""
    lead = (("model", _name), ("acceleration", lambda r: f"{r['acceleration']}x"),
            ("method", lambda r: r["method"].upper()))
    cols = [*lead, *columns]
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r) for _, cell in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table2_markdown(rows: list[dict]) -> str:
    return _table(rows, [
        ("attack rate [95% CI] (hits / accepted)", lambda r: fmt_rate(r["attack_rate"])),
        ("paper %", lambda r: _f(r.get("paper_attack_rate"), "{:.2f}")),
        ("mean worst loss [95% CI]", lambda r: fmt_mean(r["mean_worst_loss"])),
        ("paper loss", lambda r: _f(r.get("paper_mean_worst_loss"), "{:.3g}")),
        ("feature-lost fraction [95% CI]", lambda r: fmt_mean(r["lost_fraction"], "{:.2f}"))])


CONTROLS_NOTE = (
    "Same slices, masks and candidate features as the attack. *Oracle eraser*: the rate a model "
    "that erases every feature (output = clean image) would get; a model can be told from a "
    "perfect one only where this is high. *No-feature control*: the worst region loss with no "
    "feature at the scored locations (background reconstruction error alone). *Random feature*: "
    "the first accepted candidate, not the worst. Feature-lost fraction: 0 kept, 1 erased.")


def controls_markdown(rows: list[dict]) -> str:
    """The rates that say what an attack rate means, beside it (same slices, masks, features)."""
    return _table(rows, [
        ("attack rate", lambda r: fmt_rate(r["attack_rate"])),
        ("oracle eraser", lambda r: fmt_rate(r.get("eraser_rate"))),
        ("no-feature control", lambda r: fmt_rate(r.get("nofeature_rate"))),
        ("random feature", lambda r: fmt_rate(r.get("random_rate"))),
        ("random feature lost fraction", lambda r: fmt_mean(r.get("random_lost_fraction"), "{:.2f}"))])


def table3_markdown(rows: list[dict]) -> str:
    lo, hi = PUBLISHED["table3"]["acceptance_range"]
    table = _table(rows, [
        ("acceptance, candidates [95% CI] (accepted / scored)", lambda r: fmt_rate(r["acceptance"], 2)),
        ("acceptance, chosen worst feature (paper's definition)",
         lambda r: fmt_rate(r.get("chosen_acceptance"), 2)),
        ("mean IP chosen", lambda r: _f(r["mean_ip"], "{:.3g}")),
        ("mean IP random", lambda r: _f(r.get("mean_ip_random"), "{:.3g}"))])
    return table + (f"\nPaper (Table 3): acceptance {lo}-{hi} % (Random column 99.82 %, IP 6.4e-4; "
                    "per-model columns: the chosen worst feature, picked without the filter), mean IP "
                    f"about {PUBLISHED['table3']['mean_ip']:.0e}.\n")


def transfer_markdown(rows: list[dict]) -> str:
    lines = [("| source model | target model | acceleration | method | transfer rate (hits / accepted) "
              "| P(target hit given source hit) | target's own rate, random features | paper % |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source_model']} | {r['model']} | {r['acceleration']}x | {r['method'].upper()} | "
                     f"{fmt_rate(r['attack_rate'])} | {fmt_rate(r.get('conditional_rate'))} | "
                     f"{fmt_rate(r.get('target_random_rate'))} | {_f(r.get('paper_attack_rate'), '{:.2f}')} |")
    return "\n".join(lines) + "\n"


TABLE2_COLUMNS = ("model", "role", "acceleration", "method", "slices", "volumes", "accepted", "hits",
                  "attack_rate", "paper_attack_rate", "mean_worst_loss", "paper_mean_worst_loss",
                  "lost_fraction", "eraser_rate", "nofeature_rate", "random_rate", "random_lost_fraction")
TABLE3_COLUMNS = ("model", "role", "acceleration", "method", "acceptance", "chosen_acceptance",
                  "slice_acceptance", "mean_ip", "mean_ip_random", "paper_mean_ip")


def _flat(row: dict) -> dict:
    """Rates and means as CSV columns: ``attack_rate`` (the value), ``attack_rate_lo`` ..."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            main = value.get("pct", value.get("mean"))
            out[key] = main
            out.update({f"{key}_{sub}": v for sub, v in value.items() if sub not in ("pct", "mean")})
        else:
            out[key] = value
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
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
    every = load_results(paths)
    records = [r for r in every if not is_kspace(r)]
    curves = tabulate_kspace([r for r in every if is_kspace(r)])
    tables = tabulate(records)
    tables["kspace"] = curves
    attacks, transfer = tables["attacks"], tables["transfer"]
    if attacks:
        _write_csv(out / "table2.csv", [_flat({k: r.get(k) for k in TABLE2_COLUMNS}) for r in attacks])
        _write_csv(out / "table3.csv", [_flat({k: r.get(k) for k in TABLE3_COLUMNS}) for r in attacks])
    if transfer:
        _write_csv(out / "transfer.csv", [_flat(r) for r in transfer])

    notes = []
    made = {}
    made["kspace"] = figures.kspace_curves(curves, out / "kspace_curves.png")
    made["figure2"] = figures.ip_vs_loss(records, out / "figure2_ip_vs_loss.png")
    underlay = figures.mean_clean_image(records, data) if data is not None else None
    made["figure3"] = figures.location_heatmaps(records, out / "figure3_locations.png", underlay=underlay)
    if checkpoint is not None and data is not None and records:
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
    write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=True))

    inputs = f"Results: {', '.join(Path(p).name for p in paths)} ({len(every)} attacked slices)."
    intro = ("Attack rate = hits / accepted slices; a hit is an accepted slice whose worst FNAF loss "
             "exceeds gamma (1e-3 by default). Rates carry Wilson 95% intervals and their denominators; "
             "means a 95% bootstrap interval over volumes. Paper numbers: Cheng, Caliva et al., MIDL 2020, "
             "fastMRI knee single-coil validation set, shown for rows whose model has a paper role.")
    md = ["# FNAF attack report", "", inputs, "", intro, ""]
    if attacks:
        md += ["## Table 2: attack rate and mean worst loss", "", table2_markdown(attacks),
               "## Controls: what the attack rate is measured against", "",
               CONTROLS_NOTE, "", controls_markdown(attacks),
               "## Table 3: information preservation", "", table3_markdown(attacks)]
    if curves:
        md += ["## k-space attacks: worst cases and hallucinations against eps", "", KSPACE_NOTE, "",
               kspace_markdown(curves)]
        if made.get("kspace"):
            md += [f"![k-space curves]({made['kspace']['file']})", ""]
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
               ("Figure 3: where each accepted slice's worst feature lies in the central box (centroid; "
                "dot = hit, cross = miss), coloured by its loss on one shared scale"
                + (", over the mean clean image of the attacked slices." if underlay is not None else "."))
               , ""]
    md += [f"- {n}" for n in notes]
    path = out / "report.md"
    write_text(path, "\n".join(md) + "\n")
    return path


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """One ``fnaf report``: attack result files -> tables and figures."""

    results: tuple[str, ...]  # attack results (JSON lines)
    out: str  # report folder
    checkpoint: str | None = None  # model checkpoint for Figure 1's re-run
    data: str | None = None  # the data folder the attacks ran on (Figure 1)
    model_name: str | None = None  # records drawn in Figure 1 (default: the checkpoint's name)


def make_report(cfg: ReportConfig) -> Path:
    """``fnaf report``: write the report of ``cfg``; returns its Markdown path."""
    return write_report(cfg.results, cfg.out, checkpoint=cfg.checkpoint, data=cfg.data,
                        figure_model=cfg.model_name)
