"""PyTorch checkpoints -> fnaf-jax NNX models.

``load_torch(source, arch=None, config=None) -> (model, config)`` reads

* a plain ``state_dict`` (fastMRI's released weights),
* a PyTorch Lightning checkpoint (``{"state_dict": {"unet.…": …}, "hyper_parameters": …}``),
* a FNAF / i-RIM training checkpoint (``{"model": state_dict, "args": Namespace, …}``),
* keys prefixed by ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile),

from a dict already in memory or a ``.pt`` file in either torch format (zip or the
legacy pre-1.6 one). Files are read with ``torch.load(weights_only=True)``; only
``argparse.Namespace`` and ``pathlib`` paths are allowed beyond tensors and containers,
so nothing arbitrary is ever unpickled.

The architecture is read from the keys when not given ("unet", "unet-v0" or "irim"),
and the sizes from the shapes. Every missing, unexpected and mis-shaped key is listed
in one ``CheckpointError``. i-RIM checkpoints are handed to
``fnaf_jax.models.convert_irim.from_torch(state_dict, args_or_config)``.

Layouts: torch conv weights are OIHW, ours HWIO. ``ConvTranspose2d`` weights are
``(in, out, kh, kw)`` with ``out[o, 2i+a, 2j+b] = sum_c x[c, i, j] w[c, o, a, b]`` for
stride 2 and kernel 2, which is exactly our ``(a, b, c, o)`` kernel in
``unet.upsample_2x2``: a transpose, no flip.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from fnaf_jax.errors import CheckpointError, ConfigError
from fnaf_jax.models.families import NAMES, family, resolve
from fnaf_jax.models.registry import build_abstract_model

# Wrappers that prefix every key: DataParallel / DistributedDataParallel, torch.compile.
GENERIC_PREFIXES = ("module.", "_orig_mod.")
# Attribute names under which training wrappers keep a U-Net (fastMRI's Lightning UnetModule).
UNET_PREFIXES = ("unet.", "model.")

# Globals a training checkpoint may hold besides tensors: i-RIM/FNAF save their argparse
# arguments, including paths. Nothing else is unpickled.
SAFE_GLOBALS = (argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath)


# ----------------------------------------------------------------------------- reading


def read_torch_file(path) -> object:
    """``torch.load`` a checkpoint on the CPU without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"{path}: reading PyTorch checkpoints needs torch (pip install 'fnaf-jax[torch]')"
        ) from None
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.findall(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if unsafe:
            raise CheckpointError(
                f"{path}: not loaded: it holds {', '.join(unsafe)}, and only tensors, containers, "
                "argparse.Namespace and paths are unpickled (never arbitrary objects); "
                "save the state_dict alone"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({reason.group(1) if reason else 'unpickling failed'})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, zip errors, ...; all mean "bad file"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _to_numpy(value) -> np.ndarray:
    """A torch tensor or array-like as a float32 numpy array (half precision widened)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    return np.asarray(value, dtype=np.float32)


def unwrap_checkpoint(obj, name: str) -> tuple[dict, object]:
    """Find the state dict in a checkpoint object; returns ``(state_dict, args_or_hparams)``."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name}: expected a state dict or a checkpoint dict, got {type(obj).__name__}")
    extras = None
    if isinstance(obj.get("state_dict"), Mapping):  # PyTorch Lightning
        extras = obj.get("hyper_parameters")
        obj = obj["state_dict"]
    elif isinstance(obj.get("model"), Mapping):  # FNAF / i-RIM / fastMRI-2019 training scripts
        extras = obj.get("args")
        obj = obj["model"]
    if not obj:
        raise CheckpointError(f"{name}: the state dict is empty")
    not_arrays = [str(k) for k, v in obj.items() if not _is_array(v)]
    if not_arrays:
        top = ", ".join(not_arrays[:10]) + (" ..." if len(not_arrays) > 10 else "")
        raise CheckpointError(
            f"{name}: not a state dict: entries that are not tensors: {top} "
            "(expected a state_dict, or a dict with 'state_dict' or 'model')"
        )
    return dict(obj), extras


def strip_prefixes(state: dict, prefixes) -> dict:
    """Remove wrapper prefixes shared by EVERY key, repeatedly (e.g. ``module.unet.``)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _get(extras, field):
    """A field of argparse args (Namespace) or Lightning hyper-parameters (dict), or None."""
    if extras is None:
        return None
    if isinstance(extras, Mapping):
        return extras.get(field)
    return getattr(extras, field, None)


# ------------------------------------------------------------------------ architecture


def detect_arch(keys, extras=None, name: str = "<state dict>") -> str:
    """Tell "unet", "unet-v0" or "irim" from state-dict keys (and training args)."""
    keys = list(strip_prefixes(dict.fromkeys(keys), GENERIC_PREFIXES + UNET_PREFIXES))
    if _get(extras, "n_steps") is not None or any(
        ".update_right." in k or k.startswith("output_function.") or ".embeddings." in k for k in keys
    ):
        return "irim"
    if any(k.startswith(("up_sample_layers.", "conv2.")) for k in keys):
        return "unet-v0"
    if any(k.startswith(("up_transpose_conv.", "up_conv.")) for k in keys):
        return "unet"
    shown = ", ".join(keys[:5])
    raise CheckpointError(
        f"{name}: cannot tell the architecture from its keys ({shown}, ...); pass arch= one of {', '.join(NAMES)}"
    )


_DOWN_KEY = re.compile(r"^down_sample_layers\.(\d+)\.")


def infer_unet_config(arch: str, shapes: Mapping[str, tuple], extras=None, name: str = "<state dict>") -> dict:
    """The U-Net config (sizes) implied by a state dict's shapes (``key -> torch shape``)."""
    depths = [int(m.group(1)) for k in shapes if (m := _DOWN_KEY.match(k))]
    first = shapes.get("down_sample_layers.0.layers.0.weight")
    second = shapes.get("down_sample_layers.0.layers.4.weight")
    if not depths or (first is None and second is None):
        raise CheckpointError(
            f"{name}: cannot infer the {arch} sizes: no 'down_sample_layers.<i>' keys "
            "or no first conv 'down_sample_layers.0.layers.0.weight'"
        )
    num_pool_layers = max(depths) + 1
    chans = int((first or second)[0])
    in_chans = int(first[1]) if first is not None and len(first) == 4 else 1
    if arch == "unet":
        head = shapes.get(f"up_conv.{num_pool_layers - 1}.1.weight")
    else:
        head = shapes.get("conv2.2.weight") or shapes.get("conv2.1.weight")
    out_chans = int(head[0]) if head else 1
    drop_prob = _get(extras, "drop_prob")
    return {
        "arch": arch,
        "in_chans": in_chans,
        "out_chans": out_chans,
        "chans": chans,
        "num_pool_layers": num_pool_layers,
        "drop_prob": float(drop_prob) if drop_prob is not None else 0.0,
    }


# ------------------------------------------------------------------ key <-> param maps

# How a torch tensor becomes our parameter: OIHW -> HWIO, (in, out, kh, kw) -> (kh, kw, in, out).
_TO_NNX = {"conv": (2, 3, 1, 0), "convT": (2, 3, 0, 1), "vector": None}
_TO_TORCH = {"conv": (3, 2, 0, 1), "convT": (2, 3, 0, 1), "vector": None}


def _conv_block_keys(torch_prefix: str, path: tuple, bias: bool) -> dict:
    out = {}
    for index, conv in (("0", "conv1"), ("4", "conv2")):
        out[f"{torch_prefix}.layers.{index}.weight"] = (path + (conv, "kernel"), "conv")
        if bias:
            out[f"{torch_prefix}.layers.{index}.bias"] = (path + (conv, "bias"), "vector")
    return out


def unet_key_map(arch: str, num_pool_layers: int) -> dict[str, tuple[tuple, str]]:
    """``torch key -> (path in nnx.to_pure_dict(params), kind)`` for a U-Net of this depth."""
    n = num_pool_layers
    keys: dict[str, tuple[tuple, str]] = {}
    bias = arch == "unet-v0"
    for i in range(n):
        keys.update(_conv_block_keys(f"down_sample_layers.{i}", ("down_sample_layers", i), bias))
    keys.update(_conv_block_keys("conv", ("conv",), bias))
    if arch == "unet":
        for i in range(n):
            keys[f"up_transpose_conv.{i}.layers.0.weight"] = (("up_transpose_conv", i, "kernel"), "convT")
            # the last up level is Sequential(ConvBlock, 1x1 Conv2d) in fastMRI
            prefix = f"up_conv.{i}" if i < n - 1 else f"up_conv.{i}.0"
            keys.update(_conv_block_keys(prefix, ("up_conv", i), False))
        keys[f"up_conv.{n - 1}.1.weight"] = (("final", "kernel"), "conv")
        keys[f"up_conv.{n - 1}.1.bias"] = (("final", "bias"), "vector")
    else:
        for i in range(n):
            keys.update(_conv_block_keys(f"up_sample_layers.{i}", ("up_sample_layers", i), True))
        for j in range(3):
            keys[f"conv2.{j}.weight"] = (("head", j, "kernel"), "conv")
            keys[f"conv2.{j}.bias"] = (("head", j, "bias"), "vector")
    return keys


def _leaf(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def _set_leaf(tree, path, value):
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


def _permuted_shape(shape, kind) -> tuple:
    perm = _TO_TORCH[kind]
    return tuple(int(shape[p]) for p in perm) if perm else tuple(int(s) for s in shape)


def expected_torch_shapes(model, arch: str) -> dict[str, tuple]:
    """The state dict (``key -> torch shape``) that fits ``model`` (concrete or ``nnx.eval_shape``)."""
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    key_map = unet_key_map(arch, model.num_pool_layers)
    covered = {path for path, _ in key_map.values()}
    leaves = {tuple(_key_name(k) for k in kp) for kp, _ in jax.tree_util.tree_leaves_with_path(params)}
    if covered != leaves:  # the map and the module definitions drifted apart: a bug here
        raise AssertionError(f"unet_key_map out of sync with {arch}: {sorted(map(str, covered ^ leaves))}")
    return {key: _permuted_shape(_leaf(params, path).shape, kind) for key, (path, kind) in key_map.items()}


def _key_name(entry):
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return entry


def check_state_dict(got: Mapping[str, tuple], expected: Mapping[str, tuple], name: str, what: str):
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k} {tuple(got[k])} (expected {tuple(expected[k])})"
        for k in expected
        if k in got and tuple(got[k]) != tuple(expected[k])
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: " + ", ".join(missing))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: " + ", ".join(unexpected))
    if wrong:
        parts.append(f"{len(wrong)} with the wrong shape: " + ", ".join(wrong))
    if parts:
        raise CheckpointError(f"{name}: state dict does not fit {what}: " + "; ".join(parts))


