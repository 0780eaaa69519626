"""Reconstruction models (Flax NNX) and their PyTorch converters."""

from fnaf_jax.models.registry import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "build_model"]
