"""FNAF objective (SPEC sections 1 and 3): Eq. 5 loss, information preservation, scoring.

``score`` evaluates every candidate of every sample in one call, using the linearity of
under-sampling: ``U(y + d) = U(y) + U(d)``, with ``U(y)`` computed once per slice and
``U(d)`` per candidate, and the reconstruction model called once over all B*K images
(or over chunks of at most ``max_images_per_call`` images, which gives the same numbers).

The loss lives in the z-scored space of the model input: output ``o`` and target
``t = y + d`` are both z-scored with the mean and std of ``|U(y + d)|``; ``t`` is clamped
to [-6, 6] like fastMRI's target, ``o`` is not (it is what the network produced).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from fnaf_jax import features
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.normalize import EPS, instance_stats, normalize
from fnaf_jax.physics import center_crop, undersample

REDUCTIONS = ("mse", "region_mean", "nmse")

#: ``recon_fn(u, mask, metadata) -> image``: zero-filled complex (N,H,W), mask (N,W),
#: metadata (N,8) or None -> magnitude (N,h,w) in the units of ``|u|``.
ReconFn = Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """Eq. 5 weights and reduction. Defaults: attack evaluation (alpha 0, beta 1, MSE)."""

    alpha: float = 0.0  # weight of the whole-image MSE
    beta: float = 1.0  # weight of the region term
    reduction: str = "mse"  # "mse" (paper), "region_mean", "nmse" (released code)
    radius: float = 5.0  # region T: pixels within this distance of a feature pixel
    max_images_per_call: int | None = 64  # chunk B*K above this; None: never chunk

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"loss reduction {self.reduction!r} unknown; expected one of {REDUCTIONS}")
        if self.max_images_per_call is not None and self.max_images_per_call < 1:
            raise ConfigError(f"max_images_per_call must be >= 1 or None, got {self.max_images_per_call}")


ATTACK = ObjectiveConfig()
ROBUST_TRAINING = ObjectiveConfig(alpha=1.0, beta=100.0)


def fnaf_loss(output, target, region, cfg: ObjectiveConfig = ATTACK):
    """Eq. 5 per image over the last two axes: ``alpha * MSE(o, t) + beta * R(T*o, T*t)``.

    ``R`` is the MSE over all H*W pixels ("mse"), the mean over the region's pixels only
    ("region_mean"), or ``||T*o - T*t||^2 / ||T*o||^2`` ("nmse", released code).
    """
    t = region.astype(output.dtype)
    sq = (output - target) ** 2
    whole = sq.mean(axis=(-2, -1))
    in_region = (sq * t).sum(axis=(-2, -1))
    if cfg.reduction == "mse":
        reg = in_region / (output.shape[-2] * output.shape[-1])
    elif cfg.reduction == "region_mean":
        reg = in_region / jnp.maximum(t.sum(axis=(-2, -1)), 1.0)
    else:
        reg = in_region / (((output * t) ** 2).sum(axis=(-2, -1)) + EPS)
    return cfg.alpha * whole + cfg.beta * reg


def information_preservation(x_feat, x_clean):
    """IP (Eq. 7/8): ``MSE(x_feat, x_clean)`` with both z-scored by the clean input's stats.

    Not clamped: a clamp would hide the very feature whose survival IP measures.
    """
    mean, std = instance_stats(x_clean)
    diff = normalize(x_feat, mean, std, clamp=None) - normalize(x_clean, mean, std, clamp=None)
    return (diff**2).mean(axis=(-2, -1))


def _batch_arrays(batch):
    """``target_raw`` (B,H,W), ``mask`` (B,W), ``metadata`` (B,8) or None, checked."""
    for key in ("target_raw", "mask"):
        if key not in batch or batch[key] is None:
            raise DataError(f"FNAF batch has no {key!r} (needs target_raw (B,H,W) and a (B,W) column mask)")
    y = jnp.asarray(batch["target_raw"], jnp.float32)
    mask = jnp.asarray(batch["mask"], jnp.float32)
    if y.ndim != 3 or mask.shape != (y.shape[0], y.shape[2]):
        raise DataError(
            f"FNAF batch: target_raw {y.shape} must be (B,H,W) and mask {mask.shape} (B,W) with the same B and W"
        )
    metadata = batch.get("metadata")
    return y, mask, (None if metadata is None else jnp.asarray(metadata, jnp.float32))


def _flat(candidates: features.Candidates):
    """(B, K, ...) leaves -> (B*K, 1, ...), so every image is its own one-candidate sample."""
    return jax.tree.map(lambda a: a.reshape(-1, 1, *a.shape[2:]), candidates)


def forward(recon_fn: ReconFn, batch, candidates: features.Candidates, radius: float = 5.0):
    """Model input, output, target and region for each candidate, in the z-scored space.

    Returns a dict of (B, K, ...) arrays: ``input`` (z-scored ``|U(y+d)|``, clamped, as the
    U-Net sees it), ``output`` and ``target`` (z-scored with the input's stats, target
    clamped), ``region`` (bool), ``mean``/``std`` (B, K) of ``|U(y+d)|``. Used for figures;
    ``score`` runs the same steps chunk by chunk.
    """
    y, mask, metadata = _batch_arrays(batch)
    b, k = candidates.location.shape[:2]
    idx = jnp.repeat(jnp.arange(b), k)
    u_clean = undersample(y, mask)
    out = _forward_flat(recon_fn, y, mask, metadata, u_clean, idx, _flat(candidates), radius)
    return {name: value.reshape(b, k, *value.shape[1:]) for name, value in out.items()}


def _forward_flat(recon_fn, y, mask, metadata, u_clean, idx, cand, radius):
    shape = y.shape[-2:]
    d = features.rasterize(cand, shape)[:, 0]  # (n, H, W)
    m = mask[idx]
    u = u_clean[idx] + undersample(d, m)  # linearity: U(y) once per slice
    x = jnp.abs(u)
    mean, std = instance_stats(x)
    output = recon_fn(u, m, None if metadata is None else metadata[idx])
    out_shape = output.shape[-2:]
    target = center_crop(y[idx] + d, out_shape)
    reg = center_crop(features.region(cand, shape, radius)[:, 0], out_shape)
    return {
        "input": normalize(x, mean, std),
        "output": normalize(output, mean, std, clamp=None),
        "target": normalize(target, mean, std),
        "region": reg,
        "ip": information_preservation(x, jnp.abs(u_clean[idx])),
        "mean": mean[..., 0, 0],
        "std": std[..., 0, 0],
    }


def score(recon_fn: ReconFn, batch, candidates: features.Candidates, cfg: ObjectiveConfig = ATTACK):
    """FNAF loss and IP of every candidate: ``(loss[B, K], ip[B, K])``.

    ``batch``: ``target_raw`` (B,H,W) clean images y, ``mask`` (B,W) column masks (one per
    sample, shared by its K candidates), optional ``metadata`` (B,8). Pure: call it under
    ``jit`` (``make_scorer``) or inside a jitted training loss.
    """
    y, mask, metadata = _batch_arrays(batch)
    b, k = candidates.location.shape[:2]
    n = b * k
    idx = jnp.repeat(jnp.arange(b), k)
    flat = _flat(candidates)
    u_clean = undersample(y, mask)

    def chunk(args):
        cidx, ccand = args
        out = _forward_flat(recon_fn, y, mask, metadata, u_clean, cidx, ccand, cfg.radius)
        return fnaf_loss(out["output"], out["target"], out["region"], cfg), out["ip"]

    size = cfg.max_images_per_call
    if size is None or n <= size:
        loss, ip = chunk((idx, flat))
    else:
        # Pad to whole chunks with copies of the last image, map over chunks, drop the pad.
        n_chunks = math.ceil(n / size)
        pad = n_chunks * size - n

        def split(a):
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
            return a.reshape(n_chunks, size, *a.shape[1:])

        loss, ip = jax.lax.map(chunk, (split(idx), jax.tree.map(split, flat)))
        loss, ip = loss.reshape(-1)[:n], ip.reshape(-1)[:n]
    return loss.reshape(b, k), ip.reshape(b, k)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"))
def _score_model(graphdef, state, batch, candidates, cfg):
    from flax import nnx

    return score(nnx.merge(graphdef, state).reconstruct, batch, candidates, cfg)


@functools.partial(jax.jit, static_argnames=("fn", "cfg"))
def _score_fn(fn, batch, candidates, cfg):
    return score(fn, batch, candidates, cfg)


def make_scorer(model_or_fn, cfg: ObjectiveConfig = ATTACK, mesh=None):
    """``scorer(batch, candidates) -> (loss[B,K], ip[B,K])``, jitted, for a model or recon_fn.

    An NNX model is split so that its weights are jit arguments, not constants baked into
    the program: one compilation per architecture and shape, shared by every checkpoint.
    With a ``mesh`` (several devices) the weights are replicated on it, for batches
    sharded over its data axis.
    """
    from flax import nnx

    if isinstance(model_or_fn, nnx.Module):
        graphdef, state = nnx.split(model_or_fn)
        if mesh is not None:
            from fnaf_jax import parallel

            state = parallel.replicate(state, mesh)
        return lambda batch, cand: _score_model(graphdef, state, _device_batch(batch), cand, cfg)
    if not callable(model_or_fn):
        raise ConfigError(f"expected an NNX model with .reconstruct or a recon_fn, got {type(model_or_fn)}")
    return lambda batch, cand: _score_fn(model_or_fn, _device_batch(batch), cand, cfg)


def _device_batch(batch):
    """Only the arrays ``score`` reads (strings and file names stay on the host)."""
    keep = {"target_raw": batch.get("target_raw"), "mask": batch.get("mask")}
    if batch.get("metadata") is not None:
        keep["metadata"] = batch["metadata"]
    return keep
