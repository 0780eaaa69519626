"""Every model family, described once: the only place an architecture name is dispatched.

A family entry names (as lazy ``"module:attribute"`` references, so importing one family
never imports another, and the model layer never imports the training layer):

- ``constructor``: the NNX module class, called with the config's kwargs and ``rngs``;
- ``converter``: ``(arch, arrays, extras, config, source) -> (model, config)`` from a PyTorch
  state dict (``fnaf convert``);
- ``task``: the training task class (``fnaf_jax.train``), built by ``task.from_config``;
- ``recipe``: training defaults filling the unset fields of a ``TrainConfig``;
- ``train_kwargs``: which ``TrainConfig`` fields become constructor arguments;
- ``full_field_of_view``: whether ``reconstruct`` takes the whole image (and crops its
  output itself) rather than fastMRI's centre crop;
- ``attack_chunks``: how an attack's many model inputs are split for speed: ``"loop"``
  (a ``lax.map`` inside one compiled call: the U-Nets) or ``"calls"`` (one call per chunk:
  XLA runs the i-RIM several times slower inside a loop). Measured with
  ``benchmarks/attack_profile.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from fnaf_jax.errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str
    constructor: str
    converter: str
    task: str
    recipe: Mapping = field(default_factory=dict)
    train_kwargs: Mapping = field(default_factory=dict)  # TrainConfig field -> constructor kwarg
    fixed_kwargs: Mapping = field(default_factory=dict)
    full_field_of_view: bool = False
    attack_chunks: str = "calls"

    def model_config(self, train_cfg) -> dict:
        """The model config (``{"arch": name, **kwargs}``) a ``TrainConfig`` describes."""
        kwargs = {arg: getattr(train_cfg, f) for f, arg in self.train_kwargs.items()}
        return {"arch": self.name, **self.fixed_kwargs, **kwargs, **train_cfg.model_kwargs}


_UNET_RECIPE = {"lr": 1e-3, "loss": "l1", "lr_step_fraction": 0.8}  # fastMRI's U-Net baseline
_UNET_SIZES = {"chans": "chans", "num_pools": "num_pool_layers", "drop_prob": "drop_prob"}

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("unet", "fnaf_jax.models.unet:Unet", "fnaf_jax.models.convert:unet_from_torch",
           "fnaf_jax.train.unet_task:UnetTask", _UNET_RECIPE, _UNET_SIZES,
           {"in_chans": 1, "out_chans": 1}, attack_chunks="loop"),
    # the 2020 fastMRI U-Net the FNAF paper attacked (biases, bilinear up-sampling)
    Family("unet-v0", "fnaf_jax.models.unet:UnetV0", "fnaf_jax.models.convert:unet_from_torch",
           "fnaf_jax.train.unet_task:UnetTask", _UNET_RECIPE, _UNET_SIZES,
           {"in_chans": 1, "out_chans": 1}, attack_chunks="loop"),
    # i-RIM release (irim_fastMRI tag 0.1): SSIM loss, Adam 1e-4, decay at epoch 30 of 50
    Family("irim", "fnaf_jax.models.irim:IRIM", "fnaf_jax.models.convert_irim:convert",
           "fnaf_jax.train.irim_task:IrimTask", {"lr": 1e-4, "loss": "ssim", "lr_step_fraction": 0.6},
           full_field_of_view=True),
)}
NAMES = tuple(FAMILIES)


def family(name: str) -> Family:
    """The family called ``name``; a clear error naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(NAMES)}") from None


def family_of(model) -> Family | None:
    """The family whose constructor built ``model`` (None for other modules)."""
    name = f"{type(model).__module__}:{type(model).__name__}"
    return next((f for f in FAMILIES.values() if f.constructor == name), None)


def resolve(target: str):
    """Import ``"module:attribute"``."""
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)
