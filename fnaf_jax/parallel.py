"""Device mesh for data parallelism: batch sharded on axis 0, parameters replicated.

One 1-D mesh axis, ``"data"``, spans every device of every process. On a single device
the shardings are trivial and everything behaves like plain ``jax.jit``. Multi-host runs
call ``maybe_initialize_distributed()`` first; it initialises ``jax.distributed`` when
the environment describes a multi-process job (``JAX_COORDINATOR_ADDRESS`` with
``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``, or a cluster JAX auto-detects such as SLURM).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fnaf_jax.errors import ConfigError

DATA_AXIS = "data"
_initialized = False


def maybe_initialize_distributed() -> bool:
    """Initialise ``jax.distributed`` once when the environment asks for several processes."""
    global _initialized
    if _initialized:
        return True
    env = os.environ
    explicit = "JAX_COORDINATOR_ADDRESS" in env and int(env.get("JAX_NUM_PROCESSES", "1")) > 1
    slurm = int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env
    if not (explicit or slurm):
        return False
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in env:
        # CPU processes need a collectives backend to all-reduce across hosts (gloo ships
        # with jaxlib); accelerators use their own (NCCL, ICI) whatever this says
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env.get("JAX_PROCESS_ID", "0")),
        )
    else:
        jax.distributed.initialize()  # cluster auto-detection (SLURM, ...)
    _initialized = True
    return True


def make_mesh(devices=None) -> Mesh:
    """A 1-D ``"data"`` mesh over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split across the mesh, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """The global batch must split evenly over the mesh's devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(
            f"{what}={batch_size} does not divide evenly over {n} devices; "
            f"use a multiple of {n} (or fewer devices, e.g. CUDA_VISIBLE_DEVICES)")


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Place a host batch (dict of numpy arrays, same on every process) on the mesh.

    Each device receives its slice of axis 0. Every process passes the whole global batch
    (the data order is a pure function of the seed), so this works multi-host too.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            raise ConfigError(f"batch key {key!r} is a scalar; batches need a leading axis")
        check_batch_size(value.shape[0], mesh, what=f"batch[{key!r}] leading size")
        out[key] = jax.make_array_from_callback(value.shape, sharding, lambda idx, v=value: v[idx])
    return out


def replicate(tree, mesh: Mesh):
    """Copy a pytree of host-identical arrays onto every device of the mesh."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):  # multi-host: each process supplies its (identical) copy
        if _is_key(x):
            return jax.device_put(x, sharding)
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return jax.tree.map(put, tree)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
