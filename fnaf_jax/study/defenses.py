"""The defenses table of a study: every fine-tune beside the budget-matched clean fine-tune
(``cleanft``: the same epochs, learning rate, batch and data without any extra term), its
clean cost (SSIM, NMSE, training time) and, for every attack method, its rate and
feature-lost (hallucinations: shown) fraction with the paired difference "clean fine-tune
minus model" on the same slices and features.

A verdict per cell: "holds" (the model keeps features better, or hallucinates less, than
the clean fine-tune: the interval of the fraction difference lies above 0), "does not hold"
(below 0: worse), "inconclusive" (the interval spans 0).
"""

from __future__ import annotations

import math

from fnaf_jax import stats
from fnaf_jax.published import MODEL_NAMES
from fnaf_jax.tabulation import KSPACE_METHODS, fmt_mean, fmt_rate

REFERENCE = "cleanft"


def mode_of(model: str, train: dict) -> str:
    """The defense a study model stands for: its ``fnaf train --robust`` mode."""
    from fnaf_jax.train.config import TrainConfig

    mode = TrainConfig(**train[model], data="-").robust
    if mode:
        return mode
    return {"unet": "none (no fine-tune)", REFERENCE: "none (clean fine-tune: the reference)"}.get(model, "none")


def _cell_verdict(diff: dict | None) -> str:
    if not diff or not diff.get("n"):
        return stats.INCONCLUSIVE
    return stats.verdict(diff.get("lo"), diff.get("hi"), 0.0)


def rows(results: dict, acc: int, methods, budgets: dict[str, float]) -> list[dict]:
    """One row per (model, method[, eps]) at ``acc``: the model's own rate and fraction and
    the paired difference against the reference (``results["defenses"]``)."""
    pairs = results.get("defenses", {}).get(acc, {})
    out = []
    # the trained models only: the zero-filled baseline is a control, not a defense
    for model in [m for m in results.get("table1", {}) if acc in results["table1"][m]]:
        for method in methods:
            pair = pairs.get(model, {}).get(method)
            if method in KSPACE_METHODS:
                curve = results.get("kspace", {}).get(model, {}).get(acc, {}).get(method)
                if not curve:
                    continue
                for j, point in enumerate(curve[1:]):
                    diff = pair[j] if pair else None
                    other = "shown" if method == "hallucinate" else "lost"
                    out.append({"model": model, "method": method, "eps": point["eps"], "budget": budgets.get(method),
                                "rate": point.get("hit_rate"), "fraction_name": other, "fraction": point[other],
                                "rate_difference": diff and diff.get("rate_difference"),
                                "mcnemar_p": diff and diff.get("mcnemar_p"),
                                "fraction_difference": diff and diff[f"{other}_difference"]})
                continue
            summary = results.get("table2", {}).get(model, {}).get(acc, {}).get(method)
            if not summary:
                continue
            out.append({"model": model, "method": method, "eps": None, "budget": budgets.get(method),
                        "rate": summary["attack_rate"], "fraction_name": "lost", "fraction": summary["lost_fraction"],
                        "rate_difference": pair and pair["rate_difference"], "mcnemar_p": pair and pair["mcnemar_p"],
                        "fraction_difference": pair and pair["lost_fraction_difference"]})
    for row in out:
        row["verdict"] = _cell_verdict(row["fraction_difference"]) if row["model"] != REFERENCE else "-"
    return out


def clean_rows(results: dict, acc: int, train: dict, timings: dict[str, float]) -> list[dict]:
    """Clean cost per model: SSIM, NMSE, training seconds, SSIM - reference per volume."""
    out = []
    for model, per_acc in results.get("table1", {}).items():
        t1 = per_acc.get(acc)
        if not t1:
            continue
        out.append({"model": model, "mode": mode_of(model, train), "ssim": t1["ssim"], "nmse": t1["nmse"],
                    "volumes": t1["volumes"], "train_seconds": timings.get(f"train_{model}"),
                    "ssim_difference": results.get("defense_ssim", {}).get(acc, {}).get(model)})
    return out