def unet_from_state_dict(config: dict, arrays: Mapping[str, np.ndarray], name: str = "<state dict>"):
    """Build the U-Net of ``config`` holding the torch ``arrays`` (keys checked first)."""
    arch = config["arch"]
    model = build_abstract_model(config)
    what = f"{arch} " + ", ".join(f"{k}={v}" for k, v in config.items() if k != "arch")
    check_state_dict({k: v.shape for k, v in arrays.items()}, expected_torch_shapes(model, arch), name, what)
    params = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(params)
    for key, (path, kind) in unet_key_map(arch, config["num_pool_layers"]).items():
        perm = _TO_NNX[kind]
        value = arrays[key].transpose(perm) if perm else arrays[key]
        _set_leaf(pure, path, jax.numpy.asarray(np.ascontiguousarray(value)))
    nnx.replace_by_pure_dict(params, pure)
    nnx.update(model, params)
    return model


# ------------------------------------------------------------------------- entry point


def load_torch(source, arch: str | None = None, config: dict | None = None):
    """Convert a PyTorch checkpoint (path or dict) to an NNX model; returns ``(model, config)``.

    ``arch`` ("unet", "unet-v0", "irim") and ``config`` (constructor kwargs, optionally with
    "arch") override what is read from the checkpoint; ``config`` entries win over inferred
    sizes, and anything that does not fit the weights is reported as a CheckpointError.
    """
    config = dict(config or {})
    if arch is not None and config.get("arch", arch) != arch:
        raise ConfigError(f"arch={arch!r} contradicts config['arch']={config['arch']!r}")
    arch = arch or config.pop("arch", None)
    config.pop("arch", None)
    if arch is not None:
        family(arch)  # an unknown name fails before the file is read

    if isinstance(source, Mapping):
        name, obj = "<state dict>", source
    else:
        name, obj = str(source), read_torch_file(source)
    state, extras = unwrap_checkpoint(obj, name)
    state = strip_prefixes(state, GENERIC_PREFIXES)
    arch = arch or detect_arch(state, extras, name)
    arrays = {k: _to_numpy(v) for k, v in state.items()}
    return resolve(family(arch).converter)(arch, arrays, extras, config, name)


