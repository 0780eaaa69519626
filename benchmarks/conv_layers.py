"""Per-layer convolution times of the U-Net train step: XLA, fnaf-jax's oneDNN kernel, PyTorch.

For every 3x3 convolution shape of fastMRI's U-Net (``--chans`` 32, ``--pools`` 4,
``--size`` 320, batch 1) it times the forward pass, the input gradient and the weight
gradient, each as its own compiled call (median of ``--repeats``), and sums them over
the step with each shape's multiplicity:

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/conv_layers.py

XLA's CPU weight gradient is the one that lags (docs/performance.md); the oneDNN kernel
(``fnaf_jax.kernels.onednn``) is what the U-Net uses on a single CPU device. Needs the
``torch`` extra for the PyTorch column. Never run as a test.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

# the sibling benchmark's timer (benchmarks/ is on sys.path when run as a script)
from attack_throughput import _timed


def layer_shapes(chans: int, pools: int, size: int) -> collections.Counter:
    """(spatial size, in, out) -> count, for every 3x3 conv of the U-Net."""
    shapes = collections.Counter()
    ch, s = chans, size
    shapes[s, 1, ch] += 1
    shapes[s, ch, ch] += 1
    for _ in range(pools - 1):
        s //= 2
        shapes[s, ch, 2 * ch] += 1
        shapes[s, 2 * ch, 2 * ch] += 1
        ch *= 2
    s //= 2
    shapes[s, ch, 2 * ch] += 1
    shapes[s, 2 * ch, 2 * ch] += 1
    for _ in range(pools):
        shapes[2 * s, 2 * ch, ch] += 1
        shapes[2 * s, ch, ch] += 1
        s, ch = 2 * s, ch // 2
    return shapes


def _median_ms(fn, repeats: int) -> float:
    return 1e3 * _timed(fn, repeats)


def jax_timers(conv):
    import jax

    forward = jax.jit(conv)
    data = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    weights = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    return lambda x, w, g, r: (
        _median_ms(lambda: forward(x, w).block_until_ready(), r),
        _median_ms(lambda: data(x, w, g).block_until_ready(), r),
        _median_ms(lambda: weights(x, w, g).block_until_ready(), r))


def torch_timer(x, w, g, repeats):
    import torch

    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    gt = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous()
    conv_backward = torch.ops.aten.convolution_backward

    def backward(mask):
        return lambda: conv_backward(gt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    with torch.no_grad():
        return (_median_ms(lambda: torch.nn.functional.conv2d(xt, wt, padding=1), repeats),
                _median_ms(backward([True, False, False]), repeats),
                _median_ms(backward([False, True, False]), repeats))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chans", type=int, default=32)
    p.add_argument("--pools", type=int, default=4)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from fnaf_jax.kernels import onednn

    def xla_conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=jax.lax.Precision.HIGHEST)

    sides = {"XLA": jax_timers(xla_conv)}
    if onednn.unavailable_reason() is None:
        sides["oneDNN"] = jax_timers(onednn.conv_same)
    rng = np.random.default_rng(0)
    names = list(sides) + ([] if args.no_torch else ["PyTorch"])
    total = {name: np.zeros(3) for name in names}
    print("| size, in -> out (x count) | " + " | ".join(f"{n} fwd / dx / dw ms" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for (s, ci, co), count in layer_shapes(args.chans, args.pools, args.size).items():
        x = rng.normal(size=(1, s, s, ci)).astype(np.float32)
        w = rng.normal(size=(3, 3, ci, co)).astype(np.float32)
        g = rng.normal(size=(1, s, s, co)).astype(np.float32)
        xj, wj, gj = map(jnp.asarray, (x, w, g))
        row = {name: timer(xj, wj, gj, args.repeats) for name, timer in sides.items()}
        if not args.no_torch:
            row["PyTorch"] = torch_timer(x, w, g, args.repeats)
        for name in names:
            total[name] += count * np.array(row[name])
        cells = " | ".join("{:.1f} / {:.1f} / {:.1f}".format(*row[n]) for n in names)
        print(f"| {s}, {ci} -> {co} (x{count}) | {cells} |", flush=True)
    cells = " | ".join("**{:.0f} / {:.0f} / {:.0f}**".format(*total[n]) for n in names)
    print(f"| per train step | {cells} |")


if __name__ == "__main__":
    main()
