"""Attack a dataset slice by slice and write one JSON line per slice (resumable).

A record (``attack_record``) holds: ``file``, ``slice``, ``method`` ("rs" | "fd"),
``acceleration``, ``center_fraction``, ``mask_type``, ``mask_seed`` (the file name that
seeds the column mask, fastMRI's validation convention), ``worst_loss``, ``hit``, ``ip``,
``accepted``, ``num_accepted``/``num_scored`` (candidates with IP >= threshold / scored),
``location`` [row, col], ``feature`` {``pixels`` [[row, col], ...], ``values``}, the
controls of the chosen feature (``nofeature_loss``, ``eraser_loss``, ``lost_fraction``),
``scored`` (per-candidate lists ``loss``, ``ip``, ``nofeature``, ``eraser``, ``lost`` in
scoring order, from which the tables derive the control and random-feature rows),
``model``, ``checkpoint``, ``seed``, ``gamma``, ``ip_threshold`` and, for transfer runs,
``transfer_from`` and ``source_model``.

Randomness is per slice (a key folded from the seed and the slice's file/slice name), so
a resumed run, or a run with another batch size, draws the same features.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import masks as masks_mod
from fnaf_jax.attacks.config import (
    DEFAULT_ATTACK,
    AttackConfig,
    AttackResult,
    summarize,
)
from fnaf_jax.attacks.finite_diff import finite_diff
from fnaf_jax.attacks.random_search import random_search
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.features import Candidates, pinned_prng
from fnaf_jax.fileio import WriteError, describe_os_error, exclusive_lock
from fnaf_jax.objective import check_recon, make_scorer

METHODS = {"rs": random_search, "fd": finite_diff}


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """The (320,) column mask of the attacked image: type, acceleration, centre fraction."""

    acceleration: int = 4
    center_fraction: float | None = None  # None: fastMRI's pairing (4x 0.08, 8x 0.04)
    mask_type: str = "random"

    def fraction(self) -> float:
        if self.center_fraction is not None:
            return float(self.center_fraction)
        return masks_mod.default_center_fraction(self.acceleration)

    def mask_func(self):
        return masks_mod.create_mask_for_mask_type(self.mask_type, [self.fraction()], [self.acceleration])


DEFAULT_MASK = MaskSpec()


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


def file_mask(spec: MaskSpec, fname: str, num_cols: int, _cache: dict = {}) -> np.ndarray:  # noqa: B006
    """Column mask for every slice of ``fname``, seeded by the file name (cached)."""
    key = (spec, os.path.basename(fname), num_cols)
    if key not in _cache:
        mask, _ = masks_mod.column_mask(spec.mask_func(), num_cols, seed=masks_mod.file_seed(fname))
        _cache[key] = np.asarray(mask, np.float32)
    return _cache[key]


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
        meta = item.get("metadata")
        metas.append(np.zeros(8, np.float32) if meta is None else np.asarray(meta, np.float32))
    return {
        "target_raw": np.stack(ys),
        "mask": np.stack(masks),
        "metadata": np.stack(metas),
        "fname": [os.path.basename(it["fname"]) for it in items],
        "slice_num": [int(it["slice_num"]) for it in items],
    }


def attack_record(result: AttackResult, i: int, batch: dict, *, method: str, spec: MaskSpec,
                  cfg: AttackConfig, extra: dict) -> dict:
    """The JSON record of sample ``i`` of an attacked batch (see the module docstring)."""
    cand = jax.tree.map(lambda a: np.asarray(a[i, 0]), result.candidate)
    pixels = cand.offsets + cand.location
    chosen = int(result.index[i])
    return {
        "file": batch["fname"][i],
        "slice": batch["slice_num"][i],
        "method": method,
        "acceleration": spec.acceleration,
        "center_fraction": spec.fraction(),
        "mask_type": spec.mask_type,
        "mask_seed": batch["fname"][i],
        "worst_loss": float(result.worst_loss[i]),
        "hit": bool(result.hit[i]),
        "ip": float(result.ip[i]),
        "accepted": bool(result.accepted[i]),
        "num_accepted": int(result.num_accepted[i]),
        "num_scored": int(result.losses.shape[1]),
        "location": [int(v) for v in cand.location],
        "feature": {"pixels": pixels.astype(int).tolist(), "values": [float(v) for v in cand.values]},
        "nofeature_loss": _num(result.nofeature[i, chosen]),
        "eraser_loss": _num(result.eraser[i, chosen]),
        "lost_fraction": _num(result.lost[i, chosen]),
        "scored": {name: [_num(v) for v in np.asarray(getattr(result, field)[i])]
                   for name, field in SCORED_FIELDS},
        "gamma": cfg.gamma,
        "ip_threshold": cfg.ip_threshold,
        "box_size": cfg.features.box_size,
        **extra,
    }


#: per-candidate lists in a record's ``scored``, in scoring order (RS: draw order)
SCORED_FIELDS = (("loss", "losses"), ("ip", "ips"), ("nofeature", "nofeature"),
                 ("eraser", "eraser"), ("lost", "lost"))


def _num(value) -> float | None:
    """A float for JSON; NaN (a lost fraction with nothing to lose) becomes null."""
    value = float(value)
    return None if np.isnan(value) else value


def candidate_from_record(record: dict) -> Candidates:
    """A (1, 1, P, ...) candidate rebuilt from a record's ``feature`` and ``location``."""
    try:
        pixels = np.asarray(record["feature"]["pixels"], np.int32)
        values = np.asarray(record["feature"]["values"], np.float32)
        location = np.asarray(record["location"], np.int32)
    except (KeyError, TypeError) as exc:
        raise DataError(f"attack record of {record.get('file')} slice {record.get('slice')}: "
                        f"no usable feature ({exc})") from None
    if pixels.ndim != 2 or pixels.shape[1] != 2 or values.shape != (len(pixels),) or location.shape != (2,):
        raise DataError(f"attack record of {record.get('file')} slice {record.get('slice')}: malformed feature")
    return Candidates(jnp.asarray(pixels - location)[None, None], jnp.asarray(location)[None, None],
                      jnp.asarray(values)[None, None])


