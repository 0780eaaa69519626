"""Where random search spends its time beyond the model (a profile for one B, K, chunk).

Splits one RS call into: the bare model on one image per call (the best bare rate on
CPU), the bare model over the same B*K images in chunks of C inside one call (the
structure RS uses), the non-model work (features, FFT under-sampling, region, Eq. 5 and
controls: RS with a network-free recon_fn), and the full RS call. Median of --repeats
alternating runs. Never run as a test.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/attack_profile.py --chans 32 --pools 4 --chunk 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnaf_jax.attacks.config import AttackConfig
from fnaf_jax.attacks.random_search import random_search
from fnaf_jax.models.baselines import zero_filled
from fnaf_jax.models.unet import Unet
from fnaf_jax.objective import ObjectiveConfig, make_scorer
from fnaf_jax.physics import undersample


def _once(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("unet", "irim"), default="unet",
                   help="U-Net (--chans, --pools) or the smoke preset's small i-RIM")
    p.add_argument("--chans", type=int, default=32)
    p.add_argument("--pools", type=int, default=4)
    p.add_argument("--b", type=int, default=4)
    p.add_argument("--k", type=int, default=11)
    p.add_argument("--chunk", type=int, default=None, help="images per model call (default: the backend rule)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    from fnaf_jax.objective import images_per_call

    if args.model == "irim":
        from fnaf_jax.models.irim import IRIM

        model = IRIM(n_steps=2, n_hidden=[16, 16, 16], n_network_hidden=[12, 24, 12], dilations=[1, 2, 1],
                     multiplicity=1, rngs=nnx.Rngs(0))
    else:
        model = Unet(chans=args.chans, num_pool_layers=args.pools, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    obj = ObjectiveConfig(max_images_per_call=args.chunk)
    n = args.b * args.k
    chunk = images_per_call(obj, n)
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(size=(args.b, 320, 320)).astype(np.float32))
    mask = np.zeros((args.b, 320), np.float32)
    mask[:, ::4] = 1
    mask[:, 147:173] = 1
    batch = {"target_raw": y, "mask": jnp.asarray(mask)}
    u = undersample(y, batch["mask"])
    u_all, m_all = jnp.repeat(u, args.k, axis=0), jnp.repeat(batch["mask"], args.k, axis=0)

    one = jax.jit(lambda s, u, m: nnx.merge(graphdef, s).reconstruct(u, m))

    @jax.jit
    def chunked(s, u, m):
        net = nnx.merge(graphdef, s)
        parts = jax.lax.map(lambda a: net.reconstruct(*a), (u.reshape(-1, chunk, 320, 320), m.reshape(-1, chunk, 320)))
        return parts.reshape(-1, *parts.shape[2:])

    cfg = AttackConfig(k=args.k, objective=obj)
    keys = jax.random.split(jax.random.key(0), args.b)
    scorer, free = make_scorer(model, obj), make_scorer(zero_filled, obj)
    runs = {
        "bare, 1 image per call": lambda: [one(state, u_all[i:i + 1], m_all[i:i + 1]) for i in range(n)],
        f"bare, {chunk} per call in one lax.map": lambda: chunked(state, u_all, m_all),
        "RS without the model (zero-filled recon_fn)": lambda: random_search(free, batch, keys, cfg).worst_loss,
        "RS": lambda: random_search(scorer, batch, keys, cfg).worst_loss,
    }
    if n % chunk:
        del runs[f"bare, {chunk} per call in one lax.map"]
    for fn in runs.values():
        _once(fn)  # compile
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # alternating, so every run sees the same load
        for name, fn in runs.items():
            times[name].append(_once(fn))
    name = "i-RIM (smoke size)" if args.model == "irim" else f"U-Net chans {args.chans} pools {args.pools}"
    print(f"device {jax.devices()[0].device_kind}, {name}, "
          f"B={args.b} K={args.k} ({n} candidates), {chunk} images per call")
    best = statistics.median(times["bare, 1 image per call"])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"  {name:<48} {t / n * 1e3:8.2f} ms/candidate  {n / t:7.2f} /s  {best / t:5.2f}x bare-1")


if __name__ == "__main__":
    main()
