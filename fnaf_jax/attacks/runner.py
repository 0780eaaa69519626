"""Attack a dataset slice by slice and append one JSON line per slice (resumable).

``run_attack(model_or_fn, dataset, out, ...)`` attacks any recon_fn (bring your own
model); ``attack_folder(AttackJob(...))`` is ``fnaf attack``: it loads the checkpoint (or
a network-free baseline) and the data folder first.

The record schema, reading and resume checks live in ``fnaf_jax.attacks.records``.
Randomness is per slice (a key folded from the seed and the slice's file/slice name), so
a resumed run, or a run with another batch size, draws the same features.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import parallel
from fnaf_jax.attacks.config import (
    DEFAULT_ATTACK,
    AttackConfig,
    summarize,
)
from fnaf_jax.attacks.controls import ControlCache
from fnaf_jax.attacks.finite_diff import finite_diff
from fnaf_jax.attacks.kspace import METHODS as KSPACE_METHODS
from fnaf_jax.attacks.kspace import kspace_attack
from fnaf_jax.attacks.pgd import pgd
from fnaf_jax.attacks.random_search import random_search
from fnaf_jax.attacks.records import (
    attack_record,
    candidate_from_record,
    check_same_run,
    kspace_record,
    open_for_append,
    read_records,
    run_settings,
)
from fnaf_jax.data.header import metadata_or_zeros
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.features import pinned_prng
from fnaf_jax.fileio import WriteError, describe_os_error, exclusive_lock
from fnaf_jax.masks import DEFAULT_MASK, MaskSpec, file_mask
from fnaf_jax.objective import check_recon, make_scorer

METHODS = {"rs": random_search, "fd": finite_diff, "pgd": pgd,
           **{m: functools.partial(kspace_attack, method=m) for m in KSPACE_METHODS}}


def model_name_for(checkpoint) -> str:
    """A model's name in the records: its checkpoint folder, or the training run's folder
    for ``fnaf train`` outputs (``RUN/best``, ``RUN/last``)."""
    path = Path(checkpoint).absolute()
    return path.parent.name if path.name in ("best", "last") else path.name


def default_model_name(model_or_fn) -> str:
    """A name for the records when none is given: the function's or the model class's."""
    return getattr(model_or_fn, "__name__", None) or type(model_or_fn).__name__


def slice_key(seed: int, fname: str, slice_num: int) -> jax.Array:
    """PRNG key of one slice: independent of batch composition and order."""
    tag = zlib.crc32(f"{os.path.basename(fname)}/{int(slice_num)}".encode()) & 0x7FFFFFFF
    with pinned_prng():
        return jax.random.fold_in(jax.random.key(seed), tag)


def batch_keys(seed: int, batch: dict) -> jax.Array:
    """The ``slice_key`` of every slice of a host batch (``make_batch``), stacked (B,)."""
    return jnp.stack([slice_key(seed, f, s) for f, s in zip(batch["fname"], batch["slice_num"], strict=True)])


def make_batch(items: list[dict], spec: MaskSpec, image_shape) -> dict:
    """Host batch for the attacks: ``target_raw``, FNAF ``mask`` (B, W), ``metadata``, names."""
    ys, masks, metas = [], [], []
    for item in items:
        where = f"{item.get('fname', '?')} slice {item.get('slice_num', '?')}"
        y = item.get("target_raw")
        if y is None:
            raise DataError(f"{where}: no ground truth image (test file?): cannot attack it")
        y = np.asarray(y, np.float32)
        if y.shape != tuple(image_shape):
            raise DataError(f"{where}: ground truth is {y.shape}, the attack expects {tuple(image_shape)}")
        ys.append(y)
        masks.append(file_mask(spec, item["fname"], y.shape[-1]))
        metas.append(metadata_or_zeros(item.get("metadata")))
    return {
        "target_raw": np.stack(ys),
        "mask": np.stack(masks),
        "metadata": np.stack(metas),
        "fname": [os.path.basename(it["fname"]) for it in items],
        "slice_num": [int(it["slice_num"]) for it in items],
    }


def _transfer_attack(sources: dict, cfg: AttackConfig):
    """An attack that re-scores each slice's source feature (same mask) on this model."""

    def attack(score_fn, batch, keys, _cfg):
        cands = [candidate_from_record(sources[(f, s)]) for f, s in zip(batch["fname"], batch["slice_num"], strict=True)]
        p = {len(c.values[0, 0]) for c in cands}
        if len(p) != 1:
            raise DataError(f"transfer source mixes feature sizes {sorted(p)}; cannot batch them")
        stacked = jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *cands)
        return summarize(score_fn(batch, stacked), stacked, cfg)

    return attack


