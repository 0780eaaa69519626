"""The paper's findings, decided by intervals (SPEC 8).

Measured results come as the ``results`` dict of ``fnaf_jax.study.results``:
``results["table1"][model][acc]`` -> {"ssim", "nmse", "psnr", "volumes"};
``results["table2"][model][acc][method]`` -> ``fnaf_jax.tabulation.summarize_records``;
``results["paired"][acc]["A-B"]`` -> ``tabulation.paired`` of model A vs B (RS records;
``"rs-fd:MODEL"`` pairs one model's two methods); ``results["ssim_difference"][acc]["A-B"]``
-> per-volume SSIM(A) - SSIM(B), mean with a volume bootstrap interval;
``results["transfer"][acc]`` -> ``tabulation.transfer_summary``.
Models: "unet", "cleanft" (budget-matched clean fine-tune), "robust", "robust_wk"
(worst-of-k variant), "irim", "zero-filled" (the under-sampled input as the output).

Every verdict is "holds", "does not hold" or "inconclusive" (``fnaf_jax.stats.verdict``):
a claim holds when its whole 95% interval clears the stated threshold.
"""

from __future__ import annotations

from fnaf_jax import stats
from fnaf_jax.published import MODEL_NAMES, PUBLISHED
from fnaf_jax.tabulation import fmt_mean, fmt_rate

# Thresholds that turn "well above", "small cost", "near 100 %", "high" into claims.
ROBUST_MIN_GAP = 10.0          # points: reference attack rate - robust attack rate (RS)
ROBUST_MAX_SSIM_COST = 0.02    # SSIM(reference) - SSIM(robust) (paper: 0.0016)
RS_FD_TOLERANCE = 2.0          # RS - FD attack rate above -2 points counts as "at least as strong"
MIN_ACCEPTANCE = 95.0          # % of random candidates passing IP
MIN_TRANSFER = 50.0            # % P(i-RIM hit | U-Net hit)
MIN_ERASER = 90.0              # % the oracle eraser must reach for hits to mean anything
MAX_NOFEATURE = 5.0            # % of slices where background error alone is a hit


