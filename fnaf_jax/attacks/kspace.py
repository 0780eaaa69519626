"""k-space worst cases: additive perturbations of the measured data in an l2 ball.

The model sees ``u_e = U(y [+ d]) + ifft2c(M e)`` with ``||M e|| <= eps * ||M fft2c(y)||``
(the slice's own sampled k-space; orthonormal FFTs, so that is ``||U(y)||``). Projected
gradient ascent: a random start on the sphere, ``kspace_steps`` normalised steps of
``kspace_step`` times the radius, each projected back onto the ball (for a linear model
this is power iteration on the restricted operator), the best iterate kept;
one run per eps, the runs of every eps and slice scored in the same calls.

- ``kspace-pgd`` (Antun et al., PNAS 2020; Darestani, Chaudhari, Heckel, ICML 2021):
  target ``image`` maximises ``NMSE(f(u_e), y)``; target ``feature`` adds a feature ``d``
  (drawn as RS draws, from its own key stream) and maximises its Eq. 5 loss, reported
  with the feature-lost fraction (``o_0``, the reference of that fraction, is the
  unperturbed no-feature output: whatever the perturbation changes in the region counts).
- ``hallucinate``: the mirror image of FNAF. The slice has no feature; the perturbation
  is chosen to make the output show ``d`` where the ground truth has none. Its score is
  the *shown fraction* ``1 - ||T((o_e - o_0) - d)||^2 / ||T d||^2`` (z-scored like Eq. 5:
  0 when the output does not change, 1 when it shows exactly the feature, negative when
  it changes the region otherwise); a hit is ``shown >= shown_threshold`` (0.5: more than
  half of the feature's energy appears), reported beside the false-negative rate.

Every result carries the eps = 0 values (the unperturbed model) beside the curves.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnaf_jax import features
from fnaf_jax import objective as O
from fnaf_jax.attacks.config import DEFAULT_ATTACK, AttackConfig
from fnaf_jax.attacks.random_search import draw
from fnaf_jax.gradients import recon_of
from fnaf_jax.physics import center_crop, ifft2c

METHODS = ("kspace-pgd", "hallucinate")
_STREAM = 0x4B53  # "KS": the target feature and the random starts


class KspaceResult(NamedTuple):
    """Per slice (B, ...) and eps (E,): the best iterate's values and the eps = 0 ones."""

    eps: jax.Array  # (E,)
    objective: jax.Array  # (B, E) what was maximised (NMSE, Eq. 5 loss or shown fraction)
    nmse: jax.Array  # (B, E) of the output against the ground truth (with the feature, if any)
    loss: jax.Array  # (B, E) Eq. 5 of the feature's region
    lost: jax.Array  # (B, E) feature-lost fraction (feature target) / NaN
    shown: jax.Array  # (B, E) shown fraction (hallucinate) / NaN
    ratio: jax.Array  # (B, E) ||M e|| / ||y_k|| reached
    clean: jax.Array  # (B, 4) eps = 0: objective, nmse, loss, lost-or-shown
    candidate: features.Candidates  # (B, 1, ...) the feature d


def _metrics(out, d_z, method: str, target: str, cfg):
    """Objective, NMSE, Eq. 5, lost and shown fractions of forward outputs."""
    raw, truth = out["raw_output"], out["raw_target"]
    nmse = ((raw - truth) ** 2).sum((-2, -1)) / jnp.maximum((truth**2).sum((-2, -1)), O.EPS)
    loss = O.fnaf_loss(out["output"], out["target"], out["region"], cfg)
    nan = jnp.full_like(nmse, jnp.nan)
    if method == "hallucinate":
        shown = 1.0 - O.lost_fraction(out["output"], out["clean_output"], out["clean"] + d_z, out["clean"],
                                      out["region"])
        return shown, nmse, loss, nan, shown
    lost = O.lost_fraction(out["output"], out["clean_output"], out["target"], out["clean"], out["region"])
    objective = nmse if target == "image" else loss
    return objective, nmse, loss, lost, nan


@functools.partial(jax.jit, static_argnames=("static", "cfg", "method", "target", "with_grad"))
def _chunk(static, state, batch, idx, er, ei, d, reg, cfg, method, target, with_grad):
    """Metrics (and the gradient of the summed objective in ``(er, ei)``) of n images."""
    recon_fn = recon_of(static, state)
    y, mask, metadata = O._batch_arrays(batch)
    y, m = y[idx], mask[idx]
    meta = None if metadata is None else metadata[idx]
    clean = jnp.asarray(batch["clean_output"], jnp.float32)[idx]
    u0 = batch["u_clean"][idx]
    local = jnp.arange(idx.shape[0])
    with_feature = method == "kspace-pgd" and target == "feature"  # in the input
    d_in = d if with_feature else jnp.zeros_like(d)

    def run(er, ei):
        delta = ifft2c(m[..., None, :] * (er + 1j * ei))
        out = O.forward_images(recon_fn, y, m, meta, u0 + delta, local, d_in, reg, clean)
        if not with_feature:  # the ground truth has no feature (hallucinate: the one not to show)
            out["target"] = out["clean"]
            out["raw_target"] = center_crop(y, out["raw_output"].shape[-2:])
        d_z = center_crop(d, out["output"].shape[-2:]) / out["std"][:, None, None]
        values = _metrics(out, d_z, method, target, cfg)
        return values[0].sum(), values

    if not with_grad:
        return run(er, ei)[1], None
    (_, values), grads = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)(er, ei)
    return values, grads