def _mesh():
    """A data mesh over all devices (of every process) when there are several, else None."""
    if jax.device_count() == 1:
        return None
    return parallel.make_mesh()


def _shard(batch: dict, keys, mesh):
    """Spread a batch's arrays and keys over the mesh's devices (axis 0). Every process
    holds the whole batch (the same slices in the same order) and places its share."""
    if mesh is None:
        return batch, keys
    arrays = {k: batch[k] for k in ("target_raw", "mask", "metadata")}
    data = parallel.shard_batch({**arrays, "key_data": np.asarray(jax.random.key_data(keys))}, mesh)
    keys = jax.random.wrap_key_data(data.pop("key_data"), impl=jax.random.key_impl(keys))
    return {**batch, **data}, keys


def _fetch(result):
    """The whole result on this host (multi-host: gathered from every process)."""
    if jax.process_count() == 1:
        return jax.device_get(result)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(result, tiled=True)


def run_attack(model_or_fn, dataset, out_path, *, method: str = "rs", spec: MaskSpec = DEFAULT_MASK,
               cfg: AttackConfig = DEFAULT_ATTACK, batch_size: int = 8, limit: int | None = None,
               seed: int = 0, model_name: str = "", checkpoint: str = "", role: str | None = None,
               transfer_from=None, progress: bool = True, controls: ControlCache | None = None) -> int:
    """Attack the first ``limit`` slices of ``dataset``; append records to ``out_path``.

    Slices already in ``out_path`` are skipped (resume); each batch is appended and
    flushed as soon as it is done. Returns the number of new records. ``controls`` shares
    each slice's no-feature output with the other runs given the same cache
    (``fnaf_jax.attacks.controls``).
    """
    if method not in METHODS:
        raise ConfigError(f"attack method {method!r} unknown; choose one of {sorted(METHODS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1 (or unset for every slice), got {limit}")
    check_recon(model_or_fn, cfg.features.image_shape)  # before any file is touched
    model_name = model_name or default_model_name(model_or_fn)
    out_path = Path(out_path)
    parallel.maybe_initialize_distributed()
    # one writer per results file: process 0 (the other hosts of a multi-host run compute)
    lock = (exclusive_lock(out_path, "results file") if jax.process_index() == 0
            else contextlib.nullcontext())
    with lock:
        return _run_locked(model_or_fn, dataset, out_path, method, spec, cfg, batch_size, limit, seed,
                           model_name, checkpoint, role, transfer_from, progress, controls)


def _run_locked(model_or_fn, dataset, out_path, method, spec, cfg, batch_size, limit, seed, model_name,
                checkpoint, role, transfer_from, progress, controls) -> int:
    existing = read_records(out_path) if out_path.is_file() else []
    done = {(r["file"], r["slice"]) for r in existing}
    n = len(dataset) if limit is None else min(limit, len(dataset))
    extra = {"model": model_name, "role": role, "checkpoint": checkpoint, "seed": seed}
    attack = METHODS[method]
    sources = None
    if transfer_from is not None and method in KSPACE_METHODS:
        raise ConfigError(f"--transfer-from re-scores FNAF features; it does not apply to {method}")
    if transfer_from is not None:
        sources = {(r["file"], r["slice"]): r for r in read_records(transfer_from)}
        first = next(iter(sources.values()), None)
        if first is None:
            raise DataError(f"{transfer_from}: no records to transfer")
        extra.update(transfer_from=str(transfer_from), source_model=first.get("model", ""),
                     source_role=first.get("role"))
        method = first.get("method", method)
        # Same masks as the source run: its acceleration, centre fraction and mask type.
        spec = MaskSpec(int(first.get("acceleration", spec.acceleration)),
                        first.get("center_fraction", spec.center_fraction),
                        first.get("mask_type", spec.mask_type))
        attack = _transfer_attack(sources, cfg)
    settings = run_settings(method, spec, cfg, model=model_name, checkpoint=checkpoint, seed=seed,
                                    transfer_from=transfer_from)
    check_same_run(out_path, existing, settings)
    extra["settings"] = settings

    todo = []
    for index in range(n):
        key = _slice_name(dataset, index)
        if key in done or (sources is not None and key not in sources):
            continue
        todo.append(index)

    mesh = _mesh()
    if mesh is not None:
        parallel.check_batch_size(batch_size, mesh)
    scorer = make_scorer(model_or_fn, cfg.objective, mesh=mesh)
    record = kspace_record if method in KSPACE_METHODS else attack_record
    bar = _progress(len(todo), progress)
    written = 0
    fh = None  # opened with the first record: a run that fails before it leaves no file
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            items = [dataset[i] for i in chunk]
            real = len(items)
            items += [items[-1]] * (batch_size - real)  # fixed batch shape: one compilation
            batch = make_batch(items, spec, cfg.features.image_shape)
            keys = batch_keys(seed, batch)
            device_batch, keys = _shard(batch, keys, mesh)
            if controls is not None:
                device_batch = _with_control(controls, (model_name, checkpoint), spec, batch, device_batch,
                                             scorer, mesh)
            result = attack(scorer, device_batch, keys, cfg)
            result = _fetch(result)
            if jax.process_index() == 0:
                lines = "".join(json.dumps(record(result, i, batch, method=method, spec=spec, cfg=cfg,
                                                         extra=extra)) + "\n" for i in range(real))
                if fh is None:
                    fh = open_for_append(out_path)
                fh.write(lines)
                fh.flush()
            written += real
            bar.update(real)
    except OSError as exc:
        raise WriteError(f"{describe_os_error(exc, out_path)}; the {len(existing) + written} records "
                         "written before are kept, re-run to resume") from None
    finally:
        if fh is not None:
            fh.close()
        bar.close()
    return written