def _get(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _combine(verdicts: list[str]) -> str:
    """All hold -> holds; any fails -> does not hold; else inconclusive."""
    if not verdicts:
        return stats.INCONCLUSIVE
    if stats.FAILS in verdicts:
        return stats.FAILS
    return stats.HOLDS if all(v == stats.HOLDS for v in verdicts) else stats.INCONCLUSIVE


def _interval(m) -> tuple[float | None, float | None]:
    return (None, None) if not m else (m.get("lo"), m.get("hi"))


def _name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def _finding(text, paper, verdicts, evidence, why=None) -> dict:
    return {"finding": text, "verdict": _combine(verdicts) if verdicts else stats.INCONCLUSIVE,
            "evidence": "; ".join(evidence) or "not measured", "paper": paper,
            "why": why or ("not measured" if not verdicts else None)}


def _accs(results) -> list[int]:
    return sorted({acc for model in results.get("table2", {}).values() for acc in model})


def instrument_checks(results: dict) -> list[dict]:
    """Can the instrument tell an eraser from a perfect model at each acceleration?"""
    out = []
    for acc in _accs(results):
        rs = _get(results, "table2", "unet", acc, "rs") or {}
        eraser, nofeature = rs.get("eraser_rate"), rs.get("nofeature_rate")
        zf = _get(results, "table2", "zero-filled", acc, "rs") or {}
        verdicts, evidence, why = [], [], []
        if eraser and eraser.get("n"):
            verdicts.append(stats.verdict(eraser["lo"], eraser["hi"], MIN_ERASER))
            evidence.append(f"oracle eraser {fmt_rate(eraser)}")
            if verdicts[-1] != stats.HOLDS:
                why.append(f"the oracle eraser's interval does not clear {MIN_ERASER:g}%")
        if nofeature and nofeature.get("n"):
            verdicts.append(stats.verdict(nofeature["lo"], nofeature["hi"], MAX_NOFEATURE, "below"))
            evidence.append(f"no-feature control on the U-Net {fmt_rate(nofeature)}")
            if verdicts[-1] != stats.HOLDS:
                why.append(f"background error alone is a hit on {nofeature['pct']:.1f}% of slices "
                           f"(interval up to {nofeature['hi']:.1f}%, threshold {MAX_NOFEATURE:g}%): "
                           "a hit there may be the model's background error, not a lost feature")
        if zf.get("attack_rate"):
            evidence.append(f"zero-filled input as the output {fmt_rate(zf['attack_rate'])} (information)")
        out.append(_finding(
            f"{acc}x: the attack can tell an eraser from a perfect model (oracle eraser hit on "
            f">= {MIN_ERASER:g}% of accepted slices, background error alone a hit on <= {MAX_NOFEATURE:g}%)",
            "(not in the paper)", verdicts, evidence, "; ".join(why) or None))
    return out


def findings(results: dict) -> list[dict]:
    """One dict per paper finding: {"finding", "verdict", "evidence", "paper", "why"}."""
    out = []
    paired, ssim = results.get("paired", {}), results.get("ssim_difference", {})
    accs = _accs(results)

    # 1. robust training lowers the attack rate a lot at a small clean cost, measured against
    # the budget-matched clean fine-tune (the same extra epochs without the FNAF term)
    verdicts, evidence = [], []
    for acc in accs:
        ref = "cleanft" if "cleanft-robust" in paired.get(acc, {}) else "unet"
        pair = _get(paired, acc, f"{ref}-robust")
        if not pair:
            continue
        gap = pair["rate_difference"]
        v = [stats.verdict(*_interval(gap), ROBUST_MIN_GAP)]
        text = (f"{acc}x {_name(ref)} - robust attack rate {fmt_mean(gap, '{:+.1f}')} points "
                f"(McNemar p = {pair['mcnemar_p']:.2g}, {pair['both_accepted']} paired slices), "
                f"feature-lost fraction {fmt_mean(pair['lost_fraction_difference'], '{:+.3f}')}")
        cost = _get(ssim, acc, f"{ref}-robust")
        if cost:
            v.append(stats.verdict(*_interval(cost), ROBUST_MAX_SSIM_COST, "below"))
            text += f", SSIM cost {fmt_mean(cost, '{:+.4f}')}"
        if ("robust", acc) in PUBLISHED["table2"]:
            verdicts += v
        else:
            text += " (not in the paper: information only)"
        evidence.append(text)
    out.append(_finding(
        "FNAF-robust training lowers the attack rate by >= "
        f"{ROBUST_MIN_GAP:g} points against a budget-matched clean fine-tune, at an SSIM cost "
        f"<= {ROBUST_MAX_SSIM_COST:g} (at 4x, where the paper reports it)",
        "4x: 84.44% vs 12.71% (RS), SSIM 0.7213 vs 0.7197", verdicts, evidence))

    # 2. random search finds at least as many FNAFs as finite differences (paired, same slices)
    verdicts, evidence, why = [], [], []
    for acc in accs:
        for key, pair in sorted(paired.get(acc, {}).items()):
            if not key.startswith("rs-fd:"):
                continue
            model = key.split(":", 1)[1]
            gap = pair["rate_difference"]
            verdicts.append(stats.verdict(*_interval(gap), -RS_FD_TOLERANCE))
            evidence.append(f"{_name(model)} {acc}x RS - FD {fmt_mean(gap, '{:+.1f}')} points")
            if verdicts[-1] != stats.HOLDS:
                rates = [_get(results, "table2", model, acc, m, "attack_rate", "pct") for m in ("rs", "fd")]
                ceiling = all(r is not None and r >= 95.0 for r in rates)
                why.append(f"{verdicts[-1]} for {_name(model)} at {acc}x"
                           + (" (both methods hit >= 95% of slices: a ceiling leaves no room for a "
                              "difference)" if ceiling else ""))
    out.append(_finding(
        f"Random search is at least as strong as finite differences (RS - FD attack rate > "
        f"-{RS_FD_TOLERANCE:g} points, every model and acceleration)",
        "RS > FD for every model (e.g. U-Net 4x 84.44% vs 72.17%)", verdicts, evidence,
        "; ".join(why) or None))

    # 3. almost every random candidate survives under-sampling
    verdicts, evidence = [], []
    for acc in accs:
        acc_rate = _get(results, "table2", "unet", acc, "rs", "acceptance")
        if acc_rate and acc_rate.get("n"):
            verdicts.append(stats.verdict(acc_rate["lo"], acc_rate["hi"], MIN_ACCEPTANCE))
            evidence.append(f"{acc}x random candidates {fmt_rate(acc_rate, 2)}")
    out.append(_finding(f"Random features pass information preservation (IP >= 1e-4) almost always "
                        f"(acceptance > {MIN_ACCEPTANCE:g}%)", "99.82% (4x, Random column)",
                        verdicts, evidence))

    # 4. the i-RIM is harder to attack, testable only where it reconstructs better
    verdicts, evidence, why = [], [], None
    for acc in accs:
        pair = _get(paired, acc, "unet-irim")
        better = _get(ssim, acc, "irim-unet")
        if not pair:
            continue
        gap = pair["rate_difference"]
        text = f"{acc}x U-Net - i-RIM attack rate {fmt_mean(gap, '{:+.1f}')} points"
        if better:
            text += f"; SSIM i-RIM - U-Net {fmt_mean(better, '{:+.4f}')}"
        if better and stats.verdict(*_interval(better), 0.0) != stats.HOLDS:
            why = "untestable: the i-RIM does not reconstruct better than the U-Net (SSIM), as it does in the paper"
            evidence.append(text)
            continue
        verdicts.append(stats.verdict(*_interval(gap), 0.0))
        evidence.append(text)
    item = _finding("The i-RIM is less vulnerable than the U-Net (paired attack-rate difference > 0)",
                    "4x 44.49% vs 84.44%, 8x 77.39% vs 86.00%", verdicts, evidence, why)
    out.append(item)

    # 5. features found on the U-Net transfer to the i-RIM
    verdicts, evidence, notes = [], [], []
    for acc in sorted(results.get("transfer", {})):
        t = results["transfer"][acc]
        cond = t.get("conditional_rate")
        if cond and cond.get("n"):
            verdicts.append(stats.verdict(cond["lo"], cond["hi"], MIN_TRANSFER))
        own = t.get("target_random_rate")
        if own and own.get("n") and stats.verdict(own["lo"], own["hi"], MIN_TRANSFER) == stats.HOLDS:
            notes.append(f"at {acc}x the i-RIM is hit by random features about as often, so a high "
                         "transfer rate there says little about the U-Net's features")
        evidence.append(f"{acc}x P(i-RIM hit | U-Net hit) {fmt_rate(cond)}, unconditional "
                        f"{fmt_rate(t.get('attack_rate'))}, i-RIM on random features "
                        f"{fmt_rate(t.get('target_random_rate'))}")
    out.append(_finding(f"Features found on the U-Net transfer to the i-RIM (P(i-RIM hit | U-Net hit) > "
                        f"{MIN_TRANSFER:g}%)", "89.48% (4x)", verdicts, evidence,
                        "; ".join(notes) or None))
    return out