def _num(value, spec="{:.4f}") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else spec.format(value)


def markdown(results: dict, accs, methods, train: dict, timings: dict[str, float], budgets: dict[str, float]) -> str:
    """The defenses section of a study report (empty without the reference model)."""
    if REFERENCE not in results.get("table1", {}):
        return ""
    parts = ["## Defenses compared on one instrument\n",
             ("Every fine-tune starts from the trained U-Net and spends the same epochs on the same "
              "data as the clean fine-tune (the reference). Differences are *clean fine-tune minus "
              "model*, paired on the same slices and features, with 95% volume-bootstrap intervals "
              "(Newcombe's as well for rates, the wider kept): a positive fraction difference means "
              "the model keeps features better (hallucinations: shows fewer). Verdict: whether the "
              "defense helps against that attack (*holds*: the fraction difference's interval lies "
              "above 0; *does not hold*: below 0). Budgets are forward passes per slice, a backward "
              "pass counted as 1.77 forwards.\n")]
    for acc in accs:
        parts.append(f"### {acc}x: clean cost\n")
        lines = ["| model | defense | training (s) | SSIM | NMSE | volumes | SSIM - clean fine-tune [95% CI] |",
                 "|---|---|---|---|---|---|---|"]
        for r in clean_rows(results, acc, train, timings):
            lines.append(f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['mode']} | "
                         f"{_num(r['train_seconds'], '{:.0f}')} | {_num(r['ssim'])} | {_num(r['nmse'])} | "
                         f"{r['volumes']} | {fmt_mean(r['ssim_difference'], '{:+.4f}')} |")
        parts.append("\n".join(lines) + "\n")
        parts.append(f"### {acc}x: robustness against each attack\n")
        lines = [("| model | attack | budget | hit rate [95% CI] (k/n) | fraction [95% CI] | clean FT - model: "
                  "rate, points (McNemar p) | clean FT - model: fraction (Wilcoxon p) | defense helps? |"),
                 "|---|---|---|---|---|---|---|---|"]
        for r in rows(results, acc, methods, budgets):
            attack = r["method"] if r["eps"] is None else f"{r['method']} eps {r['eps']:g}"
            rd, fd = r["rate_difference"], r["fraction_difference"]
            rate_text = "-" if not rd else (f"{fmt_mean(rd, '{:+.1f}')}"
                                            + ("" if r["mcnemar_p"] is None else f" ({r['mcnemar_p']:.2g})"))
            frac_text = "-" if not fd else f"{fmt_mean(fd, '{:+.3f}')} ({fd['wilcoxon_p']:.2g})"
            lines.append(f"| {MODEL_NAMES.get(r['model'], r['model'])} | {attack} | {_num(r['budget'], '{:.1f}')} | "
                         f"{fmt_rate(r['rate'])} | {r['fraction_name']} {fmt_mean(r['fraction'], '{:.3f}')} | "
                         f"{rate_text} | {frac_text} | {r['verdict']} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def tradeoff_figure(results: dict, acc: int, methods, path) -> dict | None:
    """``figures.defense_tradeoff`` of every model at ``acc``: clean SSIM against each attack's
    fraction (one panel per attack and eps)."""
    from fnaf_jax.figures import defense_tradeoff

    panels: dict[str, list[dict]] = {}
    for r in rows(results, acc, methods, {}):
        t1 = results.get("table1", {}).get(r["model"], {}).get(acc)
        if not t1 or not r["fraction"].get("n"):
            continue
        title = r["method"] if r["eps"] is None else f"{r['method']} eps {r['eps']:g}"
        panels.setdefault(f"{acc}x {title}", []).append(
            {"label": MODEL_NAMES.get(r["model"], r["model"]), "ssim": t1["ssim"], "fraction": r["fraction"],
             "fraction_name": r["fraction_name"]})
    return defense_tradeoff(panels, path)