def unet_from_torch(arch: str, arrays: dict, extras, config: dict, name: str):
    """The U-Net families' converter: sizes inferred from the shapes, ``config`` overriding."""
    arrays = strip_prefixes(arrays, UNET_PREFIXES)
    inferred = infer_unet_config(arch, {k: v.shape for k, v in arrays.items()}, extras, name)
    unknown = sorted(set(config) - set(inferred))
    if unknown:
        raise ConfigError(f"{arch}: unknown config entries {unknown}; known: {sorted(set(inferred) - {'arch'})}")
    full = {**inferred, **config}
    return unet_from_state_dict(full, arrays, name), full


def parameter_count(model) -> int:
    """Number of trainable values (``nnx.Param`` leaves) in ``model``."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))))


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """One ``fnaf convert``: a PyTorch checkpoint -> an fnaf-jax model checkpoint."""

    source: str  # PyTorch .pt file
    out: str  # output checkpoint directory
    arch: str | None = None  # architecture (None: read from the checkpoint's keys)
    config: dict = dataclasses.field(default_factory=dict)  # constructor kwargs overriding the inferred ones


def convert_checkpoint(cfg: ConvertConfig):
    """``fnaf convert``: returns (checkpoint path, model config, parameter count)."""
    import hashlib

    from fnaf_jax.models.store import save_model

    model, config = load_torch(cfg.source, arch=cfg.arch, config=cfg.config)
    digest = hashlib.sha256()
    with open(cfg.source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    meta = {"source": str(Path(cfg.source).absolute()), "source_sha256": digest.hexdigest()}
    return save_model(cfg.out, model, config, meta=meta), config, parameter_count(model)
