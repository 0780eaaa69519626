"""Gradient-attack throughput: what a backward pass costs next to a forward, and the
gradient attack's candidates per second against random search on the same model.

Times, alternating (median of ``--repeats``), on B slices x K candidates of a U-Net:
the RS scorer (forward only, with the controls), the FeatureGradient call (forward +
backward through the model: Eq. 5's sensitivity map) and a whole PGD attack. Prints the
backward/forward cost ratio (used to compare attacks at equal compute: a budget is
``forward + ratio * backward`` passes) and candidates/s. Never run as a test.

    python benchmarks/gradient_attack.py --chans 8 --pools 3 --batch-size 4 --k 11
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from attack_throughput import _alternating
from flax import nnx

from fnaf_jax.attacks.config import AttackConfig, passes
from fnaf_jax.attacks.pgd import gradient_of, pgd
from fnaf_jax.attacks.random_search import draw
from fnaf_jax.models.unet import Unet
from fnaf_jax.objective import make_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chans", type=int, default=8)
    parser.add_argument("--pools", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--k", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = Unet(1, 1, chans=args.chans, num_pool_layers=args.pools, rngs=nnx.Rngs(0))
    model.eval()
    rng = np.random.default_rng(0)
    b = args.batch_size
    y = rng.random((b, 320, 320), dtype=np.float32)
    mask = (rng.random((b, 320)) < 0.3).astype(np.float32)
    batch = {"target_raw": y, "mask": mask, "metadata": np.zeros((b, 8), np.float32)}
    cfg = AttackConfig(k=args.k)
    scorer = make_scorer(model, cfg.objective)
    batch["clean_output"] = scorer.clean_output(batch)
    keys = jax.random.split(jax.random.key(0), b)
    cands = draw(keys, jnp.asarray(y), args.k, cfg.features)
    grad = gradient_of(scorer, cfg)
    t_fwd, t_grad, t_pgd = _alternating(
        [lambda: scorer(batch, cands), lambda: grad(batch, cands, 4.0), lambda: pgd(scorer, batch, keys, cfg)],
        args.repeats)
    n = b * args.k
    ratio = (t_grad - t_fwd) / t_fwd
    spent = passes("pgd", cfg)
    budget = spent["forward"] + ratio * spent["backward"]
    print(f"U-Net chans {args.chans}, {args.pools} pools, B = {b}, K = {args.k}, backend {jax.default_backend()}")
    print(f"forward (RS scorer):        {n / t_fwd:7.2f} candidates/s ({t_fwd:.3f} s for {n})")
    print(f"forward + backward (grad):  {n / t_grad:7.2f} candidates/s ({t_grad:.3f} s)")
    print(f"backward / forward cost:    {ratio:7.2f}")
    print(f"PGD attack ({cfg.pgd_starts} start, {cfg.pgd_steps} steps): {t_pgd:.3f} s for {b} slices, "
          f"{spent['forward']} forward + {spent['backward']} backward passes per slice = "
          f"{budget:.1f} forward-equivalents (RS K = {args.k}: {args.k})")
    print(f"RS / PGD time per slice:    {(t_fwd / b) / (t_pgd / b):.2f} (RS scores K = {args.k})")


if __name__ == "__main__":
    main()