def read_records(path) -> list[dict]:
    """Records of a results file, checked; a torn last line (a killed run) is ignored.

    Every line must be a JSON object with ``file`` and ``slice`` (an ``fnaf attack``
    record); a torn last line is only tolerated after at least one valid record, so a
    file that never held records (a text file, a training ``metrics.jsonl``) is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such results file")
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not an fnaf attack results file (not text)") from None
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) and records:
                break  # interrupted while writing its last line
            raise DataError(f"{path}:{n}: not an fnaf attack results file (not a JSON line)") from None
        if not isinstance(record, dict) or "file" not in record or "slice" not in record:
            raise DataError(f"{path}:{n}: not an fnaf attack results file (the line has no 'file' and 'slice')")
        records.append(record)
    return records


def _cut_torn_line(path: Path) -> None:
    """Drop a torn final line left by a killed run (after ``read_records`` accepted the rest)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


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
    """A data mesh over all devices when there are several, else None (plain jit)."""
    if jax.device_count() == 1:
        return None
    from fnaf_jax import parallel

    return parallel.make_mesh()


def _shard(batch: dict, keys, mesh):
    """Spread a batch's arrays and keys over the mesh's devices (axis 0)."""
    if mesh is None:
        return batch, keys
    from fnaf_jax import parallel

    arrays = {k: batch[k] for k in ("target_raw", "mask", "metadata")}
    keys = jax.device_put(keys, parallel.batch_sharding(mesh))
    return {**batch, **parallel.shard_batch(arrays, mesh)}, keys