def _with_control(controls: ControlCache, model: tuple, spec: MaskSpec, batch: dict, device_batch: dict,
                  scorer, mesh) -> dict:
    """``device_batch`` with each slice's no-feature output, from ``controls`` when it holds
    them all, else computed (one model image per slice) and stored there."""
    held = controls.lookup(model, spec, batch)
    if held is None:
        clean = scorer.clean_output(device_batch)
        controls.store(model, spec, batch, _fetch(clean))
    elif mesh is not None:
        clean = parallel.shard_batch({"clean_output": held}, mesh)["clean_output"]
    else:
        clean = held
    return {**device_batch, "clean_output": clean}


def _slice_name(dataset, index: int) -> tuple[str, int]:
    """(file name, slice) of a dataset item, without reading it when the dataset can tell."""
    if hasattr(dataset, "locate"):
        volume, slice_num = dataset.locate(index)
        return os.path.basename(volume.fname), int(slice_num)
    item = dataset[index]
    return os.path.basename(item["fname"]), int(item["slice_num"])


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="slice", disable=not enabled or jax.process_index() != 0, desc="attack")


@dataclasses.dataclass(frozen=True)
class AttackJob:
    """One ``fnaf attack`` run: what to attack, on which data, with which settings."""

    data: str  # folder (or file) of fastMRI .h5 volumes
    out: str  # results file (JSON lines), appended
    checkpoint: str | None = None  # model checkpoint folder ...
    baseline: str | None = None  # ... or a network-free recon_fn (``BASELINES``)
    method: str = "rs"
    mask: MaskSpec = DEFAULT_MASK
    attack: AttackConfig = DEFAULT_ATTACK
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    name: str | None = None  # model name in the records (default: from the checkpoint)
    role: str | None = None  # which of the paper's models this is (reports)
    transfer_from: str | None = None
    skip_bad: bool = False

    def __post_init__(self):
        if (self.checkpoint is None) == (self.baseline is None):
            raise ConfigError("an attack needs exactly one of a checkpoint and a baseline")


def shared_controls(jobs) -> ControlCache | None:
    """One ``ControlCache`` for ``jobs`` (one model, one data folder) when some mask has
    several of them to share it; None when no job could read another's controls."""
    specs = [job.mask for job in jobs]
    return ControlCache() if len(set(specs)) < len(specs) else None


def attack_folder(job: AttackJob, progress: bool = True, controls: ControlCache | None = None) -> int:
    """``fnaf attack``: run ``job``; returns the number of new records. ``controls``: as for
    ``run_attack`` (one cache per data folder)."""
    from fnaf_jax.data.fastmri import SliceDataset

    job.mask.mask_func()  # bad mask options fail here, before the model loads
    if job.baseline is not None:
        from fnaf_jax.models.baselines import BASELINES

        if job.baseline not in BASELINES:
            raise ConfigError(f"unknown baseline {job.baseline!r}; known: {', '.join(BASELINES)}")
        model, name, checkpoint = BASELINES[job.baseline], job.baseline, ""
    else:
        from fnaf_jax.models.store import load_model

        model, _ = load_model(job.checkpoint)
        model.eval()
        name, checkpoint = model_name_for(job.checkpoint), str(job.checkpoint)
    dataset = SliceDataset(job.data, transform="raw", skip_bad=job.skip_bad)
    return run_attack(model, dataset, job.out, method=job.method, spec=job.mask, cfg=job.attack,
                      batch_size=job.batch_size, limit=job.limit, seed=job.seed,
                      model_name=job.name or name, checkpoint=checkpoint, role=job.role,
                      transfer_from=job.transfer_from, progress=progress, controls=controls)
