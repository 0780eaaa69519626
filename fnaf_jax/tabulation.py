"""From attack records to the numbers a table shows: every rate with its denominator and
95% interval, every mean with a bootstrap interval over volumes, and paired comparisons.

Rates (SPEC 3, 8): ``{"k", "n", "pct", "lo", "hi"}`` in percent, the interval Wilson's.
Means: ``{"n", "volumes", "mean", "lo", "hi"}``, the interval the wider of a percentile
bootstrap that resamples volumes (slices of one volume are correlated) and a t interval
over volume means (``stats.mean_interval``). Paired hit-rate differences: the wider of
that and Newcombe's paired interval. Per attack run (``summarize_records``):

- ``attack_rate``: hits / accepted slices (the paper's).
- controls, from each record's per-candidate ``scored`` lists: ``eraser_rate`` (the
  oracle eraser's worst accepted loss > gamma / accepted slices: the rate a model that
  erases every feature would get), ``nofeature_rate`` (the worst no-feature loss over
  the scored locations > gamma / slices: background error alone), ``random_rate`` (the
  first accepted candidate in draw order, not the worst, > gamma / accepted slices).
- ``lost_fraction`` of the chosen feature and ``lost_fraction_all`` (mean over each
  slice's accepted candidates), 0 kept, 1 erased.
- ``acceptance`` (accepted candidates / scored), ``chosen_acceptance`` (the paper's Table 3
  definition: the worst feature picked without the IP filter passes it / slices),
  ``mean_ip`` (chosen, accepted slices) and ``mean_ip_random`` (first candidate, all slices).
"""

from __future__ import annotations

import math

import numpy as np

from fnaf_jax import stats
from fnaf_jax.attacks.records import kspace_hit
from fnaf_jax.errors import DataError


def rate(k: int, n: int) -> dict:
    lo, hi = stats.wilson(int(k), int(n))
    pct = 100.0 * k / n if n else math.nan
    return {"k": int(k), "n": int(n), "pct": pct, "lo": 100.0 * lo, "hi": 100.0 * hi}


def mean_ci(values, groups, *, seed: int = 0) -> dict:
    values = np.asarray(values, np.float64)
    finite = ~np.isnan(values)
    lo, hi = stats.mean_interval(values, groups, seed=seed)
    mean = float(values[finite].mean()) if finite.any() else math.nan
    volumes = len(set(np.asarray(groups)[finite].tolist()))
    return {"n": int(finite.sum()), "volumes": volumes, "mean": mean, "lo": lo, "hi": hi}


def _scored(record: dict, name: str) -> np.ndarray | None:
    values = (record.get("scored") or {}).get(name)
    if values is None:
        return None
    return np.array([math.nan if v is None else float(v) for v in values], np.float64)


def _controls(records: list[dict], accepted: np.ndarray, gamma: float, threshold: float) -> dict:
    """Control and random-feature rows; empty when the records predate ``scored``."""
    per = [{n: _scored(r, n) for n in ("loss", "ip", "nofeature", "eraser", "lost")} for r in records]
    if any(p["loss"] is None or p["eraser"] is None for p in per):
        return {}
    groups = [r["file"] for r in records]
    eraser_hit, nofeature_hit, random_hit, random_lost, random_ip, chosen_ok, lost_all = [], [], [], [], [], [], []
    for p in per:
        ok = p["ip"] >= threshold
        eraser_hit.append(ok.any() and float(np.max(np.where(ok, p["eraser"], -np.inf))) > gamma)
        nofeature_hit.append(float(np.nanmax(p["nofeature"])) > gamma)
        first = int(np.argmax(ok))
        random_hit.append(bool(ok.any()) and p["loss"][first] > gamma)
        random_lost.append(p["lost"][first] if ok.any() else math.nan)
        random_ip.append(p["ip"][0])
        chosen_ok.append(p["ip"][int(np.argmax(p["loss"]))] >= threshold)
        lost_all.append(float(np.nanmean(p["lost"][ok])) if ok.any() and not np.isnan(p["lost"][ok]).all()
                        else math.nan)
    n_acc = int(accepted.sum())
    return {
        "eraser_rate": rate(int(np.sum(np.array(eraser_hit) & accepted)), n_acc),
        "nofeature_rate": rate(int(np.sum(nofeature_hit)), len(records)),
        "random_rate": rate(int(np.sum(np.array(random_hit) & accepted)), n_acc),
        "random_lost_fraction": mean_ci(random_lost, groups),
        "lost_fraction_all": mean_ci(lost_all, groups),
        "chosen_acceptance": rate(int(np.sum(chosen_ok)), len(records)),
        "mean_ip_random": float(np.mean(random_ip)),
    }


