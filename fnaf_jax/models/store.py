"""Model checkpoints: an Orbax directory with the model config saved beside the weights.

Layout of a model checkpoint directory ``CKPT``::

    CKPT/model.json     {"format": "fnaf-jax-model", "version": 1, "config": {...}, "meta": {...}}
    CKPT/state/         Orbax PyTree checkpoint of the model's nnx.Param state

``load_model(CKPT)`` rebuilds the architecture from the config and restores the weights,
so a checkpoint directory alone is enough to run a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from fnaf_jax.errors import CheckpointError
from fnaf_jax.fileio import write_text
from fnaf_jax.models.registry import build_abstract_model

FORMAT = "fnaf-jax-model"
CONFIG_FILE = "model.json"
STATE_DIR = "state"


def save_model(path, model, config: dict, meta: dict | None = None) -> Path:
    """Write ``model``'s parameters and ``config`` to the directory ``path`` (replaced)."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with ocp.PyTreeCheckpointer() as ckptr:
        ckptr.save(path / STATE_DIR, state, force=True)
    record = {"format": FORMAT, "version": 1, "config": config, "meta": meta or {}}
    write_text(path / CONFIG_FILE, json.dumps(record, indent=2, sort_keys=True))
    return path


def read_model_config(path) -> dict:
    """The ``model.json`` record of a checkpoint directory, validated."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: not an fnaf-jax model checkpoint (no {CONFIG_FILE})")
    try:
        record = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_file}: corrupt JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{cfg_file}: cannot read the model record ({exc.strerror})") from None
    if record.get("format") != FORMAT or "config" not in record:
        raise CheckpointError(f"{cfg_file}: not an fnaf-jax model record")
    return record


def load_model(path):
    """Rebuild and restore the model in checkpoint directory ``path``; returns (model, record).

    The architecture is built abstractly first, so no throw-away random weights are made.
    """
    path = Path(path).absolute()
    record = read_model_config(path)
    model = build_abstract_model(record["config"])
    params = nnx.state(model, nnx.Param)
    target = nnx.to_pure_dict(params)
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            restored = ckptr.restore(
                path / STATE_DIR,
                args=ocp.args.PyTreeRestore(
                    item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
                ),
            )
    except Exception as exc:  # orbax raises many types for corrupt/mismatched trees
        raise CheckpointError(f"{path / STATE_DIR}: cannot restore weights ({exc})") from exc
    _check_same_tree(path, target, restored)
    nnx.replace_by_pure_dict(params, jax.tree_util.tree_map(jnp.asarray, restored))
    nnx.update(model, params)
    return model, record


def _check_same_tree(path, expected, restored):
    exp = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(restored)}
    problems = [f"missing {k}" for k in exp if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in exp]
    problems += [f"{k}: shape {got[k]} != {exp[k]}" for k in exp if k in got and got[k] != exp[k]]
    if problems:
        raise CheckpointError(f"{path}: weights do not fit the config: " + "; ".join(problems))
