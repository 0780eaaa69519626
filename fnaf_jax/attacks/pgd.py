"""White-box FNAF attack: projected gradient ascent on Eq. 5 through the model.

The feature's shape stays the one drawn; its intensities and its location climb the loss.
Each step takes one forward and one backward pass per start (``gradients.FeatureGradient``)
and moves:

- the intensities by ``value_step * range * sign(dL/dv)``, projected onto the slice's
  range [min, max] (the set RS draws from; a constant-intensity search space keeps them);
- the anchor by ``step`` pixels along ``sum_i v_i * grad G(p_i)`` (the derivative of a
  sub-pixel shift), rounded and clipped so the feature stays in the box.

The first step sees the feature blurred by a Gaussian of width ``sigma`` and a region
grown by ``2 * sigma``: a relaxed loss whose gradient points towards what a model loses
even from a start where the exact loss is flat. Blur and step sizes anneal linearly to
zero over the steps; the final features are scored exactly (with the controls) by the
scorer, so every number recorded is the exact Eq. 5, as for RS and FD.
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
from fnaf_jax.gradients import FeatureGradient

_PGD_STREAM = 0x504744  # "PGD": its starts come from their own key stream


def start_keys(keys):
    """Per-sample keys of the starting features, apart from RS's and FD's draws."""
    return features.stream_keys(keys, _PGD_STREAM)


def _read(grid, pix):
    """``grid`` (B, S, H, W) at integer pixels ``pix`` (B, S, P, 2), clipped to the image."""
    h, w = grid.shape[-2:]
    r = jnp.clip(pix[..., 0], 0, h - 1)
    c = jnp.clip(pix[..., 1], 0, w - 1)
    b, s = jnp.meshgrid(jnp.arange(grid.shape[0]), jnp.arange(grid.shape[1]), indexing="ij")
    return grid[b[..., None], s[..., None], r, c]


def location_gradient(grad, cands: features.Candidates):
    """dL/d(anchor) (B, S, 2) from the sensitivity map: ``sum_i v_i * grad G(p_i)`` with
    central differences (the shift of every feature pixel together)."""
    pix = features.pixels(cands)
    unit = jnp.array([[1, 0], [0, 1]], jnp.int32)
    parts = [(_read(grad, pix + e) - _read(grad, pix - e)) / 2.0 for e in unit]
    v = cands.values
    return jnp.stack([(v * part).sum(-1) for part in parts], axis=-1)


@functools.partial(jax.jit, static_argnames="cfg")
def ascent_step(cands: features.Candidates, point, grad, lo, hi, frac, cfg: AttackConfig):
    """One projected ascent step (module docstring); ``frac`` anneals the step sizes."""
    g_loc = location_gradient(grad, cands)
    norm = jnp.linalg.norm(g_loc, axis=-1, keepdims=True)
    direction = jnp.where(norm > 0, g_loc / jnp.where(norm > 0, norm, 1.0), 0.0)
    low, high = (a.astype(jnp.float32) for a in features.location_bounds(cands.offsets, cfg.features))
    point = jnp.clip(point + cfg.pgd_step * frac * direction, low, high)
    values = cands.values
    if cfg.features.intensity == "uniform":
        lo, hi = lo[:, None, None], hi[:, None, None]
        g_val = _read(grad, features.pixels(cands))
        values = jnp.clip(values + cfg.pgd_value_step * frac * (hi - lo) * jnp.sign(g_val), lo, hi)
    return features.Candidates(cands.offsets, jnp.round(point).astype(jnp.int32), values), point


def gradient_of(scorer, cfg: AttackConfig) -> FeatureGradient:
    """The scorer's ``FeatureGradient`` (made once per scorer and relaxed radius)."""
    radius = cfg.objective.radius + 2.0 * cfg.pgd_sigma
    cache = scorer.__dict__.setdefault("_gradients", {})
    if radius not in cache:
        cache[radius] = FeatureGradient(scorer, radius)
    return cache[radius]


def pgd(scorer, batch, keys, cfg: AttackConfig = DEFAULT_ATTACK, start: features.Candidates | None = None,
        trace: list | None = None) -> AttackResult:
    """Run the gradient attack on a batch (one PRNG key per sample; module docstring).

    ``start`` (B, S, ...) replaces the drawn starting features; ``trace``, when given,
    collects the candidates of every step (tests and figures)."""
    y = jnp.asarray(batch["target_raw"], jnp.float32)
    cands = start if start is not None else draw(start_keys(keys), y, cfg.pgd_starts, cfg.features)
    if batch.get("clean_output") is None:
        batch = {**batch, "clean_output": scorer.clean_output(batch)}  # one no-feature pass, shared
    lo, hi = features.intensity_range(y)
    grad_fn = gradient_of(scorer, cfg)
    point = cands.location.astype(jnp.float32)
    for t in range(cfg.pgd_steps):
        frac = (cfg.pgd_steps - t) / cfg.pgd_steps
        if trace is not None:
            trace.append(cands)
        _, grad = grad_fn(batch, cands, cfg.pgd_sigma * frac)
        cands, point = ascent_step(cands, point, grad, lo, hi, jnp.float32(frac), cfg)
    if trace is not None:
        trace.append(cands)
    return summarize(scorer(batch, cands), cands, cfg)
