"""Throughput of the synthetic knee generator (``fnaf_jax.data.synthetic``).

Times ``make_volume`` (anatomy, lesions, physics, target; in memory) and, with
``--write``, ``write_dataset`` to a temporary folder. Prints slices/s (wall clock) and the
CPU time per slice (less sensitive to other jobs on a shared machine), medians of
``--repeats`` runs after one warm-up run (the warm-up pays JAX's one-off compilation of
the FFTs for this shape). Not a test: run it by hand.

    python benchmarks/synth_throughput.py --volumes 4 --slices 30 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from fnaf_jax.data import synthetic


def run_once(volumes: int, slices: int, width: int, lesions: bool, write: bool, seed: int):
    """Wall-clock and CPU seconds (this process, all threads) of one run."""
    start, cpu = time.perf_counter(), time.process_time()
    if write:
        with tempfile.TemporaryDirectory() as tmp:
            synthetic.write_dataset(tmp, volumes, slices, width, seed, lesions)
    else:
        for i in range(volumes):
            synthetic.make_volume(i, slices, width, seed, lesions)
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volumes", type=int, default=4)
    p.add_argument("--slices", type=int, default=30)
    p.add_argument("--width", type=int, default=368)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lesions", action="store_true")
    p.add_argument("--write", action="store_true", help="include writing the HDF5 files")
    args = p.parse_args(argv)

    run_once(1, args.slices, args.width, args.lesions, False, seed=999)  # warm-up
    runs = [run_once(args.volumes, args.slices, args.width, args.lesions, args.write, seed=r)
            for r in range(args.repeats)]
    n = args.volumes * args.slices
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"{n} slices of 640x{args.width} per run, {args.repeats} runs: "
          f"median {wall:.2f} s wall -> {n / wall:.1f} slices/s; "
          f"CPU {1000 * cpu / n:.0f} ms/slice "
          f"(wall per run: {', '.join(f'{r[0]:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()
