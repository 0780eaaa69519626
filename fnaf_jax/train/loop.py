"""The resumable training loop behind ``fnaf train``.

``train(cfg, workdir)`` runs epochs of batches (in ``make_loader``'s order) through one
compiled step, validates after every epoch (clean loss and fastMRI nmse/psnr/ssim per volume), keeps
``WORKDIR/best`` (lowest clean validation loss) and ``WORKDIR/last`` as model checkpoints,
logs to ``WORKDIR/metrics.jsonl`` and saves Orbax training checkpoints every
``checkpoint_every`` steps, at the end of each epoch and on SIGINT/SIGTERM.

Everything random is a pure function of the config and the position in training: the
epoch order of (seed, epoch), the host RNG of each batch (masks, features) of (seed, epoch,
batch index), the step's PRNG key of (seed, step). A checkpoint therefore only needs the
step, the state and the validation record, and running the same command again resumes
where the previous run stopped, ending with the same parameters bit for bit (on CPU).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from fnaf_jax import parallel
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.fileio import exclusive_lock, write_text
from fnaf_jax.train.checkpoint import CHECKPOINT_DIR, TrainCheckpoints
from fnaf_jax.train.config import CONFIG_FILE, TrainConfig, write_or_check
from fnaf_jax.train.steps import (
    init_state,
    make_eval_fn,
    make_optimizer,
    make_train_step,
    step_key,
)

METRICS_FILE = "metrics.jsonl"
RUN_OUTPUTS = (CHECKPOINT_DIR, "best", "last", METRICS_FILE)  # cleared by --force
_AUTO_SPLITS = {"train": ("singlecoil_train", "train"), "val": ("singlecoil_val", "val")}


# --- building blocks ---------------------------------------------------------------------
def build_task(cfg: TrainConfig):
    """The model family's training task for ``cfg``, wrapped by ``RobustTask`` when ``cfg.robust``."""
    from fnaf_jax.models.families import family, resolve
    from fnaf_jax.train.robust import RobustTask

    task = resolve(family(cfg.model).task).from_config(cfg)
    return RobustTask.from_config(task, cfg) if cfg.robust is not None else task


def clean_task_of(task):
    """The task whose loss is the clean loss (model selection ignores the FNAF term)."""
    return getattr(task, "base_task", task)


def optimizer_for(task, cfg: TrainConfig, steps_per_epoch: int):
    """The model family's own optimizer when its task defines one (i-RIM: Adam), else
    fastMRI's RMSprop recipe from ``cfg``."""
    own = getattr(clean_task_of(task), "optimizer", None)
    return own(steps_per_epoch) if callable(own) else make_optimizer(cfg, steps_per_epoch)


def data_dir(cfg: TrainConfig, which: str) -> Path:
    """The folder of the ``which`` ("train" or "val") split (see ``TrainConfig.data``)."""
    if not cfg.data:
        raise ConfigError("train config has no data folder (--data)")
    root = Path(cfg.data)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder (--data)")
    split = cfg.train_split if which == "train" else cfg.val_split
    if split is None:
        for name in _AUTO_SPLITS[which]:
            if (root / name).is_dir():
                return root / name
        return root
    path = root / split
    if not path.is_dir():
        raise DataError(f"{path}: no such {which} split folder (--{which}-split)")
    return path


class Subset:
    """The first ``n`` items of a map-style dataset."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, {self.n})"


def load_split(cfg: TrainConfig, which: str, transform: str):
    from fnaf_jax.data.fastmri import SliceDataset

    # No mask function: tasks draw masks themselves, reproducibly (see unet_task).
    ds = SliceDataset(data_dir(cfg, which), transform=transform, mask_func=None,
                      skip_bad=cfg.skip_bad)
    limit = cfg.limit_train if which == "train" else cfg.limit_val
    return Subset(ds, limit) if limit else ds


class _Indices:
    """Dataset view whose items are their own indices: ``make_loader`` fixes the batches'
    order and grouping, the loop reads the items. Raw items of different k-space widths
    cannot be collated into one array, and skipping the consumed batches of a resumed
    epoch reads nothing."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"index": int(index)}

    def __repr__(self) -> str:
        return f"_Indices({self.n})"


