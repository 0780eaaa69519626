"""i-RIM training-step memory and time vs number of steps: memory-free vs plain autodiff.

For each number of i-RIM steps and each gradient mode, one training step (SSIM loss of
``IrimTask``, gradients, Adam update) is compiled; XLA's memory analysis gives the
temporary bytes of the compiled step (activations plus parameter-gradient and optimizer
temporaries), and the step is timed; a second column gives the temporary bytes of the
gradient with respect to the initial state through the core alone (activations only). One run,
table printed. Never run as a test.

    python benchmarks/irim_memory.py                 # 64x64 crops, batch 2, width 16
    python benchmarks/irim_memory.py --size 368 --width 64 --batch 1   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fnaf_jax.models.irim import IRIM
from fnaf_jax.train.irim_task import IrimTask


def make_batch(batch: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = (
        rng.normal(size=(batch, size, size)) + 1j * rng.normal(size=(batch, size, size))
    ).astype(np.complex64)
    mask = (rng.random((batch, size)) < 0.3).astype(np.float32)
    c = min(320, size)
    target = np.abs(rng.normal(size=(batch, c, c))).astype(np.float32)
    return {
        "y": jnp.asarray(y),
        "mask": jnp.asarray(mask),
        "target": jnp.asarray(target),
        "max_value": jnp.asarray(target.max(axis=(1, 2))),
        "metadata": jnp.asarray(np.eye(8, dtype=np.float32)[np.arange(batch) % 8]),
    }


def small_irim(n_steps: int, memory_free: bool, width: int, multiplicity: int) -> IRIM:
    """The benchmarked i-RIM: 4 coupling layers of ``width`` channels per step."""
    return IRIM(
        n_steps=n_steps,
        n_hidden=[width] * 4,
        n_network_hidden=[width, 2 * width, 2 * width, width],
        dilations=[1, 2, 2, 1],
        multiplicity=multiplicity,
        memory_free=memory_free,
        rngs=nnx.Rngs(0),
    )


def compiled_step(
    n_steps: int, memory_free: bool, width: int, multiplicity: int, batch: dict
):
    task = IrimTask(crop=batch["y"].shape[-1])
    model = small_irim(n_steps, memory_free, width, multiplicity)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = task.optimizer()
    opt_state = tx.init(params)

    def step(params, opt_state, batch):
        def loss_fn(p):
            return task.loss(nnx.merge(graphdef, p), batch, None)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    compiled = (
        jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, batch).compile()
    )
    return compiled, params, opt_state


def input_grad_temp_bytes(n_steps, memory_free, width, multiplicity, batch) -> int:
    """Temporary bytes of d(loss)/d(initial state) through the core alone: activation
    memory without the parameter-gradient buffers."""
    model = small_irim(n_steps, memory_free, width, multiplicity)
    graphdef, state = nnx.split(model)
    ys, mask = batch["y"], batch["mask"]
    x0 = model.initial_state(ys, batch["metadata"])

    def loss(x0, state):
        return jnp.sum(nnx.merge(graphdef, state).run_core(x0, ys, mask) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(x0, state).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def measure(n_steps, memory_free, width, multiplicity, batch, repeats):
    t0 = time.perf_counter()
    compiled, params, opt_state = compiled_step(
        n_steps, memory_free, width, multiplicity, batch
    )
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = (
        getattr(mem, "temp_size_in_bytes", float("nan"))
        if mem is not None
        else float("nan")
    )
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float((cost or {}).get("flops", float("nan")))
    params, opt_state, loss = compiled(params, opt_state, batch)  # warm-up
    jax.block_until_ready(loss)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, batch)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    return temp, flops, float(np.median(times)), compile_s


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="square image (crop) size")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--width", type=int, default=16, help="state channels (n_hidden)"
    )
    parser.add_argument("--multiplicity", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    batch = make_batch(args.batch, args.size)
    print(
        f"# i-RIM training step on {jax.devices()[0].device_kind}: batch {args.batch}, "
        f"{args.size}x{args.size}, width {args.width}, 4 layers/step, "
        f"multiplicity {args.multiplicity}; temp = XLA temporary bytes of the compiled step"
    )
    print(
        "| steps | gradients   | step temp MiB | core input-grad temp MiB | step GFLOP "
        "| step ms | compile s |"
    )
    print(
        "|------:|-------------|--------------:|-------------------------:|-----------:"
        "|--------:|----------:|"
    )
    for n_steps in args.steps:
        for memory_free in (True, False):
            temp, flops, step_s, compile_s = measure(
                n_steps, memory_free, args.width, args.multiplicity, batch, args.repeats
            )
            core = input_grad_temp_bytes(
                n_steps, memory_free, args.width, args.multiplicity, batch
            )
            mode = "memory-free" if memory_free else "autodiff"
            print(
                f"| {n_steps:5d} | {mode:11s} | {temp / 2**20:13.2f} | {core / 2**20:24.2f} "
                f"| {flops / 1e9:10.2f} | {1e3 * step_s:7.1f} | {compile_s:9.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
