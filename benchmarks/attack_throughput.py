"""Random-search throughput: candidates scored per second at several B (slices) and K.

Compared with (a) the bare model forward on the same number of images (the floor: what
the model alone costs) and (b) a per-candidate loop that scores one candidate per call
(how a naive port would do it). Prints both ratios, and RS*/bare-best: RS with the
no-feature control output given (FD, PGD and the k-space attack compute it once and share
it across their rounds, and the methods of a study stage share it through a ControlCache),
i.e. the candidates alone against the model; and RSimg/bare-best: a lone RS call's model
images (its K candidates and one control per slice) per second against the model. RS, RS*
and both bare rates are timed in turn, --repeats times (medians). Never run as a test.

    python benchmarks/attack_throughput.py --chans 8 --pools 3 --batch-sizes 1 4 --ks 4 11
    python benchmarks/attack_throughput.py --model irim --batch-sizes 1 4 16 --ks 4 11
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

# the sibling benchmark's models (benchmarks/ is on sys.path when run as a script)
from attack_profile import build_model
from flax import nnx

from fnaf_jax import features
from fnaf_jax.attacks.config import AttackConfig
from fnaf_jax.attacks.random_search import random_search
from fnaf_jax.kernels import onednn
from fnaf_jax.objective import ObjectiveConfig, make_scorer
from fnaf_jax.physics import undersample


def _timed(fn, repeats):
    """Median seconds of ``repeats`` calls after a warm-up (compilation) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _alternating(fns, repeats):
    """Median seconds of each of ``fns``, run in turn ``repeats`` times (same load for all)."""
    for fn in fns:
        jax.block_until_ready(fn())
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def torch_original_structure(chans: int, pools: int):
    """A PyTorch replica of the released FNAF code's loop: per candidate round one model
    call on the B slices, features drawn on the host (NumPy), FFT under-sampling in torch,
    the region from SciPy's distance transform, the loss on the host. Returns
    ``run(target (B, H, W) numpy, mask (B, W) numpy, k) -> worst losses``."""
    import torch
    from fastmri.models import Unet as TorchUnet
    from scipy import ndimage

    torch.manual_seed(0)
    net = TorchUnet(1, 1, chans=chans, num_pool_layers=pools).eval()
    rng = np.random.default_rng(0)

    def feature(h, w, pixels=10, box=120):
        d = np.zeros((h, w), np.float32)
        r, c = rng.integers(h // 2 - box // 2, h // 2 + box // 2, size=2)
        for _ in range(pixels):  # a random aggregation of connected pixels
            d[r, c] = rng.uniform()
            r, c = r + rng.integers(-1, 2), c + rng.integers(-1, 2)
        return d

    def fft_under(x, m):
        k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        k = k * m[:, None, :]
        return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"),
                                  dim=(-2, -1)).abs()

    def run(y, mask, k):
        b, h, w = y.shape
        m = torch.from_numpy(mask)
        worst = np.full(b, -np.inf)
        with torch.no_grad():
            for _ in range(k):
                d = np.stack([feature(h, w) for _ in range(b)])
                target = torch.from_numpy(y + d)
                x = fft_under(target.to(torch.complex64), m)
                mean = x.mean(dim=(-2, -1), keepdim=True)
                std = x.std(dim=(-2, -1), keepdim=True)
                out = net(((x - mean) / std)[:, None])[:, 0] * std + mean
                for i in range(b):
                    region = ndimage.distance_transform_edt(d[i] == 0) <= 5
                    err = (out[i].numpy() - target[i].numpy())[region]
                    worst[i] = max(worst[i], float(np.mean(err ** 2)))
        return worst

    return run


