"""Throughput of the data pipeline: SliceDataset items/s and make_loader batches/s.

    python benchmarks/dataset_throughput.py [--data DIR] [--runs 5] [--batch-size 8]
                                            [--workers 0 2]

Without ``--data`` it writes random 640 x 368 k-space volumes in fastMRI format
(uncompressed, like real files; content does not matter for speed) to a temporary folder. Each figure is the median over ``--runs`` passes over the data set
(the first pass also warms the OS file cache). Items use the "unet" transform with
4x random masks seeded by file name, as validation does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from fnaf_jax.data.fastmri import SliceDataset
from fnaf_jax.data.header import header_xml
from fnaf_jax.data.loader import make_loader
from fnaf_jax.masks import RandomMaskFunc


def write_random_volumes(out_dir, n_volumes: int, n_slices: int, width: int = 368) -> None:
    rng = np.random.default_rng(0)
    for v in range(n_volumes):
        shape = (n_slices, 640, width)
        kspace = (rng.standard_normal(shape, np.float32)
                  + 1j * rng.standard_normal(shape, np.float32)).astype(np.complex64)
        with h5py.File(Path(out_dir) / f"file{1000001 + v}.h5", "w") as f:
            f["kspace"] = kspace
            f["reconstruction_esc"] = rng.random((n_slices, 320, 320), np.float32)
            f["ismrmrd_header"] = np.bytes_(header_xml((640, width, 1), (320, 320, 1)))
            f.attrs.update(acquisition="CORPD_FBK", max=1.0)


def median_rate(fn, count: int, runs: int) -> float:
    """Median of ``count / seconds`` over ``runs`` calls of ``fn``."""
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def run(data_dir, runs: int, batch_size: int, workers: list[int]) -> None:
    ds = SliceDataset(data_dir, mask_func=RandomMaskFunc([0.08], [4]), transform="unet")
    rows, cols = ds.volumes[0].kspace_shape
    print(f"{ds}; k-space {rows} x {cols}")

    def read_all():
        for i in range(len(ds)):
            ds[i]

    rate = median_rate(read_all, len(ds), runs)
    print(f"SliceDataset unet transform: {rate:8.1f} slices/s ({1e3 / rate:.1f} ms/slice)")
    for num_workers in workers:
        loader = make_loader(ds, batch_size, shuffle=True, seed=0, num_workers=num_workers)
        firsts, rates = [], []
        for _ in range(runs):
            first, steady = epoch_timing(loader)
            firsts.append(first)
            rates.append(steady)
        rate = statistics.median(rates)
        print(f"make_loader batch {batch_size}, {num_workers} workers: {rate:8.2f} batches/s "
              f"({rate * batch_size:.1f} slices/s) after the first batch; first batch "
              f"{statistics.median(firsts):.2f} s (worker start-up)")


def epoch_timing(loader) -> tuple[float, float]:
    """(seconds to the first batch, batches/s over the rest of the epoch)."""
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter()
    rest = sum(1 for _ in iterator)
    return first - start, rest / (time.perf_counter() - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder of fastMRI .h5 files (default: synthetic)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--volumes", type=int, default=2, help="generated volumes")
    parser.add_argument("--slices", type=int, default=24, help="generated slices each")
    args = parser.parse_args()
    if args.data:
        run(args.data, args.runs, args.batch_size, args.workers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_random_volumes(tmp, args.volumes, args.slices)
        run(tmp, args.runs, args.batch_size, args.workers)


if __name__ == "__main__":
    main()
