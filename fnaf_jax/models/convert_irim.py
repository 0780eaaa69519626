"""Convert a PyTorch i-RIM checkpoint (pputzky/irim_fastMRI, tag 0.1) to the NNX ``IRIM``.

The NNX parameters keep PyTorch's names and shapes, so the mapping is by path:

    model.model.rnn.{t}.layers.{l}.update_right.l{1,2,3}.{weight_v,weight_g,bias}
    model.model.rnn.{t}.embeddings.{l}.weights   (+ the identity buffer ...embeddings.{l}.I)
    output_function.l{1,2,3}.{weight_v,weight_g,bias}           (parametric output only)

(``model.model``: ``IRIMfastMRI.model`` is a ``MemoryFreeInvertibleModule`` whose
``.model`` is the ``IRIM``.) A ``module.`` prefix (DataParallel) is stripped. With shared
weights PyTorch lists the one cell under every ``rnn.{t}``; all copies must be present
and equal. Every missing, unexpected or mis-shaped key is reported in one
``CheckpointError``.
"""

from __future__ import annotations

import argparse
import pathlib

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnaf_jax.errors import CheckpointError, ConfigError
from fnaf_jax.models.irim import IRIM

_CORE = "model.model."
_MODEL_FIELDS = (
    "n_steps",
    "n_hidden",
    "n_network_hidden",
    "dilations",
    "multiplicity",
    "shared_weights",
    "parametric_output",
    "depth",
)


def config_from_args(args) -> dict:
    """The fnaf-jax model config (``{"arch": "irim", ...}``) of an original ``args``.

    ``args`` is the checkpoint's ``argparse.Namespace`` or a dict (either the original
    fields or an fnaf-jax config). Fields the JAX model does not support (multi-coil,
    3-D slabs, the plain RIM) are a ``ConfigError``.
    """
    fields = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    if fields.get("arch", "irim") != "irim":
        raise ConfigError(
            f"i-RIM converter: config arch is {fields['arch']!r}, not 'irim'"
        )
    if fields.get("use_rim"):
        raise ConfigError(
            "i-RIM converter: args.use_rim=True is the plain RIM baseline, not supported"
        )
    if fields.get("challenge", "singlecoil") != "singlecoil":
        raise ConfigError(
            f"i-RIM converter: challenge {fields['challenge']!r} not supported (singlecoil only)"
        )
    if (fields.get("n_slices") or 1) != 1:
        raise ConfigError(
            f"i-RIM converter: n_slices={fields['n_slices']} (3-D i-RIM) not supported"
        )
    missing = [
        k
        for k in ("n_steps", "n_hidden", "n_network_hidden", "dilations")
        if fields.get(k) is None
    ]
    if missing:
        raise ConfigError(f"i-RIM converter: args lack {', '.join(missing)}")
    config = {"arch": "irim"}
    for key in _MODEL_FIELDS:
        value = fields.get(key)
        if value is None:
            continue
        config[key] = list(value) if isinstance(value, (list, tuple)) else value
    config.setdefault("multiplicity", 1)  # the original parser's defaults
    config.setdefault("shared_weights", False)
    config.setdefault("parametric_output", False)
    if fields.get("arch") == "irim":  # already an fnaf-jax config: keep it as it is
        return config
    # The original's build_model: n_hidden is a list (nargs='+'), or an int repeated
    # `depth` times; InvertibleUnet zips the three lists, so the shortest sets the depth.
    if not isinstance(config["n_hidden"], list):
        if not config.get("depth"):
            raise ConfigError(
                "i-RIM converter: args.n_hidden is an int but args.depth is not set"
            )
        config["n_hidden"] = [config["n_hidden"]] * int(config["depth"])
    for key in ("n_network_hidden", "dilations"):
        if not isinstance(config[key], list):
            raise ConfigError(
                f"i-RIM converter: args.{key} must be a list, got {config[key]!r}"
            )
    depth = min(len(config[k]) for k in ("n_hidden", "n_network_hidden", "dilations"))
    for key in ("n_hidden", "n_network_hidden", "dilations"):
        config[key] = [int(v) for v in config[key][:depth]]
    config.pop("depth", None)
    return config


def _torch_name(path) -> str:
    return ".".join(str(p) for p in path)