def item_batches(dataset, batch_size: int, **loader_kwargs):
    """Lists of index arrays, one per batch, in ``make_loader``'s order."""
    from fnaf_jax.data.loader import make_loader

    for batch in make_loader(_Indices(len(dataset)), batch_size, **loader_kwargs):
        yield [int(i) for i in batch["index"]]


def build_model_and_config(cfg: TrainConfig, abstract: bool = False):
    """A fresh model from ``cfg`` (seeded), or the one in ``cfg.init_from``; with
    ``abstract`` its parameters are shapes only (resuming: a checkpoint supplies them)."""
    from fnaf_jax.models import build_model
    from fnaf_jax.models.registry import build_abstract_model
    from fnaf_jax.models.store import load_model, read_model_config

    if cfg.init_from:
        record = read_model_config(cfg.init_from)
        arch = record["config"].get("arch")
        if arch != cfg.model:
            raise ConfigError(f"--init-from {cfg.init_from}: holds a {arch!r} model, but "
                              f"--model is {cfg.model!r}")
        if abstract:
            return build_abstract_model(record["config"]), record["config"]
        return load_model(cfg.init_from)[0], record["config"]
    model_config = cfg.model_config()
    if abstract:
        return build_abstract_model(model_config), model_config
    return build_model(model_config, nnx.Rngs(cfg.seed)), model_config


class StopSignal:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and returns at the next step."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self._old[signum])  # a second signal acts at once

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def __bool__(self):
        return self.signum is not None


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line), plus TensorBoard when installed."""

    def __init__(self, workdir: Path):
        self.path = workdir / METRICS_FILE
        self.tb = None
        if jax.process_index() == 0:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def truncate(self, step: int, validated_epoch: int) -> int:
        """Drop records written after the checkpoint a resumed run restarts from (a killed
        run's last steps are replayed, so they would appear twice); returns how many."""
        if jax.process_index() != 0 or not self.path.is_file():
            return 0
        kept, seen, dropped = [], set(), 0
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1  # a torn last line
                continue
            later = (record.get("epoch", -1) > validated_epoch if record.get("kind") == "val"
                     else record.get("step", 0) > step)
            key = (record.get("kind"), record.get("epoch"), record.get("step"))
            if later or key in seen:
                dropped += 1
            else:
                kept.append(line)
                seen.add(key)
        if dropped:
            write_text(self.path, "".join(line + "\n" for line in kept))
        return dropped

    def write(self, record: dict) -> None:
        if jax.process_index() != 0:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value,
                                       record.get("step", 0))


# --- validation -----------------------------------------------------------------------
def validate(state, val_ds, task, eval_fn, batch_size: int, mesh, seed: int) -> dict:
    """Clean validation loss (mean over slices) and fastMRI metrics (mean over volumes)."""
    from fnaf_jax.metrics import volume_metrics

    key = step_key(seed, 2**32 - 1)  # a step number training never reaches
    losses, per_volume = [], []
    volume: dict = {"fname": None, "slices": {}}  # the volume being collected

    def finish_volume():
        # in file order a volume's slices are contiguous: score it, then free its images
        if volume["slices"]:
            ordered = [volume["slices"][s] for s in sorted(volume["slices"])]
            per_volume.append(volume_metrics(np.stack([t for t, _ in ordered]),
                                             np.stack([p for _, p in ordered])))
        volume.update(fname=None, slices={})

    def run(items):
        batch = parallel.shard_batch(task.prepare_batch(items, None), mesh)
        pred, loss = eval_fn(state, batch, key)
        return np.asarray(pred), float(loss)

    for indices in item_batches(val_ds, batch_size, shuffle=False, seed=seed):
        items = [val_ds[i] for i in indices]
        if len(items) == batch_size:
            preds, loss = run(items)
            losses += [loss] * len(items)
        else:  # short last batch: each item alone, repeated to a full (shardable) batch
            preds = []
            for item in items:
                pred, loss = run([item] * batch_size)
                preds.append(pred[0])
                losses.append(loss)
        for item, pred in zip(items, preds):
            if item["fname"] != volume["fname"]:
                finish_volume()
                volume["fname"] = item["fname"]
            target = np.asarray(item["target_raw"], np.float32)
            volume["slices"][int(item["slice_num"])] = (target, pred)
    finish_volume()
    out = {"val_loss": float(np.mean(losses))}
    for name in ("nmse", "psnr", "ssim"):
        out[name] = float(np.mean([m[name] for m in per_volume]))
    return out


