"""Where one U-Net train step spends its time on a CPU: a profile by kind of operation.

Runs the step of ``train_throughput.py`` (fastMRI U-Net ``--chans`` 32, ``--pools`` 4,
batch 1, 320x320, L1 + RMSprop) under ``jax.profiler`` for ``--steps`` steps and sums the
executed operations per step: each native kernel (the oneDNN convolutions, their
gradients, the transposed convolutions, the instance norm) by its target, and XLA's own
operations by the JAX operation they come from. Also prints the step's wall time outside
the profiler.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/train_profile.py

Operations that XLA runs concurrently are each counted in full, so the sum may exceed
the wall time. Never run as a test.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

# the sibling benchmark's step (benchmarks/ is on sys.path when run as a script)
from train_throughput import jax_training


def build_step(chans: int, pools: int, size: int):
    """The compiled step's text and a function running one step."""
    image = np.random.default_rng(0).normal(size=(1, size, size)).astype(np.float32)
    t = jax_training(chans, pools, image, image)
    step, batch, key = t["step"], t["batch"], t["key"]
    text = step.lower(t["state"], batch, key).compile().as_text()
    holder = {"state": t["state"]}

    def run():
        holder["state"], loss, _ = step(holder["state"], batch, key)
        loss.block_until_ready()

    return text, run


def operation_names(hlo: str) -> dict:
    """Instruction name -> what to file it under: a native kernel's target, or the JAX
    operation an XLA instruction comes from (its op_name without the jit/jvp wrappers)."""
    names = {}
    for m in re.finditer(r"^\s+(?:ROOT )?%([\w.\-]+) = .*?custom_call_target=\"(Fnaf\w+)\"", hlo, re.MULTILINE):
        names[m.group(1)] = "kernel " + m.group(2)
    for m in re.finditer(r"^\s+(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo, re.MULTILINE):
        if m.group(1) not in names:
            op = m.group(2).split("/")[-1]
            names[m.group(1)] = ("XLA backward " if "transpose(" in m.group(2) else "XLA ") + op
    return names


def profile(run, names: dict, steps: int) -> collections.Counter:
    import jax

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(steps):
                run()
        trace = next(Path(d).rglob("*.trace.json.gz"))
        with gzip.open(trace) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    ms = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in names:
            ms[names[e["name"]]] += e["dur"] / 1e3 / steps
    return ms


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chans", type=int, default=32)
    p.add_argument("--pools", type=int, default=4)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)

    from fnaf_jax.kernels import onednn

    text, run = build_step(args.chans, args.pools, args.size)
    for _ in range(3):
        run()
    start = time.perf_counter()
    for _ in range(args.steps):
        run()
    wall = (time.perf_counter() - start) / args.steps * 1e3
    ms = profile(run, operation_names(text), args.steps)
    print(f"U-Net chans {args.chans}, {args.pools} pools, {args.size}x{args.size}, batch 1, "
          f"{onednn.path()} kernels: {wall:.0f} ms per step (wall, outside the profiler)")
    print("| operation | ms per step |")
    print("|---|---|")
    for name, value in ms.most_common():
        if value >= 0.5:
            print(f"| {name} | {value:.1f} |")
    kernels = sum(v for k, v in ms.items() if k.startswith("kernel"))
    print(f"| **native kernels** | **{kernels:.0f}** |")
    print(f"| **XLA operations** | **{sum(ms.values()) - kernels:.0f}** |")


if __name__ == "__main__":
    main()