@functools.partial(jax.jit, static_argnames="height")
def sphere(keys, masks, radius, height: int):
    """Random complex perturbations on the sampled columns, of norm ``radius``, one key
    per image (n,): a slice's start does not depend on its batch."""
    def one(key, mask):
        kr, ki = jax.random.split(key)
        shape = (height, mask.shape[-1])
        return jax.random.normal(kr, shape) * mask, jax.random.normal(ki, shape) * mask

    with features.pinned_prng():
        er, ei = jax.vmap(one)(keys, masks)
    return _rescale(er, ei, radius, sphere=True)


def _rescale(er, ei, radius, sphere=False):
    """Onto the ball of ``radius`` (the sphere with ``sphere``)."""
    norm = jnp.sqrt((er**2 + ei**2).sum((-2, -1)))
    scale = radius / jnp.maximum(norm, 1e-30)
    if not sphere:
        scale = jnp.minimum(scale, 1.0)
    return er * scale[:, None, None], ei * scale[:, None, None]


@jax.jit
def ascend(er, ei, gr, gi, radius, step):
    norm = jnp.sqrt((gr**2 + gi**2).sum((-2, -1)))
    scale = step * radius / jnp.maximum(norm, 1e-30)
    return _rescale(er + gr * scale[:, None, None], ei + gi * scale[:, None, None], radius)


class _Runner:
    """The chunked calls of one batch: n = B * E images (slice ``idx``, feature ``d``)."""

    def __init__(self, scorer, batch, idx, d, reg, cfg: AttackConfig, method: str):
        self.static, self.state = scorer.bound
        self.batch, self.idx, self.d, self.reg, self.cfg, self.method = batch, idx, d, reg, cfg, method
        n = idx.shape[0]
        self.n, self.size = n, (n if scorer.whole else O.images_per_call(cfg.objective, n))

    def __call__(self, er, ei, with_grad: bool):
        def call(*chunk):
            return _chunk(self.static, self.state, self.batch, *chunk, self.cfg.objective, self.method,
                          self.cfg.kspace_target, with_grad)

        return O.call_in_chunks(call, self.size, self.n, self.idx, er, ei, self.d, self.reg)


def kspace_attack(scorer, batch, keys, cfg: AttackConfig = DEFAULT_ATTACK, method: str = "kspace-pgd",
                  feature: features.Candidates | None = None) -> KspaceResult:
    """Run ``method`` (``METHODS``) on a batch, one PRNG key per slice (module docstring).

    ``feature`` (B, 1, ...) replaces the drawn target feature (tests)."""
    y = jnp.asarray(batch["target_raw"], jnp.float32)
    b, h, w = y.shape
    eps = jnp.asarray(cfg.eps, jnp.float32)
    e = eps.shape[0]
    skeys = features.stream_keys(keys, _STREAM)
    if feature is None:
        feature = draw(skeys, y, 1, cfg.features)
    batch = O._device_batch(batch)
    if batch.get("clean_output") is None:
        batch["clean_output"] = scorer.clean_output(batch)
    batch["u_clean"] = O._undersample_batch(batch)
    norm_k = jnp.sqrt((jnp.abs(batch["u_clean"]) ** 2).sum((-2, -1)))  # ||y_k|| per slice
    d1 = features.rasterize(feature, (h, w))[:, 0]
    reg1 = features.region(feature, (h, w), cfg.objective.radius)[:, 0]
    # the eps = 0 row first (one image per slice), then E images per slice
    idx0 = jnp.arange(b)
    zero = jnp.zeros((b, h, w), jnp.float32)
    clean_values, _ = _Runner(scorer, batch, idx0, d1, reg1, cfg, method)(zero, zero, False)

    idx = jnp.repeat(jnp.arange(b), e)
    radius = jnp.tile(eps, b) * norm_k[idx]
    run = _Runner(scorer, batch, idx, d1[idx], reg1[idx], cfg, method)
    masks = jnp.asarray(batch["mask"], jnp.float32)[idx]
    with features.pinned_prng():
        img_keys = jax.vmap(jax.random.fold_in)(skeys[idx], jnp.tile(jnp.arange(e), b))
    er, ei = sphere(img_keys, masks, radius, h)
    step = jnp.float32(cfg.kspace_step)
    best = None
    for t in range(cfg.kspace_steps + 1):
        last = t == cfg.kspace_steps
        values, grads = run(er, ei, with_grad=not last)
        ratio = jnp.sqrt((er**2 + ei**2).sum((-2, -1))) / norm_k[idx]
        current = (*values, ratio)
        if best is None:
            best = current
        else:
            better = values[0] > best[0]
            best = tuple(jnp.where(better, new, old) for new, old in zip(current, best, strict=True))
        if not last:
            er, ei = ascend(er, ei, *grads, radius, step)
    objective, nmse, loss, lost, shown, ratio = (a.reshape(b, e) for a in best)
    c_obj, c_nmse, c_loss, c_lost, c_shown = clean_values
    other = c_shown if method == "hallucinate" else c_lost
    return KspaceResult(eps, objective, nmse, loss, lost, shown, ratio,
                        jnp.stack([c_obj, c_nmse, c_loss, other], axis=-1), feature)
