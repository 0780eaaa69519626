"""Finite-difference location ascent (SPEC 4).

Shape and intensities are drawn once per sample; the anchor p = (row, col) climbs the
loss: each iteration probes p +- h/2 on both coordinates, sets
``p <- clip(p + lr * g)`` and scores the new p. The new point and its probes share one
call, so 2 iterations cost 3 calls and 11 forward passes (the RS budget). The result is
the worst accepted point of all those scored.
"""

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
from fnaf_jax.attacks.random_search import draw

_FD_STREAM = 0x4644  # "FD": FD's starting feature comes from its own key stream, not RS's


def start_keys(keys):
    """Per-sample keys of FD's starting feature, apart from the RS draw of the same slice."""
    return features.stream_keys(keys, _FD_STREAM)


def _at(base: features.Candidates, points) -> features.Candidates:
    """Copies of each sample's single feature anchored at ``points`` (B, S, 2) (rounded)."""
    s = points.shape[1]
    return features.Candidates(
        offsets=jnp.repeat(base.offsets, s, axis=1),
        location=jnp.round(points).astype(jnp.int32),
        values=jnp.repeat(base.values, s, axis=1),
    )


def _probes(p, half, lo, hi):
    """p and its four probes p +- h/2 per coordinate, clipped to the box: (B, 5, 2)."""
    deltas = jnp.array([[0, 0], [half, 0], [-half, 0], [0, half], [0, -half]], jnp.float32)
    return jnp.clip(p[:, None, :] + deltas, lo[:, None, :], hi[:, None, :])


def _gradient(losses, points):
    """Central differences from the probe losses; the step is the actual (clipped, rounded) one."""
    pr = jnp.round(points)
    dist = jnp.stack([pr[:, 1, 0] - pr[:, 2, 0], pr[:, 3, 1] - pr[:, 4, 1]], axis=-1)
    diff = jnp.stack([losses[:, 1] - losses[:, 2], losses[:, 3] - losses[:, 4]], axis=-1)
    return jnp.where(dist > 0, diff / jnp.where(dist > 0, dist, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames="cfg")
def _points(base, p, cfg: AttackConfig):
    """p, its probes and their candidates; lo/hi keep the whole feature in the box."""
    lo, hi = (b.astype(jnp.float32) for b in features.location_bounds(base.offsets[:, 0], cfg.features))
    points = _probes(p, cfg.fd_step / 2, lo, hi)
    return points, _at(base, points)


@functools.partial(jax.jit, static_argnames="cfg")
def _ascend(base, p, points, losses, cfg: AttackConfig):
    """``p <- clip(p + lr * g)`` with g from the probe losses."""
    lo, hi = (b.astype(jnp.float32) for b in features.location_bounds(base.offsets[:, 0], cfg.features))
    return jnp.clip(p + cfg.fd_lr * _gradient(losses, points), lo, hi)


def finite_diff(scorer, batch, keys, cfg: AttackConfig = DEFAULT_ATTACK) -> AttackResult:
    """Run the FD attack on a batch (one PRNG key per sample); see the module docstring."""
    base = draw(start_keys(keys), jnp.asarray(batch["target_raw"], jnp.float32), 1, cfg.features)
    p = base.location[:, 0].astype(jnp.float32)
    if batch.get("clean_output") is None and hasattr(scorer, "clean_output"):
        batch = {**batch, "clean_output": scorer.clean_output(batch)}  # one no-feature call, shared
    all_scores, all_cands = [], []
    for _ in range(cfg.fd_iterations):
        points, cands = _points(base, p, cfg)
        scores = scorer(batch, cands)
        all_scores.append(scores), all_cands.append(cands)
        p = _ascend(base, p, points, scores.loss, cfg)
    cands = _at(base, p[:, None, :])
    all_scores.append(scorer(batch, cands)), all_cands.append(cands)
    return _concat_summary(all_scores, all_cands, cfg)


@functools.partial(jax.jit, static_argnames="cfg")
def _concat_summary(all_scores, all_cands, cfg: AttackConfig) -> AttackResult:
    def cat(*a):
        return jnp.concatenate(a, axis=1)

    return summarize(jax.tree.map(cat, *all_scores), jax.tree.map(cat, *all_cands), cfg)
