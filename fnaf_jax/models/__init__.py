"""Reconstruction models (Flax NNX), their families and their PyTorch converters."""

from fnaf_jax.models.families import FAMILIES, NAMES, family
from fnaf_jax.models.registry import build_model

__all__ = ["FAMILIES", "NAMES", "build_model", "family"]
