"""Where random search spends its time beyond the model (a profile for one B, K, chunk).

Splits one RS call into: the bare model on one image per call and in calls of C images
(the best bare rate is the faster of the two), the non-model work
(features, FFT under-sampling, region, Eq. 5 and
controls: RS with a network-free recon_fn), the no-feature control alone, the full RS
call, and RS with the control given (RS*: what a run pays when a ControlCache holds it).
Median of --repeats alternating runs. Never run as a test.

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


def build_model(kind: str, chans: int = 32, pools: int = 4, irim_size: str = "smoke"):
    """A U-Net, or an i-RIM of the smoke preset's size or the released one (irim_size)."""
    if kind == "irim":
        from fnaf_jax.models.irim import IRIM

        if irim_size == "released":  # irim_fastMRI 0.1: 8 steps, 12 layers of 64 (SPEC 6)
            return IRIM(rngs=nnx.Rngs(0))
        return IRIM(n_steps=2, n_hidden=[16, 16, 16], n_network_hidden=[12, 24, 12], dilations=[1, 2, 1],
                    multiplicity=1, rngs=nnx.Rngs(0))
    return Unet(chans=chans, num_pool_layers=pools, rngs=nnx.Rngs(0))


def profile(model, b: int, k: int, chunk: int | None, repeats: int) -> dict:
    """Seconds per candidate of the bare model (one image per call, and the chunked
    structure), of RS without the model, of the no-feature control, of RS and of RS with
    the control given; medians of alternating repeats."""
    from fnaf_jax.objective import images_per_call

    model.eval()
    graphdef, state = nnx.split(model)
    obj = ObjectiveConfig(max_images_per_call=chunk)
    n = b * k
    chunk = images_per_call(obj, n)
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(size=(b, 320, 320)).astype(np.float32))
    mask = np.zeros((b, 320), np.float32)
    mask[:, ::4] = 1
    mask[:, 147:173] = 1
    batch = {"target_raw": y, "mask": jnp.asarray(mask)}
    u = undersample(y, batch["mask"])
    u_all, m_all = jnp.repeat(u, k, axis=0), jnp.repeat(batch["mask"], k, axis=0)
    one = jax.jit(lambda s, u, m: nnx.merge(graphdef, s).reconstruct(u, m))
    calls = jax.jit(lambda s, u, m: nnx.merge(graphdef, s).reconstruct(u, m))
    cfg = AttackConfig(k=k, objective=obj)
    keys = jax.random.split(jax.random.key(0), b)
    scorer, free = make_scorer(model, obj), make_scorer(zero_filled, obj)
    shared = {**batch, "clean_output": scorer.clean_output(batch)}  # as a ControlCache gives it
    runs = {
        "bare_1": lambda: [one(state, u_all[i:i + 1], m_all[i:i + 1]) for i in range(n)],
        "bare_chunked": lambda: [calls(state, u_all[i:i + chunk], m_all[i:i + chunk])
                                 for i in range(0, n - n % chunk, chunk)],
        "rs_without_model": lambda: random_search(free, batch, keys, cfg).worst_loss,
        "rs": lambda: random_search(scorer, batch, keys, cfg).worst_loss,
        "control": lambda: scorer.clean_output(batch),
        "rs_control_given": lambda: random_search(scorer, shared, keys, cfg).worst_loss,
    }
    for fn in runs.values():
        _once(fn)  # compile
    times = {name: [] for name in runs}
    for _ in range(repeats):  # alternating, so every run sees the same load
        for name, fn in runs.items():
            times[name].append(_once(fn))
    per = {name: statistics.median(ts) / (n - n % chunk if name == "bare_chunked" else n)
           for name, ts in times.items()}
    best = min(per["bare_1"], per["bare_chunked"])
    return {"b": b, "k": k, "images_per_call": chunk, "seconds_per_candidate": per,
            "rs_per_s": 1 / per["rs"], "bare_best_per_s": 1 / best, "rs_over_bare_best": best / per["rs"],
            "rs_control_given_over_bare_best": best / per["rs_control_given"]}


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
    res = profile(build_model(args.model, args.chans, args.pools), args.b, args.k, args.chunk, args.repeats)
    name = "i-RIM (smoke size)" if args.model == "irim" else f"U-Net chans {args.chans} pools {args.pools}"
    print(f"device {jax.devices()[0].device_kind}, {name}, B={args.b} K={args.k} ({args.b * args.k} "
          f"candidates), {res['images_per_call']} images per call")
    labels = {"bare_1": "bare, 1 image per call",
              "bare_chunked": f"bare, {res['images_per_call']} images per call",
              "rs_without_model": "RS without the model (zero-filled recon_fn)",
              "control": "the no-feature control (1 image per slice)", "rs": "RS",
              "rs_control_given": "RS*, the control given (a ControlCache)"}
    best = 1 / res["bare_best_per_s"]
    for key, label in labels.items():
        t = res["seconds_per_candidate"][key]
        print(f"  {label:<48} {t * 1e3:8.2f} ms/candidate  {1 / t:7.2f} /s  {best / t:5.2f}x bare-best")


if __name__ == "__main__":
    main()
