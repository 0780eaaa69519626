"""Training and inference throughput (slices/s) of fnaf-jax's U-Net beside fastMRI's PyTorch U-Net.

Both sides run the same work: a U-Net with ``--chans`` (default 32) and ``--pools``
(default 4) on ``--batch-size`` z-scored ``--size`` x ``--size`` images (default 320), an
L1 loss and one RMSprop step per training step; inference is a forward pass in eval
mode. Each measurement times ``--steps`` calls after ``--warmup`` untimed ones
(compilation), ``--repeats`` times, the two sides interleaved so they share the same
background load; medians are reported, and the median of the per-repeat ratios
JAX / PyTorch.

    python benchmarks/train_throughput.py --repeats 5 --steps 3

Needs the ``torch`` extra and ``fastmri`` for the PyTorch side (``--no-torch`` skips
it). On CPU, glibc's allocator can dominate large-array workloads; try
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (transparent huge pages for malloc) on both
sides when comparing. On a single CPU device the JAX side runs its convolutions on oneDNN
(``fnaf_jax.kernels.onednn``); ``FNAF_CPU_CONV=xla`` times XLA's own convolutions instead.
Never run as a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _rate(run, slices: int, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    return slices * steps / (time.perf_counter() - t0)


def measure(sides: dict, args) -> dict:
    """Median slices/s per side and task, and the median of the per-repeat ratios.

    Repeats interleave the sides (jax train, torch train, jax infer, torch infer, ...) so
    that both see the same background load on a shared machine.
    """
    rates = {(side, task): [] for side in sides for task in ("train", "infer")}
    for _ in range(args.repeats):
        for task in ("train", "infer"):
            for side, fns in sides.items():
                rates[side, task].append(_rate(fns[task], args.batch_size, args.steps))
    out = {key: statistics.median(values) for key, values in rates.items()}
    if len(sides) == 2:
        for task in ("train", "infer"):
            out["ratio", task] = statistics.median(
                j / t for j, t in zip(rates["jax", task], rates["torch", task]))
    return out


def jax_training(chans: int, pools: int, image, target) -> dict:
    """The U-Net's compiled train step on one device with random weights: ``step``,
    ``state``, ``batch``, ``key`` and the ``model`` (in training mode)."""
    import jax
    from flax import nnx

    from fnaf_jax import parallel
    from fnaf_jax.models.registry import build_abstract_model
    from fnaf_jax.train.config import TrainConfig
    from fnaf_jax.train.steps import (
        init_state,
        make_optimizer,
        make_train_step,
        step_key,
    )
    from fnaf_jax.train.unet_task import UnetTask

    cfg = TrainConfig(chans=chans, num_pools=pools, batch_size=image.shape[0])
    model = build_abstract_model(cfg.model_config())
    rng = np.random.default_rng(0)  # weights drawn in numpy: values do not matter here
    nnx.update(model, jax.tree.map(
        lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(s.dtype),
        nnx.state(model, nnx.Param)))
    mesh = parallel.make_mesh(jax.devices()[:1])
    tx = make_optimizer(cfg, 1000)
    model.train()
    graphdef, state = init_state(model, tx)
    return {"step": make_train_step(UnetTask(loss="l1"), graphdef, tx, mesh),
            "state": parallel.replicate(state, mesh),
            "batch": parallel.shard_batch({"image": image, "target": target}, mesh),
            "key": step_key(0, 0), "model": model}


def jax_side(args, image, target) -> dict:
    import jax
    from flax import nnx

    t = jax_training(args.chans, args.pools, image, target)
    step, batch, key, model = t["step"], t["batch"], t["key"], t["model"]
    holder = {"state": t["state"]}

    def train_once():
        holder["state"], loss, _ = step(holder["state"], batch, key)
        loss.block_until_ready()

    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, ...)[0]
    forward = jax.jit(lambda s, x: nnx.merge(eval_graphdef, s["params"], s["rest"], copy=True)(x[..., None]))

    def infer_once():
        forward(holder["state"], batch["image"]).block_until_ready()

    for _ in range(args.warmup):
        train_once()
        infer_once()
    from fnaf_jax.kernels import onednn
    return {"train": train_once, "infer": infer_once, "device": f"{jax.devices()[0]}, {onednn.path()} convs"}


def torch_side(args, image, target) -> dict:
    import torch
    from fastmri.models import Unet

    torch.manual_seed(0)
    model = Unet(1, 1, chans=args.chans, num_pool_layers=args.pools, drop_prob=0.0)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.99, eps=1e-8)
    x = torch.from_numpy(image)[:, None]
    y = torch.from_numpy(target)[:, None]

    def train_once():
        model.train()
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(model(x), y)
        loss.backward()
        opt.step()

    def infer_once():
        model.eval()
        with torch.no_grad():
            model(x)

    for _ in range(args.warmup):
        train_once()
        infer_once()
    return {"train": train_once, "infer": infer_once,
            "device": f"cpu ({torch.get_num_threads()} threads)"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chans", type=int, default=32)
    p.add_argument("--pools", type=int, default=4)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed calls per repeat")
    p.add_argument("--repeats", type=int, default=5, help="median over this many repeats")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (compilation)")
    p.add_argument("--no-torch", action="store_true", help="JAX side only")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.size, args.size)
    image = rng.normal(size=shape).astype(np.float32)
    target = rng.normal(size=shape).astype(np.float32)

    sides = {"jax": jax_side(args, image, target)}
    if not args.no_torch:
        sides["torch"] = torch_side(args, image, target)
    r = measure(sides, args)
    print(f"U-Net chans {args.chans}, {args.pools} pools, batch {args.batch_size}, "
          f"{args.size}x{args.size}; median of {args.repeats} x {args.steps} calls")
    print("| side | device | train slices/s | inference slices/s |")
    print("|---|---|---|---|")
    for side, fns in sides.items():
        print(f"| {side} | {fns['device']} | {r[side, 'train']:.3f} | {r[side, 'infer']:.3f} |")
    if len(sides) == 2:
        print(f"ratio jax/torch (median of per-repeat ratios): train {r['ratio', 'train']:.2f}x, "
              f"inference {r['ratio', 'infer']:.2f}x")


if __name__ == "__main__":
    main()