# --- the loop ---------------------------------------------------------------------------
def clear_run(workdir: Path) -> None:
    """Remove a previous run's outputs (``--force``)."""
    for name in RUN_OUTPUTS + (CONFIG_FILE,):
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def train(cfg: TrainConfig, workdir, *, force: bool = False, stop_after_steps: int | None = None,
          progress: bool = True) -> dict:
    """Train (or resume training) as configured; returns a summary dict.

    ``stop_after_steps`` stops (with a checkpoint, as on SIGTERM) once that many optimizer
    steps in total are done: the hook tests use to interrupt a run.
    """
    workdir = Path(workdir).absolute()
    parallel.maybe_initialize_distributed()
    mesh = parallel.make_mesh()
    parallel.check_batch_size(cfg.batch_size, mesh)

    task = build_task(cfg)
    train_ds = load_split(cfg, "train", task.transform)
    val_ds = load_split(cfg, "val", task.transform)
    steps_per_epoch = len(train_ds) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size={cfg.batch_size} exceeds the {len(train_ds)} training "
                          f"slices in {data_dir(cfg, 'train')}")
    total_steps = cfg.epochs * steps_per_epoch
    # Validate, then act: every option (the model's too) is checked before --force deletes
    # anything or a config record is written, so a refused command leaves WORKDIR as it was.
    build_model_and_config(cfg, abstract=True)
    # one writer per workdir (process 0 writes; other hosts of a multi-host run only read)
    lock = (exclusive_lock(workdir / "train", "training workdir") if jax.process_index() == 0
            else contextlib.nullcontext())
    with lock:
        if force and jax.process_index() == 0:
            clear_run(workdir)
        write_or_check(cfg, workdir, force=force)
        return _train_locked(cfg, workdir, task, train_ds, val_ds, steps_per_epoch, total_steps, mesh,
                             stop_after_steps, progress)


