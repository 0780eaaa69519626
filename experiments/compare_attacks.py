"""PGD vs RS vs FD at (about) equal compute, k-space worst cases and hallucinations, paired
on the same slices, for one or more models; optional robustness profiles.

    python experiments/compare_attacks.py --data VAL --out OUT --model unet=CKPT --model robust=CKPT2 \\
        [--accelerations 4 8] [--limit N] [--profile]

Runs (resumably, through the same functions as ``fnaf attack`` and ``fnaf profile``) RS
(K = 11), FD (2 iterations) and PGD (default: 1 start, 3 steps: 4 forward + 3 backward
passes, about 9.3 forward-equivalents at the measured backward/forward cost of 1.77
against RS's 11) on every slice; then writes ``OUT/report`` (``fnaf report``) and
``OUT/comparison.md``: per model and acceleration, PGD - RS and PGD - FD paired
differences of the hit rate, the mean worst loss and the feature-lost fraction, each with
its 95% interval and a verdict ("holds": PGD stronger, "does not hold": weaker).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from fnaf_jax.attacks.config import BACKWARD_COST, AttackConfig, forward_equivalents
from fnaf_jax.attacks.records import read_records
from fnaf_jax.attacks.runner import AttackJob, attack_folder
from fnaf_jax.masks import MaskSpec
from fnaf_jax.report import ReportConfig, make_report
from fnaf_jax.stats import verdict
from fnaf_jax.tabulation import fmt_mean, fmt_rate, paired, summarize_records

FNAF_METHODS = ("rs", "fd", "pgd")
KSPACE = (("kspace-pgd", "feature"), ("hallucinate", "feature"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT")
    parser.add_argument("--accelerations", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--kspace-limit", type=int, default=32, help="slices of the k-space runs")
    parser.add_argument("--profile", action="store_true", help="also run fnaf profile on every model")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    cfg = AttackConfig(eps=(0.005, 0.01, 0.02, 0.05), kspace_steps=5)
    files = []
    for name, ckpt in models.items():
        for acc in args.accelerations:
            spec = MaskSpec(acc)
            for method in FNAF_METHODS:
                out = args.out / f"{name}_{acc}x_{method}.jsonl"
                attack_folder(AttackJob(data=args.data, out=str(out), checkpoint=ckpt, method=method, mask=spec,
                                        attack=cfg, batch_size=args.batch_size, limit=args.limit, name=name))
                files.append(out)
            for method, target in KSPACE:
                out = args.out / f"{name}_{acc}x_{method}.jsonl"
                kcfg = dataclasses.replace(cfg, kspace_target=target)
                attack_folder(AttackJob(data=args.data, out=str(out), checkpoint=ckpt, method=method, mask=spec,
                                        attack=kcfg, batch_size=args.batch_size, limit=args.kspace_limit, name=name))
                files.append(out)
        if args.profile:
            from fnaf_jax.profile import ProfileConfig, profile_folder

            profile_folder(ProfileConfig(data=args.data, out=str(args.out / f"profile_{name}"), checkpoint=ckpt))
    make_report(ReportConfig(results=tuple(map(str, files)), out=str(args.out / "report")))
    write_comparison(args.out, models, args.accelerations, cfg)
    return 0


def write_comparison(out: Path, models: dict, accs, cfg: AttackConfig) -> None:
    lines = ["# PGD vs RS vs FD on the same slices", "",
             "Budgets per slice in forward-equivalents (a backward pass costs "
             f"{BACKWARD_COST} forwards): " + ", ".join(f"{m.upper()} {forward_equivalents(m, cfg):.1f}"
                                                            for m in FNAF_METHODS) + ".", "",
             ("| model | acc | method | attack rate [95% CI] (hits / accepted) | mean worst loss [95% CI] | "
             "feature-lost fraction [95% CI] |"), "|---|---|---|---|---|---|"]
    pairs_md = ["", "## Paired differences (PGD minus the other, slices accepted by both)", "",
                ("| model | acc | vs | hit rate difference, points [95% CI] | worst-loss difference [95% CI] | "
                "lost-fraction difference [95% CI] | PGD stronger (loss)? | PGD stronger (lost)? |"),
                "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for name in models:
        for acc in accs:
            recs = {m: read_records(out / f"{name}_{acc}x_{m}.jsonl") for m in FNAF_METHODS}
            for m, r in recs.items():
                s = summarize_records(r)
                summary[f"{name} {acc}x {m}"] = s
                lines.append(f"| {name} | {acc}x | {m.upper()} | {fmt_rate(s['attack_rate'])} | "
                             f"{fmt_mean(s['mean_worst_loss'])} | {fmt_mean(s['lost_fraction'], '{:.2f}')} |")
            for other in ("rs", "fd"):
                p = paired(recs["pgd"], recs[other])
                summary[f"{name} {acc}x pgd-{other}"] = p
                loss, lost = p["worst_loss_difference"], p["lost_fraction_difference"]
                pairs_md.append(
                    f"| {name} | {acc}x | {other.upper()} | {fmt_mean(p['rate_difference'], '{:+.1f}')} "
                    f"(n = {p['both_accepted']}) | {fmt_mean(loss, '{:+.3g}')} | {fmt_mean(lost, '{:+.3f}')} | "
                    f"{verdict(loss['lo'], loss['hi'], 0.0)} | {verdict(lost['lo'], lost['hi'], 0.0)} |")
    (out / "comparison.md").write_text("\n".join(lines + pairs_md) + "\n")
    (out / "comparison.json").write_text(json.dumps(summary, indent=1, allow_nan=True, default=str))
    print((out / "comparison.md").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
