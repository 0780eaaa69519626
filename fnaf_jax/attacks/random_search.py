"""Random search (SPEC 4): K random candidates per sample, all scored in one compiled call."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fnaf_jax import features
from fnaf_jax.attacks.config import (
    DEFAULT_ATTACK,
    AttackConfig,
    AttackResult,
    summarize,
)


@functools.partial(jax.jit, static_argnames=("k", "cfg"))
def draw(keys, images, k: int, cfg: features.FeatureConfig):
    """K candidates per sample from per-sample ``keys``; intensities span each clean image."""
    lo, hi = features.intensity_range(images)
    return features.sample_each(keys, k, cfg, lo=lo, hi=hi)


def random_search(scorer, batch, keys, cfg: AttackConfig = DEFAULT_ATTACK) -> AttackResult:
    """Score ``cfg.k`` random features per sample; the worst accepted one wins.

    ``scorer(batch, candidates) -> Scores`` is ``objective.make_scorer(model)``;
    ``keys`` holds one PRNG key per sample (B,).
    """
    candidates = draw(keys, jnp.asarray(batch["target_raw"], jnp.float32), cfg.k, cfg.features)
    return summarize(scorer(batch, candidates), candidates, cfg)