def run_attack(model_or_fn, dataset, out_path, *, method: str = "rs", spec: MaskSpec = DEFAULT_MASK,
               cfg: AttackConfig = DEFAULT_ATTACK, batch_size: int = 8, limit: int | None = None,
               seed: int = 0, model_name: str = "", checkpoint: str = "", role: str | None = None,
               transfer_from=None, progress: bool = True) -> int:
    """Attack the first ``limit`` slices of ``dataset``; append records to ``out_path``.

    Slices already in ``out_path`` are skipped (resume); each batch is appended and
    flushed as soon as it is done. Returns the number of new records.
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
    with exclusive_lock(out_path, "results file"):
        return _run_locked(model_or_fn, dataset, out_path, method, spec, cfg, batch_size, limit, seed,
                           model_name, checkpoint, role, transfer_from, progress)


def run_settings(method: str, spec: MaskSpec, cfg: AttackConfig, *, model: str, checkpoint: str,
                 seed: int, transfer_from=None) -> dict:
    """Everything that defines a results file's numbers (its run identity)."""
    f, o = cfg.features, cfg.objective
    def where(path):  # the same file however it was spelled on the command line
        return str(Path(path).resolve()) if path else None

    return {"method": method, "model": model, "checkpoint": where(checkpoint) or "",
            "acceleration": spec.acceleration,
            "center_fraction": spec.fraction(), "mask_type": spec.mask_type, "k": cfg.k,
            "fd_iterations": cfg.fd_iterations, "fd_step": cfg.fd_step, "fd_lr": cfg.fd_lr,
            "features": {"num_pixels": f.num_pixels, "shape": f.shape, "box_size": f.box_size,
                         "intensity": f.intensity, "constant_value": f.constant_value},
            "reduction": o.reduction, "radius": o.radius, "seed": seed, "gamma": cfg.gamma,
            "ip_threshold": cfg.ip_threshold, "transfer_from": where(transfer_from)}


def _check_same_run(out_path: Path, existing: list[dict], settings: dict) -> None:
    """Refuse to append to a file made with other settings, naming the first difference."""
    if not existing:
        return
    theirs = existing[0].get("settings")
    if theirs is None:  # a file from before run identities were recorded: the old check
        theirs = {k: existing[0].get(k) for k in ("method", "acceleration", "model")}
    for key, value in settings.items():
        if key in theirs and theirs[key] != value:
            raise ConfigError(f"{out_path} holds results of another run: {key} is {theirs[key]!r} there, "
                              f"{value!r} here; resume only the same run, or choose another --out")


def _run_locked(model_or_fn, dataset, out_path, method, spec, cfg, batch_size, limit, seed, model_name,
                checkpoint, role, transfer_from, progress) -> int:
    existing = read_records(out_path) if out_path.is_file() else []
    done = {(r["file"], r["slice"]) for r in existing}
    n = len(dataset) if limit is None else min(limit, len(dataset))
    extra = {"model": model_name, "role": role, "checkpoint": checkpoint, "seed": seed}
    attack = METHODS[method]
    sources = None
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
    _check_same_run(out_path, existing, settings)
    extra["settings"] = settings

    todo = []
    for index in range(n):
        key = _slice_name(dataset, index)
        if key in done or (sources is not None and key not in sources):
            continue
        todo.append(index)

    mesh = _mesh()
    if mesh is not None:
        from fnaf_jax import parallel

        parallel.check_batch_size(batch_size, mesh)
    scorer = make_scorer(model_or_fn, cfg.objective, mesh=mesh)
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
            keys = jnp.stack([slice_key(seed, f, s) for f, s in zip(batch["fname"], batch["slice_num"], strict=True)])
            device_batch, keys = _shard(batch, keys, mesh)
            result = attack(scorer, device_batch, keys, cfg)
            result = jax.device_get(result)
            lines = "".join(json.dumps(attack_record(result, i, batch, method=method, spec=spec, cfg=cfg,
                                                     extra=extra)) + "\n" for i in range(real))
            if fh is None:
                fh = _open_for_append(out_path)
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


def _open_for_append(path: Path):
    """Append handle; a torn final line left by a killed run is cut off first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        _cut_torn_line(path)
    return path.open("a")


def _slice_name(dataset, index: int) -> tuple[str, int]:
    """(file name, slice) of a dataset item, without reading it when the dataset can tell."""
    if hasattr(dataset, "locate"):
        volume, slice_num = dataset.locate(index)
        return os.path.basename(volume.fname), int(slice_num)
    item = dataset[index]
    return os.path.basename(item["fname"]), int(item["slice_num"])


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="slice", disable=not enabled, desc="attack")