def summarize_records(records: list[dict]) -> dict:
    """The numbers of one attack run (module docstring)."""
    if not records:
        raise DataError("no attack records to summarize")
    gamma = float(records[0].get("gamma", 1e-3))
    threshold = float(records[0].get("ip_threshold", 1e-4))
    accepted = np.array([bool(r["accepted"]) for r in records])
    hits = np.array([bool(r["hit"]) for r in records])
    worst = np.array([float(r["worst_loss"]) for r in records])
    ips = np.array([float(r["ip"]) for r in records])
    lost = np.array([math.nan if r.get("lost_fraction") is None else float(r["lost_fraction"])
                     for r in records])
    groups = np.array([r["file"] for r in records])
    n_acc = int(accepted.sum())
    scored = sum(int(r.get("num_scored", 1)) for r in records)
    ok = sum(int(r.get("num_accepted", int(bool(r["accepted"])))) for r in records)
    nan = math.nan
    return {
        "slices": len(records),
        "volumes": len(set(groups.tolist())),
        "accepted": n_acc,
        "hits": int(hits.sum()),
        "gamma": gamma,
        "attack_rate": rate(int(hits.sum()), n_acc),
        "mean_worst_loss": mean_ci(np.where(accepted, worst, nan), groups),
        "lost_fraction": mean_ci(np.where(accepted, lost, nan), groups),
        "acceptance": rate(ok, scored),
        "slice_acceptance": rate(n_acc, len(records)),
        "mean_ip": float(ips[accepted].mean()) if n_acc else nan,
        **_controls(records, accepted, gamma, threshold),
    }


KSPACE_METHODS = ("kspace-pgd", "hallucinate")


def is_kspace(record: dict) -> bool:
    """A k-space attack record (per-eps curves) rather than an FNAF one."""
    return record.get("method") in KSPACE_METHODS


def summarize_kspace(records: list[dict]) -> list[dict]:
    """Curves of one k-space run: one row per eps (eps = 0 first, the unperturbed model)
    with the mean NMSE, Eq. 5 loss and lost (or shown) fraction over slices, each with its
    volume-bootstrap interval, and the hit rate (Wilson) where the run defines hits."""
    if not records:
        raise DataError("no k-space records to summarize")
    eps = records[0]["eps"]
    if any(r["eps"] != eps for r in records):
        raise DataError("k-space records with different eps lists cannot share a curve")
    other = "shown" if records[0]["method"] == "hallucinate" else "lost"
    groups = [r["file"] for r in records]

    def col(values):
        return np.array([math.nan if v is None else float(v) for v in values], np.float64)

    rows = [{"eps": 0.0, **{name: mean_ci(col([r["clean"].get(name) for r in records]), groups)
                            for name in ("nmse", "loss", other)}}]
    if records[0].get("hit") is not None:
        scored = "shown" if other == "shown" else "loss"
        clean_hits = [kspace_hit(r["method"], r["clean"].get(scored), r.get("gamma", 1e-3),
                                 r.get("shown_threshold", 0.5)) for r in records]
        rows[0]["hit_rate"] = rate(sum(clean_hits), len(records))
    for j, e in enumerate(eps):
        row = {"eps": float(e), **{name: mean_ci(col([r[name][j] for r in records]), groups)
                                   for name in ("nmse", "loss", other)}}
        if records[0].get("hit") is not None:
            row["hit_rate"] = rate(sum(bool(r["hit"][j]) for r in records), len(records))
        rows.append(row)
    return rows


def _key(record: dict) -> tuple[str, int]:
    return record["file"], int(record["slice"])


def _pairs(first: list[dict], second: list[dict]) -> list[tuple[dict, dict]]:
    """Records of the same slice in both runs, in ``first``'s order."""
    b_by_key = {_key(r): r for r in second}
    pairs = [(a, b_by_key[_key(a)]) for a in first if _key(a) in b_by_key]
    if not pairs:
        raise DataError("paired comparison: the two runs share no slice")
    return pairs


def paired_hits(ha, hb, groups) -> dict:
    """Paired hit indicators (first, second): hits only in one of them, the exact McNemar p
    and the rate difference (first - second, points) with the wider of a volume-bootstrap
    and Newcombe's paired interval."""
    ha, hb = np.asarray(ha, bool), np.asarray(hb, bool)
    rate_diff = mean_ci(100.0 * (ha.astype(float) - hb.astype(float)), groups)
    counts = (int((ha & hb).sum()), int((ha & ~hb).sum()), int((~ha & hb).sum()), int((~ha & ~hb).sum()))
    n_lo, n_hi = stats.newcombe_paired(*counts)
    if not math.isnan(n_lo):
        lo, hi = rate_diff["lo"], rate_diff["hi"]
        rate_diff["lo"] = 100.0 * n_lo if math.isnan(lo) else min(lo, 100.0 * n_lo)
        rate_diff["hi"] = 100.0 * n_hi if math.isnan(hi) else max(hi, 100.0 * n_hi)
    return {"only_first_hit": counts[1], "only_second_hit": counts[2],
            "mcnemar_p": stats.mcnemar_exact(counts[1], counts[2]), "rate_difference": rate_diff}


