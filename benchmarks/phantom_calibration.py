"""How the synthetic knee set compares with real knee MRI on the numbers FNAF depends on.

For each acquisition and acceleration it prints the random-feature acceptance (IP >= 1e-4,
paper Table 3 "Random" column: 99.82 % at 4x on fastMRI), the mean IP (paper: 6.4e-4),
the z-scored dynamic range (max - min) / std of the zero-filled input, and the oracle
eraser's hit rate (the worst of K random features, fully erased, above gamma = 1e-3).
Masks are seeded by file name as in the attack, features drawn as in random search.

    python benchmarks/phantom_calibration.py --volumes 16 --slices 8 --k 11
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import features, masks, objective
from fnaf_jax.attacks.random_search import draw
from fnaf_jax.attacks.runner import slice_key
from fnaf_jax.data.synthetic import make_volume
from fnaf_jax.masks import MaskSpec, file_mask
from fnaf_jax.models.baselines import zero_filled
from fnaf_jax.stats import wilson


def measure(volumes: int, slices: int, k: int, width: int, seed: int, accs) -> list[dict]:
    rows = []
    by_acq: dict = {}
    for index in range(volumes):
        vol = make_volume(index, n_slices=slices, width=width, seed=seed)
        by_acq.setdefault(vol.attrs["acquisition"], []).append(vol)
    scorer = objective.make_scorer(zero_filled)
    for acc in accs:
        spec = MaskSpec(acc, masks.default_center_fraction(acc))
        for acq, vols in sorted(by_acq.items()):
            ips, ranges, eraser_hits = [], [], []
            for vol in vols:
                y = vol.target
                batch = {"target_raw": y, "mask": np.stack([file_mask(spec, vol.name, 320)] * len(y))}
                keys = jnp.stack([slice_key(seed, vol.name, s) for s in range(len(y))])
                cands = draw(keys, jnp.asarray(y), k, features.DEFAULT_FEATURES)
                scores = scorer(batch, cands)
                ip = np.asarray(scores.ip)
                ips.append(ip)
                eraser = np.where(ip >= 1e-4, np.asarray(scores.eraser), -np.inf).max(axis=1)
                eraser_hits.append(eraser > 1e-3)
                x = np.abs(np.asarray(jax.jit(objective.undersample)(jnp.asarray(y), jnp.asarray(batch["mask"]))))
                ranges.append((x.max(axis=(1, 2)) - x.min(axis=(1, 2))) / x.std(axis=(1, 2), ddof=1))
            ip = np.concatenate(ips).ravel()
            hits = np.concatenate(eraser_hits)
            ok = int((ip >= 1e-4).sum())
            lo, hi = wilson(ok, ip.size)
            rows.append({"acceleration": acc, "acquisition": acq, "candidates": ip.size,
                         "acceptance": 100 * ok / ip.size, "acceptance_ci": (100 * lo, 100 * hi),
                         "mean_ip": float(ip.mean()), "range": float(np.concatenate(ranges).mean()),
                         "eraser_rate": 100 * float(hits.mean()), "slices": hits.size})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volumes", type=int, default=16)
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--k", type=int, default=11)
    p.add_argument("--width", type=int, default=368)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerations", type=int, nargs="+", default=[4, 8])
    args = p.parse_args(argv)
    t0 = time.time()
    rows = measure(args.volumes, args.slices, args.k, args.width, args.seed, args.accelerations)
    print(f"synthetic knee set: {args.volumes} volumes x {args.slices} slices, width {args.width}, "
          f"seed {args.seed}, K = {args.k} ({time.time() - t0:.0f} s)")
    print("| acceleration | acquisition | random-feature acceptance % [95% CI] (candidates) | mean IP "
          "| (max - min) / std | oracle eraser hit % (slices) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["acceptance_ci"]
        print(f"| {r['acceleration']}x | {r['acquisition']} | {r['acceptance']:.2f} [{lo:.2f}, {hi:.2f}] "
              f"({r['candidates']}) | {r['mean_ip']:.2e} | {r['range']:.1f} | {r['eraser_rate']:.1f} "
              f"({r['slices']}) |")
    print("paper (fastMRI knee, 4x, Random column): acceptance 99.82 %, mean IP 6.4e-4")


if __name__ == "__main__":
    main()