def _batch(b, rng):
    yy, xx = np.mgrid[0:320, 0:320] / 320.0
    base = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 6)
    y = np.stack([base + 0.05 * rng.standard_normal((320, 320)) for _ in range(b)]).astype(np.float32)
    mask = (rng.uniform(size=(b, 320)) < 0.22).astype(np.float32)
    mask[:, 147:173] = 1
    return {"target_raw": y, "mask": mask}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("unet", "irim"), default="unet",
                   help="U-Net (--chans, --pools) or the smoke preset's small i-RIM")
    p.add_argument("--chans", type=int, default=8)
    p.add_argument("--pools", type=int, default=3)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--ks", type=int, nargs="+", default=[4, 11])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-images-per-call", type=int, default=None,
                   help="images per model call (default: the backend's rule)")
    p.add_argument("--torch", action="store_true",
                   help="also the PyTorch replica of the released code's loop (needs torch, fastmri)")
    args = p.parse_args(argv)
    if args.torch and args.model != "unet":
        p.error("--torch replicates the released code's U-Net loop: use it with --model unet")

    model = build_model(args.model, args.chans, args.pools)
    model.eval()
    graphdef, state = nnx.split(model)
    bare = jax.jit(lambda s, u, m: nnx.merge(graphdef, s).reconstruct(u, m))
    obj = ObjectiveConfig(max_images_per_call=args.max_images_per_call)
    scorer = make_scorer(model, obj)
    rng = np.random.default_rng(0)
    name = "i-RIM (smoke size)" if args.model == "irim" else f"U-Net chans {args.chans} pools {args.pools}"
    print(f"device {jax.devices()[0].device_kind}, {name}, 320x320, {onednn.path()} convolutions")
    torch_run = torch_original_structure(args.chans, args.pools) if args.torch else None
    print(f"{'B':>3} {'K':>3} {'RS cand/s':>10} {'bare img/s':>10} {'loop cand/s':>11} "
          f"{'RS/bare':>8} {'RS/loop':>8} {'bare1 img/s':>11} {'RS/bare-best':>12} {'RS*/bare-best':>13} {'RSimg/bare-best':>14}"
          + (f" {'torch cand/s':>12} {'RS/torch':>8}" if torch_run else ""))
    one = features.DEFAULT_FEATURES
    for b in args.batch_sizes:
        batch = _batch(b, rng)
        u = undersample(jnp.asarray(batch["target_raw"]), jnp.asarray(batch["mask"]))
        for k in args.ks:
            cfg = AttackConfig(k=k, objective=obj)
            keys = jax.random.split(jax.random.key(0), b)
            # RS* : the no-feature control given, as FD, PGD and the k-space attack share it
            # across their rounds and a stage's methods share it (ControlCache): the
            # candidates alone
            shared = {**batch, "clean_output": scorer.clean_output(batch)}
            u_all = jnp.repeat(u, k, axis=0)
            m_all = jnp.repeat(jnp.asarray(batch["mask"]), k, axis=0)
            # The bare model on one image per call: separates batching effects of the
            # backend (XLA on CPU gains little from batching) from attack overhead.
            u1, m1 = u[:1], jnp.asarray(batch["mask"][:1])
            t_rs, t_rs_shared, t_bare, t_one = _alternating([
                lambda cfg=cfg, keys=keys, batch=batch: random_search(scorer, batch, keys, cfg).worst_loss,
                lambda cfg=cfg, keys=keys, shared=shared: random_search(scorer, shared, keys, cfg).worst_loss,
                lambda u_all=u_all, m_all=m_all: bare(state, u_all, m_all),
                lambda u1=u1, m1=m1: bare(state, u1, m1)], args.repeats)

            # Per-candidate loop: one slice, one candidate per compiled call, B*K calls.
            single = {key: v[:1] for key, v in batch.items()}
            lo, hi = features.intensity_range(single["target_raw"])
            draw_one = jax.jit(lambda kk, lo=lo, hi=hi: features.sample(kk, 1, 1, one, lo=lo, hi=hi))
            cands = [draw_one(jax.random.key(i))
                     for i in range(b * k)]

            def loop(cands=cands, single=single):
                return [scorer(single, c)[0] for c in cands]

            t_loop = _timed(loop, 1)
            n = b * k
            best = max(n / t_bare, 1 / t_one)
            line = (f"{b:>3} {k:>3} {n / t_rs:>10.2f} {n / t_bare:>10.2f} {n / t_loop:>11.2f} "
                    f"{t_bare / t_rs:>8.2f} {t_loop / t_rs:>8.2f} {1 / t_one:>11.2f} {n / t_rs / best:>12.2f} "
                    f"{n / t_rs_shared / best:>13.2f} {(n + b) / t_rs / best:>14.2f}")
            if torch_run is not None:  # alternated with RS so both see the same load
                y_np, m_np = np.asarray(batch["target_raw"]), np.asarray(batch["mask"])
                t_rs2, t_torch = _alternating(
                    [lambda cfg=cfg, keys=keys, batch=batch: random_search(scorer, batch, keys, cfg).worst_loss,
                     lambda y_np=y_np, m_np=m_np, k=k: torch_run(y_np, m_np, k)], args.repeats)
                line += f" {n / t_torch:>12.2f} {t_torch / t_rs2:>8.2f}"
            print(line)


if __name__ == "__main__":
    main()