def paired_mean(d, groups) -> dict:
    """Mean of paired differences with its volume-bootstrap interval, the Wilcoxon p and
    how many pairs lean each way."""
    d = np.asarray(d, np.float64)
    return {**mean_ci(d, groups), "wilcoxon_p": stats.wilcoxon(d)["p"],
            "first_higher": int(np.sum(d > 0)), "second_higher": int(np.sum(d < 0))}


def paired(first: list[dict], second: list[dict]) -> dict:
    """``first`` vs ``second`` on the slices both attacked (same slices, masks and, for the
    same seed and method, the same candidate features).

    Hits are compared on slices accepted in both (``paired_hits``). Worst loss and the
    chosen feature's lost fraction: ``paired_mean`` of first - second.
    """
    pairs = _pairs(first, second)
    both = [(a, b) for a, b in pairs if a["accepted"] and b["accepted"]]
    groups = [a["file"] for a, _ in both]
    out = {"pairs": len(pairs), "both_accepted": len(both), "volumes": len(set(groups)),
           **paired_hits([a["hit"] for a, _ in both], [b["hit"] for _, b in both], groups)}
    for name in ("worst_loss", "lost_fraction"):
        out[f"{name}_difference"] = paired_mean([_diff(a.get(name), b.get(name)) for a, b in both], groups)
    return out


def paired_kspace(first: list[dict], second: list[dict]) -> list[dict]:
    """Two k-space runs of one method (same eps list) on the slices both attacked, one row
    per eps: hits (``paired_hits``; none for the image target), the lost (feature target)
    or shown (hallucinations) fraction and the NMSE, each ``paired_mean`` of first - second."""
    pairs = _pairs(first, second)
    eps = pairs[0][0]["eps"]
    if any(a["eps"] != eps or b["eps"] != eps for a, b in pairs):
        raise DataError("paired k-space comparison: the runs use different eps lists")
    other = "shown" if pairs[0][0]["method"] == "hallucinate" else "lost"
    groups = [a["file"] for a, _ in pairs]
    rows = []
    for j, e in enumerate(eps):
        row = {"eps": float(e), "pairs": len(pairs), "volumes": len(set(groups)), "fraction": other}
        if pairs[0][0].get("hit") is not None:
            row.update(paired_hits([a["hit"][j] for a, _ in pairs], [b["hit"][j] for _, b in pairs], groups))
        for name in (other, "nmse"):
            row[f"{name}_difference"] = paired_mean([_diff(a[name][j], b[name][j]) for a, b in pairs], groups)
        rows.append(row)
    return rows


def _diff(a, b) -> float:
    return math.nan if a is None or b is None else float(a) - float(b)


def transfer_summary(transfer: list[dict], source: list[dict] | None = None,
                     target: list[dict] | None = None) -> dict:
    """A transfer run: the unconditional rate, P(target hit | source hit) on the slices the
    source hit, and (from the target's own attack records) the target's rate on random
    features beside it."""
    out = summarize_records(transfer)
    if source:
        src = {_key(r): r for r in source}
        cond = [r for r in transfer if _key(r) in src and src[_key(r)]["hit"] and r["accepted"]]
        out["conditional_rate"] = rate(sum(bool(r["hit"]) for r in cond), len(cond))
    if target:
        own = summarize_records(target)
        out["target_random_rate"] = own.get("random_rate")
        out["target_attack_rate"] = own["attack_rate"]
    return out


def fmt_rate(r: dict | None, digits: int = 1) -> str:
    """"56.2% [33.2, 76.9] (9/16)"; "-" when missing or undefined."""
    if not r or not r.get("n"):
        return "-"
    return f"{r['pct']:.{digits}f}% [{r['lo']:.{digits}f}, {r['hi']:.{digits}f}] ({r['k']}/{r['n']})"


def fmt_mean(m: dict | None, spec: str = "{:.3g}") -> str:
    """"0.00151 [0.00122, 0.00183]"; "-" when missing."""
    if not m or not m.get("n") or m.get("mean") is None or math.isnan(m["mean"]):
        return "-"
    lo, hi = m.get("lo"), m.get("hi")
    band = "" if lo is None or math.isnan(lo) else f" [{spec.format(lo)}, {spec.format(hi)}]"
    return spec.format(m["mean"]) + band
