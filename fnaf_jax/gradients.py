"""Gradients of the FNAF objective through the model: what white-box attacks climb.

``FeatureGradient(scorer)(batch, candidates, sigma)`` returns the ``Scores`` of B x K
candidate features and the *sensitivity map* ``G = dL/dd`` of each: how Eq. 5 (summed
over the images of a call, each image's loss depending on its own feature only) changes
with every pixel of the feature image ``d``. From ``G`` the gradient attack reads both of
its gradients exactly at integer positions: the intensities' ``G`` at the feature
pixels, the location's ``sum_i v_i * grad G(p_i)`` (central differences), which is the
derivative of moving the whole feature by a sub-pixel shift.

With ``sigma > 0`` the feature is blurred by a Gaussian of that width (in pixels) before
the model sees it and the region grows to ``radius_relaxed``: a relaxed objective whose
gradient is not zero where the exact one is flat (a feature just outside what a model
erases), annealed to the exact one by the attack. Autodiff through the blur returns the
blurred sensitivity, so the read-out above needs no change.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fnaf_jax import features
from fnaf_jax import objective as O


def recon_of(static, state):
    """The recon_fn of a scorer's ``bound`` pair: an NNX model's graph and weights merged
    (``.reconstruct``), or the recon_fn itself (``state`` None)."""
    if state is None:
        return static
    from flax import nnx

    return nnx.merge(static, state).reconstruct


def blur(images, sigma):
    """Gaussian blur of width ``sigma`` pixels over the last two axes (periodic, by FFT);
    ``sigma`` may be traced, and 0 returns ``images`` unchanged."""
    h, w = images.shape[-2:]
    fy = jnp.fft.fftfreq(h)[:, None]
    fx = jnp.fft.fftfreq(w)[None, :]
    kernel = jnp.exp(-2.0 * jnp.pi**2 * sigma**2 * (fy**2 + fx**2))
    smooth = jnp.fft.ifft2(jnp.fft.fft2(images) * kernel).real.astype(images.dtype)
    return jnp.where(sigma > 0, smooth, images)


def sensitivity(recon_fn, batch, idx, flat: features.Candidates, sigma, cfg: O.ObjectiveConfig, radius: float):
    """``(Scores (n,), G (n, H, W))`` of n flat candidates (candidate i on slice ``idx[i]``
    of ``batch``, which holds ``clean_output`` and ``u_clean``): pure, so a training step
    can run it under its own ``jit`` (adversarial training)."""
    y, mask, metadata = O._batch_arrays(batch)
    shape = y.shape[-2:]
    d0 = features.rasterize(flat, shape)[:, 0]
    reg = features.region(flat, shape, radius)[:, 0]
    clean = jnp.asarray(batch["clean_output"], jnp.float32)

    def total(d):
        out = O.forward_images(recon_fn, y, mask, metadata, batch["u_clean"], idx, blur(d, sigma), reg, clean)
        scores = O.scores_of(out, cfg)
        return scores.loss.sum(), scores

    (_, scores), grad = jax.value_and_grad(total, has_aux=True)(d0)
    return scores, grad


@functools.partial(jax.jit, static_argnames=("static", "cfg", "radius"))
def _sensitivity(static, state, batch, idx, flat, sigma, cfg, radius):
    return sensitivity(recon_of(static, state), batch, idx, flat, sigma, cfg, radius)


class FeatureGradient:
    """``grad(batch, candidates, sigma) -> (Scores (B, K), G (B, K, H, W))`` for the model
    of a ``Scorer`` (module docstring); the images go through in the scorer's chunks, one
    forward and one backward pass each."""

    def __init__(self, scorer: O.Scorer, radius_relaxed: float):
        self.scorer, self.radius = scorer, float(radius_relaxed)

    def __call__(self, batch, candidates: features.Candidates, sigma: float):
        scorer = self.scorer
        batch = O._device_batch(batch)
        if batch.get("clean_output") is None:
            batch["clean_output"] = scorer.clean_output(batch)
        batch["u_clean"] = O._undersample_batch(batch)
        b, k = candidates.location.shape[:2]
        n = b * k
        size = n if scorer.whole else O.images_per_call(scorer.cfg, n)
        sigma = jnp.float32(sigma)
        static, state = scorer.bound
        scores, grad = O.call_in_chunks(
            lambda idx, cand: _sensitivity(static, state, batch, idx, cand, sigma, scorer.cfg, self.radius),
            size, n, jnp.repeat(jnp.arange(b), k), O._flat(candidates))
        return O.Scores(*(a.reshape(b, k) for a in scores)), grad.reshape(b, k, *grad.shape[1:])
