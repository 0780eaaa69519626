"""Random-search throughput: candidates scored per second at several B (slices) and K.

Compared with (a) the bare model forward on the same number of images (the floor: what
the model alone costs) and (b) a per-candidate loop that scores one candidate per call
(how a naive port would do it). Prints both ratios. Never run as a test.

    python benchmarks/attack_throughput.py --chans 8 --pools 3 --batch-sizes 1 4 --ks 4 11
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnaf_jax import features
from fnaf_jax.attacks.config import AttackConfig
from fnaf_jax.attacks.random_search import random_search
from fnaf_jax.models.unet import Unet
from fnaf_jax.objective import ObjectiveConfig, make_scorer
from fnaf_jax.physics import undersample


def _timed(fn, repeats):
    jax.block_until_ready(fn())  # compile and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / repeats


def _batch(b, rng):
    yy, xx = np.mgrid[0:320, 0:320] / 320.0
    base = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 6)
    y = np.stack([base + 0.05 * rng.standard_normal((320, 320)) for _ in range(b)]).astype(np.float32)
    mask = (rng.uniform(size=(b, 320)) < 0.22).astype(np.float32)
    mask[:, 147:173] = 1
    return {"target_raw": y, "mask": mask}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chans", type=int, default=8)
    p.add_argument("--pools", type=int, default=3)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--ks", type=int, nargs="+", default=[4, 11])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-images-per-call", type=int, default=64)
    args = p.parse_args(argv)

    model = Unet(chans=args.chans, num_pool_layers=args.pools, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    bare = jax.jit(lambda s, u, m: nnx.merge(graphdef, s).reconstruct(u, m))
    obj = ObjectiveConfig(max_images_per_call=args.max_images_per_call)
    scorer = make_scorer(model, obj)
    rng = np.random.default_rng(0)
    print(f"device {jax.devices()[0].device_kind}, U-Net chans {args.chans} pools {args.pools}, 320x320")
    print(f"{'B':>3} {'K':>3} {'RS cand/s':>10} {'bare img/s':>10} {'loop cand/s':>11} "
          f"{'RS/bare':>8} {'RS/loop':>8} {'bare1 img/s':>11}")
    one = features.DEFAULT_FEATURES
    for b in args.batch_sizes:
        batch = _batch(b, rng)
        u = undersample(jnp.asarray(batch["target_raw"]), jnp.asarray(batch["mask"]))
        for k in args.ks:
            cfg = AttackConfig(k=k, objective=obj)
            keys = jax.random.split(jax.random.key(0), b)
            t_rs = _timed(lambda cfg=cfg, keys=keys, batch=batch: random_search(scorer, batch, keys, cfg).worst_loss,
                          args.repeats)
            u_all = jnp.repeat(u, k, axis=0)
            m_all = jnp.repeat(jnp.asarray(batch["mask"]), k, axis=0)
            t_bare = _timed(lambda u_all=u_all, m_all=m_all: bare(state, u_all, m_all), args.repeats)

            # Per-candidate loop: one slice, one candidate per compiled call, B*K calls.
            single = {key: v[:1] for key, v in batch.items()}
            lo, hi = features.intensity_range(single["target_raw"])
            draw_one = jax.jit(lambda kk, lo=lo, hi=hi: features.sample(kk, 1, 1, one, lo=lo, hi=hi))
            cands = [draw_one(jax.random.key(i))
                     for i in range(b * k)]

            def loop(cands=cands, single=single):
                return [scorer(single, c)[0] for c in cands]

            t_loop = _timed(loop, 1)
            # The bare model on one image per call: separates batching effects of the
            # backend (XLA on CPU gains little from batching) from attack overhead.
            t_one = _timed(lambda u=u, m=batch["mask"]: bare(state, u[:1], jnp.asarray(m[:1])), args.repeats)
            n = b * k
            print(f"{b:>3} {k:>3} {n / t_rs:>10.2f} {n / t_bare:>10.2f} {n / t_loop:>11.2f} "
                  f"{t_bare / t_rs:>8.2f} {t_loop / t_rs:>8.2f} {1 / t_one:>11.2f}")


if __name__ == "__main__":
    main()