def expected_entries(model: IRIM) -> dict:
    """PyTorch state_dict key -> (NNX path or None for identity buffers, shape)."""
    entries = {}
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Param):
            continue
        shape = tuple(node.get_value().shape)
        if path[0] == "rnn":
            steps = range(model.n_steps) if model.shared_weights else [path[1]]
            for t in steps:
                entries[_CORE + _torch_name(("rnn", t) + tuple(path[2:]))] = (
                    path,
                    shape,
                )
                if path[2] == "embeddings":
                    key = _CORE + _torch_name(("rnn", t) + tuple(path[2:-1]) + ("I",))
                    entries[key] = (None, (shape[1], shape[1]))
        else:
            entries[_torch_name(path)] = (path, shape)
    return entries


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def strip_prefix(state_dict: dict) -> dict:
    """Drop the ``module.`` prefix that DataParallel adds (when every key has it)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_entries(model: IRIM, shapes: dict, source: str = "state_dict") -> dict:
    """Compare ``{key: shape}`` with what ``model`` needs; one error listing every problem."""
    entries = expected_entries(model)
    problems = [
        f"missing {k} {shape}" for k, (_, shape) in entries.items() if k not in shapes
    ]
    problems += [f"unexpected {k}" for k in shapes if k not in entries]
    problems += [
        f"{k}: shape {tuple(shapes[k])} != expected {shape}"
        for k, (_, shape) in entries.items()
        if k in shapes and tuple(shapes[k]) != shape
    ]
    if problems:
        raise CheckpointError(
            f"{source}: does not fit the i-RIM config ({len(problems)} problems): "
            + "; ".join(problems)
        )
    return entries


def convert(arch: str, arrays: dict, extras, config: dict, source: str):
    """The i-RIM family's converter (``fnaf_jax.models.families``): an explicit ``config``
    replaces the checkpoint's own training ``extras`` (its argparse arguments)."""
    del arch
    return from_torch(arrays, config or extras, source=source)


def from_torch(state_dict: dict, args_or_config, source: str = "state_dict"):
    """Build ``IRIM`` from a PyTorch i-RIM ``state_dict`` and its ``args``; returns (model, config).

    ``state_dict`` values may be torch tensors or numpy arrays; ``args_or_config`` is the
    checkpoint's Namespace or a config dict.
    """
    if args_or_config is None:
        raise CheckpointError(
            f"{source}: an i-RIM state dict alone does not give the model's sizes; pass the "
            "config (--config JSON with n_steps, n_hidden, ...) or a checkpoint holding 'args'"
        )
    config = config_from_args(args_or_config)
    state_dict = {k: _to_numpy(v) for k, v in strip_prefix(state_dict).items()}
    kwargs = {k: v for k, v in config.items() if k != "arch"}
    # Built abstractly: every parameter is filled from the state_dict below, so no
    # random initialisation (1.1 GB for the released model) is computed.
    model = nnx.eval_shape(lambda: IRIM(**kwargs, rngs=nnx.Rngs(0)))
    entries = check_entries(model, {k: v.shape for k, v in state_dict.items()}, source)
    params = {
        path: node
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Param)
    }
    problems = []
    for key, (path, _) in entries.items():
        value = state_dict[key].astype(np.float32)
        if path is None:
            if not np.array_equal(value, np.eye(value.shape[0], dtype=np.float32)):
                problems.append(f"{key}: identity buffer is not the identity")
            continue
        if (
            model.shared_weights
            and path[0] == "rnn"
            and not key.startswith(_CORE + "rnn.0.")
        ):
            first = state_dict[_CORE + "rnn.0." + key.split(".", 4)[4]]
            if not np.array_equal(first, value):
                problems.append(
                    f"{key}: differs from rnn.0 although shared_weights=True"
                )
            continue
        params[path].set_value(jnp.asarray(value))
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    return model, config


def to_state_dict(model: IRIM) -> dict:
    """The PyTorch-style state_dict (numpy, no ``module.`` prefix) of ``model``.

    The inverse of ``from_torch``: identity buffers included, shared weights listed under
    every step. Useful to check conversions by round trip.
    """
    params = {
        path: node
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Param)
    }
    out = {}
    for key, (path, shape) in expected_entries(model).items():
        if path is None:
            out[key] = np.eye(shape[0], dtype=np.float32)
        else:
            out[key] = np.asarray(params[path].get_value())
    return out


def load_irim_checkpoint(path):
    """Read an original i-RIM ``.pt`` checkpoint -> (model, config), loading safely.

    Uses ``torch.load(weights_only=True)`` with ``argparse.Namespace`` and
    ``pathlib.PosixPath`` allowed (the ``args`` and ``exp_dir`` entries).
    """
    import torch  # only here: conversion is the one place that needs PyTorch

    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    torch.serialization.add_safe_globals([argparse.Namespace, pathlib.PosixPath])
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / foreign files
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint ({exc})"
        ) from exc
    if (
        not isinstance(checkpoint, dict)
        or "model" not in checkpoint
        or "args" not in checkpoint
    ):
        raise CheckpointError(
            f"{path}: not an i-RIM training checkpoint (needs 'model' and 'args' entries)"
        )
    return from_torch(checkpoint["model"], checkpoint["args"], source=str(path))