def _train_locked(cfg, workdir, task, train_ds, val_ds, steps_per_epoch, total_steps, mesh,
                  stop_after_steps, progress) -> dict:
    from fnaf_jax.models.store import save_model

    ckpts = TrainCheckpoints(workdir, cfg.keep_checkpoints)
    resuming = ckpts.latest_step() is not None
    model, model_config = build_model_and_config(cfg, abstract=resuming)
    tx = optimizer_for(task, cfg, steps_per_epoch)
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, ...)[0]
    model.train()
    graphdef, state = init_state(model, tx, abstract=resuming)
    loop = {"step": 0, "validated_epoch": -1, "best_val_loss": None}
    if resuming:
        latest = ckpts.latest_step()
        step, state, loop = ckpts.restore(state, sharding=parallel.replicated(mesh))
        loop["step"] = step
        if step != latest:
            print(f"fnaf train: checkpoint {latest} is incomplete (interrupted while saving?); "
                  f"resuming from the last complete one, step {step}")
    else:
        state = parallel.replicate(state, mesh)
    train_step, eval_fn = _compiled_fns(
        cfg, steps_per_epoch, mesh, graphdef, eval_graphdef,
        lambda: (make_train_step(task, graphdef, tx, mesh),
                 make_eval_fn(clean_task_of(task), eval_graphdef, mesh)))

    log = MetricsLog(workdir)
    if resuming:
        log.truncate(loop["step"], loop["validated_epoch"])

    def save_models(kind: str, meta: dict) -> None:
        params, rest = jax.device_get((state["params"], state["rest"]))
        snapshot = nnx.merge(eval_graphdef, params, rest)
        save_model(workdir / kind, snapshot, model_config, meta={**meta, "train_config": cfg.to_dict()})

    def end_of_epoch(epoch: int) -> None:
        t0 = time.perf_counter()
        record = validate(state, val_ds, clean_task_of(task), eval_fn, cfg.batch_size, mesh,
                          cfg.seed)
        meta = {"epoch": epoch, "step": loop["step"], **record}
        save_models("last", meta)
        best = loop["best_val_loss"]
        if best is None or record["val_loss"] < best:
            loop["best_val_loss"] = record["val_loss"]
            save_models("best", meta)
        loop["validated_epoch"] = epoch
        log.write({"kind": "val", "epoch": epoch, "step": loop["step"], **record,
                   "best_val_loss": loop["best_val_loss"],
                   "seconds": round(time.perf_counter() - t0, 3)})
        ckpts.save(loop["step"], state, loop)

    status = "done"
    with StopSignal() as stop:
        epoch = loop["step"] // steps_per_epoch
        while True:
            if epoch > 0 and loop["validated_epoch"] < epoch - 1:
                end_of_epoch(epoch - 1)
            if epoch >= cfg.epochs:
                break
            if stop:  # signalled during validation
                status = "interrupted"
                break
            skip = loop["step"] - epoch * steps_per_epoch
            batches = item_batches(train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                   epoch=epoch, drop_remainder=True)
            bar = _progress(progress, epoch, cfg.epochs, steps_per_epoch, skip)
            t0, seen, losses = time.perf_counter(), 0, []
            prepared = (
                (len(indices), task.prepare_batch([train_ds[i] for i in indices],
                                                  np.random.default_rng([cfg.seed, epoch, index])))
                for index, indices in enumerate(batches)
                if index >= skip)  # batches before `skip` were consumed before an interruption
            upcoming = next(prepared, None)
            while upcoming is not None:
                n, host = upcoming
                state, loss, _ = train_step(state, parallel.shard_batch(host, mesh),
                                            step_key(cfg.seed, loop["step"]))
                upcoming = next(prepared, None)  # host work overlaps the dispatched step
                loop["step"] += 1
                losses.append(float(loss))
                seen += n
                rate = seen / (time.perf_counter() - t0)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.4g}", slices_per_s=f"{rate:.2f}")
                if loop["step"] % cfg.checkpoint_every == 0:
                    log.write({"kind": "train", "epoch": epoch, "step": loop["step"],
                               "loss": float(np.mean(losses)), "slices_per_s": rate})
                    ckpts.save(loop["step"], state, loop)
                if stop or loop["step"] == stop_after_steps:
                    status = "interrupted"
                    break
            if bar is not None:
                bar.close()
            if status == "interrupted":
                ckpts.save(loop["step"], state, loop)
                break
            if losses:
                log.write({"kind": "train_epoch", "epoch": epoch, "step": loop["step"],
                           "loss": float(np.mean(losses)), "slices_per_s": rate})
            epoch += 1
    ckpts.close()
    return {"status": status, "step": loop["step"], "total_steps": total_steps,
            "validated_epoch": loop["validated_epoch"], "best_val_loss": loop["best_val_loss"],
            "workdir": str(workdir), "state": state}


# Fields that cannot change what the compiled functions compute.
_NOT_COMPILED = ("data", "train_split", "val_split", "limit_train", "limit_val",
                 "checkpoint_every", "keep_checkpoints")
_COMPILED: dict = {}


def _compiled_fns(cfg, steps_per_epoch, mesh, graphdef, eval_graphdef, build):
    """Jitted (train step, evaluation), reused by later ``train`` calls in this
    process with an equivalent config (resuming in-process, tests, sweeps): a new jit
    wrapper would compile everything again."""
    fields = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_COMPILED}
    key = (json.dumps(fields, sort_keys=True, default=str), steps_per_epoch,
           tuple(d.id for d in mesh.devices.flat), graphdef, eval_graphdef)
    if key not in _COMPILED:
        if len(_COMPILED) >= 4:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = build()
    return _COMPILED[key]


def _progress(enabled: bool, epoch: int, epochs: int, total: int, initial: int):
    if not enabled or jax.process_index() != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                dynamic_ncols=True)
