"""FNAF objective (SPEC sections 1 and 3): Eq. 5 loss, information preservation, scoring.

``score`` evaluates every candidate of every sample in one call, using the linearity of
under-sampling: ``U(y + d) = U(y) + U(d)``, with ``U(y)`` computed once per slice and
``U(d)`` per candidate, and the reconstruction model called once over all B*K images
(in chunks of ``images_per_call`` images, the backend's fastest: the same numbers).

The loss lives in the z-scored space of the model input: output ``o`` and target
``t = y + d`` are both z-scored with the mean and std of ``|U(y + d)|``; ``t`` is clamped
to [-6, 6] like fastMRI's target, ``o`` is not (it is what the network produced).

``score_controls`` adds, in the same compiled call, the controls that say what a loss
means (docs/attacks.md, "Controls"): the *no-feature* loss (the same slice, mask and
region with no feature: background error), the *oracle eraser* loss (the output replaced
by the clean image: what losing the whole feature costs) and the *feature-lost fraction*
``||T((o - o0) - (t - y))||^2 / ||T(t - y)||^2``, where ``o0`` is the model's output
without the feature: 0 for a model that reproduces the target, 1 for the eraser.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnaf_jax import features
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.normalize import EPS, instance_stats, normalize
from fnaf_jax.physics import center_crop, undersample, undersample_points

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
    max_images_per_call: int | None = None  # model images per call; None: the backend's rule

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"loss reduction {self.reduction!r} unknown; expected one of {REDUCTIONS}")
        if self.max_images_per_call is not None and self.max_images_per_call < 1:
            raise ConfigError(f"max_images_per_call must be >= 1 or None, got {self.max_images_per_call}")


#: Images per model call when the config leaves it to the backend (measured with
#: benchmarks/attack_throughput.py and attack_profile.py): XLA's CPU convolutions run
#: fastest on a couple of images at a time (the activations of dozens of 320x320 images do
#: not stay in cache), accelerators on large batches (64 bounds the memory).
IMAGES_PER_CALL = {"cpu": 2}
ACCELERATOR_IMAGES_PER_CALL = 64


def images_per_call(cfg: ObjectiveConfig, n: int) -> int:
    """How many of ``n`` model inputs one ``Scorer`` call processes: the config's number, or
    the backend's rule (``IMAGES_PER_CALL``). Chunking changes no number, only the speed."""
    size = cfg.max_images_per_call
    if size is None:
        size = IMAGES_PER_CALL.get(jax.default_backend(), ACCELERATOR_IMAGES_PER_CALL)
    return max(1, min(int(size), n))


ATTACK = ObjectiveConfig()
ROBUST_TRAINING = ObjectiveConfig(alpha=1.0, beta=100.0)


def fnaf_loss(output, target, region, cfg: ObjectiveConfig = ATTACK):
    """Eq. 5 per image over the last two axes: ``alpha * MSE(o, t) + beta * R(T*o, T*t)``.

    ``R`` is the MSE over all H*W pixels ("mse"), the mean over the region's pixels only
    ("region_mean"), or ``||T*o - T*t||^2 / ||T*o||^2`` ("nmse", released code).
    """
    t = region.astype(output.dtype)
    sq = (output - target) ** 2
    # alpha is static: at 0 (attacks) skip the whole-image pass rather than multiply it by 0
    whole = sq.mean(axis=(-2, -1)) if cfg.alpha else 0.0
    in_region = (sq * t).sum(axis=(-2, -1))
    if cfg.reduction == "mse":
        reg = in_region / (output.shape[-2] * output.shape[-1])
    elif cfg.reduction == "region_mean":
        reg = in_region / jnp.maximum(t.sum(axis=(-2, -1)), 1.0)
    else:
        reg = in_region / (((output * t) ** 2).sum(axis=(-2, -1)) + EPS)
    return cfg.alpha * whole + cfg.beta * reg


def information_preservation(x_feat, x_clean, clean_stats=None):
    """IP (Eq. 7/8): ``MSE(x_feat, x_clean)`` with both z-scored by the clean input's stats
    (``clean_stats = (mean, std)`` when the caller has them already).

    Not clamped: a clamp would hide the very feature whose survival IP measures.
    """
    mean, std = instance_stats(x_clean) if clean_stats is None else clean_stats
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


def _forward_flat(recon_fn, y, mask, metadata, u_clean, idx, cand, radius, clean_output=None):
    shape = y.shape[-2:]
    points = features.points(cand)  # rows, cols, values (n, 1, P): for d and for U(d)
    d = features.scatter(*points, shape)[:, 0]  # (n, H, W), as features.rasterize
    reg = features.region(cand, shape, radius)[:, 0]
    u_d = undersample_points(*(a[:, 0] for a in points), mask[idx], shape)  # a fraction of a dense U(d)
    return forward_images(recon_fn, y, mask, metadata, u_clean, idx, d, reg, clean_output, u_d)


def forward_images(recon_fn, y, mask, metadata, u_clean, idx, d, reg, clean_output=None, u_d=None):
    """``_forward_flat`` for feature images ``d`` (n, H, W) added to slices ``idx`` of ``y``
    with loss regions ``reg`` (n, H, W): differentiable in ``d`` (gradient attacks).
    ``u_d`` is ``U(d)`` when the caller has it (sparse features: ``undersample_points``)."""
    m = mask[idx]
    u = u_clean[idx] + (undersample(d, m) if u_d is None else u_d)  # linearity: U(y) once per slice
    x = jnp.abs(u)
    mean, std = instance_stats(x)
    output = recon_fn(u, m, None if metadata is None else metadata[idx])
    out_shape = output.shape[-2:]
    clean = center_crop(y[idx], out_shape)
    target = center_crop(y[idx] + d, out_shape)
    reg = center_crop(reg, out_shape)
    x_clean = jnp.abs(u_clean[idx])
    mean0, std0 = instance_stats(x_clean)  # of the input without the feature: IP and no-feature control
    out = {
        "input": normalize(x, mean, std),
        "output": normalize(output, mean, std, clamp=None),
        "target": normalize(target, mean, std),
        "region": reg,
        "ip": information_preservation(x, x_clean, (mean0, std0)),
        "mean": mean[..., 0, 0],
        "std": std[..., 0, 0],
        "raw_output": output,  # in the units of |u| (NMSE against the ground truth)
        "raw_target": target,
    }
    if clean_output is not None:
        o0 = clean_output[idx]  # the model's output for the slice without the feature
        out["clean"] = normalize(clean, mean, std)
        out["clean_output"] = normalize(o0, mean, std, clamp=None)
        # the no-feature control lives in the statistics of the input it was made from
        out["nofeature_output"] = normalize(o0, mean0, std0, clamp=None)
        out["nofeature_target"] = normalize(clean, mean0, std0)
        out["eraser_output"] = normalize(clean, mean, std, clamp=None)
    return out


def lost_fraction(output, clean_output, target, clean, region):
    """Share of the feature the model lost inside the region, per image (last two axes).

    ``(output - clean_output)`` is the model's response to the feature and ``target -
    clean`` the feature itself (all z-scored alike): 0 when the response is the feature,
    1 when there is none (the eraser), above 1 when the response points the other way.
    NaN where the feature is zero inside the region (nothing to lose).
    """
    t = region.astype(output.dtype)
    feature = target - clean
    num = (((output - clean_output) - feature) ** 2 * t).sum(axis=(-2, -1))
    den = (feature**2 * t).sum(axis=(-2, -1))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


class Scores(NamedTuple):
    """Per-candidate scores (B, K) of ``score_controls``."""

    loss: jax.Array  # Eq. 5
    ip: jax.Array  # information preservation
    nofeature: jax.Array  # Eq. 5 at the same region with no feature (background error)
    eraser: jax.Array  # Eq. 5 of the oracle eraser (output = clean image)
    lost: jax.Array  # feature-lost fraction (0 kept, 1 erased)


def score(recon_fn: ReconFn, batch, candidates: features.Candidates, cfg: ObjectiveConfig = ATTACK):
    """FNAF loss and IP of every candidate: ``(loss[B, K], ip[B, K])``.

    ``batch``: ``target_raw`` (B,H,W) clean images y, ``mask`` (B,W) column masks (one per
    sample, shared by its K candidates), optional ``metadata`` (B,8). Pure: call it under
    ``jit`` or inside a jitted training loss.
    """
    def per_image(out):
        return fnaf_loss(out["output"], out["target"], out["region"], cfg), out["ip"]

    return _score_chunked(recon_fn, batch, candidates, cfg, per_image, None)


def information_preserved(batch, candidates: features.Candidates) -> jax.Array:
    """IP (B, K) of every candidate without running a model (FFTs only): what robust
    training checks before it trains on a feature."""
    y, mask, _ = _batch_arrays(batch)
    d = features.rasterize(candidates, y.shape[-2:])  # (B, K, H, W)
    u_clean = undersample(y, mask)
    u = u_clean[:, None] + undersample(d, mask[:, None, :])
    return information_preservation(jnp.abs(u), jnp.abs(u_clean)[:, None])


def clean_outputs(recon_fn: ReconFn, batch) -> jax.Array:
    """The model's output for each slice without a feature, (B, h, w): the no-feature run."""
    y, mask, metadata = _batch_arrays(batch)
    return recon_fn(undersample(y, mask), mask, metadata)


def score_controls(recon_fn: ReconFn, batch, candidates: features.Candidates,
                   cfg: ObjectiveConfig = ATTACK, chunk: int | None = None) -> Scores:
    """``Scores`` of every candidate: Eq. 5, IP and the controls (module docstring).

    The no-feature output is one extra model call per slice (B images beside B*K), taken
    from ``batch["clean_output"]`` when the caller computed it already (``clean_outputs``).
    """
    clean = batch.get("clean_output")
    if clean is None:
        clean = clean_outputs(recon_fn, batch)

    return Scores(*_score_chunked(recon_fn, batch, candidates, cfg, lambda out: scores_of(out, cfg),
                                  jnp.asarray(clean, jnp.float32), chunk))


def scores_of(out: dict, cfg: ObjectiveConfig) -> Scores:
    """Eq. 5, IP and the controls of forward outputs (``_forward_flat`` with a clean output)."""
    return Scores(
        loss=fnaf_loss(out["output"], out["target"], out["region"], cfg),
        ip=out["ip"],
        nofeature=fnaf_loss(out["nofeature_output"], out["nofeature_target"], out["region"], cfg),
        eraser=fnaf_loss(out["eraser_output"], out["target"], out["region"], cfg),
        lost=lost_fraction(out["output"], out["clean_output"], out["target"], out["clean"], out["region"]),
    )


def _pad_to_chunks(a, size: int):
    """``a`` padded on axis 0 with copies of its last entry to a whole number of ``size``
    chunks (the copies are scored and dropped: every chunk has one shape, one compilation)."""
    pad = -a.shape[0] % size
    return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a


@functools.partial(jax.jit, static_argnums=0)
def _split_chunks(size: int, arrays):
    """``arrays`` (pytrees with leading axis n) padded and cut into chunks of ``size``, as
    one compiled call. Sliced eagerly, every array of every chunk is a dispatch of its own,
    and on a CPU each waits for the model call queued before it: the device idles between
    chunks (the small i-RIM's RS: 176 such slices for 22 chunks)."""
    padded = jax.tree.map(lambda a: _pad_to_chunks(a, size), arrays)
    total = jax.tree.leaves(padded)[0].shape[0]
    return [jax.tree.map(lambda a, i=i: a[i:i + size], padded) for i in range(0, total, size)]


@functools.partial(jax.jit, static_argnums=0)
def _join_chunks(n: int, parts):
    return jax.tree.map(lambda *p: jnp.concatenate(p)[:n], *parts)


def call_in_chunks(fn, size: int, n: int, *arrays):
    """``fn(*chunk)`` over ``arrays`` (pytrees with leading axis ``n``) in chunks of
    ``size``, the last padded (one shape: one compilation); the outputs (pytrees, ``None``
    leaves allowed) concatenated and cut to ``n``. The separate-calls path of every chunked
    model call (the scorer, the feature gradient, the k-space attacks)."""
    parts = [fn(*chunk) for chunk in _split_chunks(size, arrays)]
    return _join_chunks(n, parts)


def _score_chunked(recon_fn, batch, candidates, cfg, per_image, clean_output, images=None):
    """``per_image(forward outputs)`` of all B*K candidates, in chunks of at most ``images``
    (or ``cfg.max_images_per_call``) images inside the program (the same numbers either
    way), reshaped to (B, K)."""
    y, mask, metadata = _batch_arrays(batch)
    b, k = candidates.location.shape[:2]
    n = b * k
    idx = jnp.repeat(jnp.arange(b), k)
    flat = _flat(candidates)
    u_clean = undersample(y, mask)

    def chunk(args):
        cidx, ccand = args
        return per_image(_forward_flat(recon_fn, y, mask, metadata, u_clean, cidx, ccand, cfg.radius,
                                       clean_output))

    # inside a compiled program only an explicit cap (memory) or a Scorer's ``chunk`` splits
    # the work: a lax.map loop can cost more than it saves (the i-RIM runs 8x slower in one)
    size = images or cfg.max_images_per_call
    if size is None or n <= size:
        out = chunk((idx, flat))
    else:
        # Pad to whole chunks, map over chunks, drop the pad.
        def split(a):
            a = _pad_to_chunks(a, size)
            return a.reshape(-1, size, *a.shape[1:])

        out = jax.lax.map(chunk, (split(idx), jax.tree.map(split, flat)))
        out = jax.tree.map(lambda a: a.reshape(-1)[:n], out)
    return tuple(a.reshape(b, k) for a in out)


def score_images(recon_fn: ReconFn, batch, idx, flat: features.Candidates, cfg: ObjectiveConfig) -> Scores:
    """``Scores`` (n,) of n flat candidates, candidate i added to slice ``idx[i]`` of the
    batch, which holds ``clean_output`` and ``u_clean`` (``U(y)`` of each slice, computed
    once per batch: linearity): one chunk of a ``Scorer`` call."""
    y, mask, metadata = _batch_arrays(batch)
    out = _forward_flat(recon_fn, y, mask, metadata, batch["u_clean"], idx, flat, cfg.radius,
                        jnp.asarray(batch["clean_output"], jnp.float32))
    return scores_of(out, cfg)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "chunk"))
def _score_model(graphdef, state, batch, candidates, cfg, chunk):
    from flax import nnx

    return score_controls(nnx.merge(graphdef, state).reconstruct, batch, candidates, cfg, chunk)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"))
def _images_model(graphdef, state, batch, idx, flat, cfg):
    from flax import nnx

    return score_images(nnx.merge(graphdef, state).reconstruct, batch, idx, flat, cfg)


@functools.partial(jax.jit, static_argnames=("fn", "cfg"))
def _images_fn(fn, batch, idx, flat, cfg):
    return score_images(fn, batch, idx, flat, cfg)


@jax.jit
def _undersample_batch(batch):
    y, mask, _ = _batch_arrays(batch)
    return undersample(y, mask)


@functools.partial(jax.jit, static_argnames="graphdef")
def _clean_model(graphdef, state, batch):
    from flax import nnx

    return clean_outputs(nnx.merge(graphdef, state).reconstruct, batch)


@functools.partial(jax.jit, static_argnames="fn")
def _clean_fn(fn, batch):
    return clean_outputs(fn, batch)


def check_recon(model_or_fn, image_shape=(320, 320)) -> None:
    """Check the ``recon_fn`` contract up front, with one clear error naming what is wrong:
    an NNX model needs ``.reconstruct``; the function must be traceable by JAX and return
    (N, h, w) real images for (N, H, W) complex64 input, an (N, W) mask and (N, 8) metadata."""
    from flax import nnx

    if isinstance(model_or_fn, nnx.Module):
        if not callable(getattr(model_or_fn, "reconstruct", None)):
            raise ConfigError(f"{type(model_or_fn).__name__} has no .reconstruct(u, mask, metadata) method: "
                              "attacks need it (or pass a recon_fn)")
        fn = model_or_fn.reconstruct
    elif callable(model_or_fn):
        fn = model_or_fn
    else:
        raise ConfigError(f"expected an NNX model with .reconstruct or a recon_fn, got {type(model_or_fn).__name__}")
    n, (h, w) = 2, image_shape
    args = (jax.ShapeDtypeStruct((n, h, w), jnp.complex64), jax.ShapeDtypeStruct((n, w), jnp.float32),
            jax.ShapeDtypeStruct((n, 8), jnp.float32))
    try:
        out = jax.eval_shape(fn, *args)
    except jax.errors.TracerArrayConversionError:
        raise ConfigError("recon_fn must be a pure JAX function of its arrays: it converts them to NumPy "
                          "(use jax.numpy inside, or wrap host code with jax.pure_callback)") from None
    except Exception as exc:  # noqa: BLE001 (whatever the user's function raised, named once)
        raise ConfigError(f"recon_fn fails on (N, H, W) = {args[0].shape} complex64 input: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or len(shape) != 3 or shape[0] != n or not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(f"recon_fn must return (N, h, w) real magnitude images; for input {args[0].shape} "
                          f"it returned {shape} {dtype}")


class Scorer:
    """``scorer(batch, candidates) -> Scores`` (B, K), jitted, for a model or a recon_fn.

    The B*K model inputs go through the compiled scoring function in calls of
    ``images_per_call`` images (the backend's fastest: on CPU a couple of 320x320 images,
    on accelerators dozens), the last call padded, so one compilation serves every call.
    Chunks are separate calls, except for model families that run as fast inside a
    ``lax.map`` loop (``Family.attack_chunks == "loop"``: the U-Nets), which saves the
    calls' overhead; XLA runs the i-RIM several times slower inside a loop. Under a device
    mesh the whole batch is one call (each device already holds only its share).

    ``scorer.clean_output(batch)`` is the no-feature output of each slice; an attack that
    scores one batch several times (finite differences) puts it in the batch as
    ``clean_output`` once, so the control costs one model call per slice in all.
    """

    def __init__(self, images_fn, clean, cfg: ObjectiveConfig, whole: bool = False, looped=None, bound=None):
        self._images, self._clean, self.cfg, self.whole = images_fn, clean, cfg, whole
        # what is scored, as (graphdef, weights) of an NNX model (the weights on the mesh
        # when there is one) or (recon_fn, None): gradient attacks differentiate it
        self.bound = bound
        self._looped = looped  # (batch, candidates, chunk) -> Scores: chunks inside one call

    def __call__(self, batch, candidates) -> Scores:
        batch = _device_batch(batch)
        if batch.get("clean_output") is None:
            batch["clean_output"] = self._clean(batch)
        b, k = candidates.location.shape[:2]
        n = b * k
        size = n if self.whole else images_per_call(self.cfg, n)
        if self._looped is not None:
            return self._looped(batch, candidates, size)
        batch["u_clean"] = _undersample_batch(batch)  # once per slice, not per chunk
        scores = call_in_chunks(lambda idx, cand: self._images(batch, idx, cand), size, n,
                                jnp.repeat(jnp.arange(b), k), _flat(candidates))
        return Scores(*(a.reshape(b, k) for a in scores))

    def clean_output(self, batch) -> jax.Array:
        return self._clean(_device_batch(batch))


def make_scorer(model_or_fn, cfg: ObjectiveConfig = ATTACK, mesh=None) -> Scorer:
    """A jitted ``Scorer`` for an NNX model (its ``.reconstruct``) or a recon_fn.

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
        from fnaf_jax.models.families import family_of

        fam = family_of(model_or_fn)
        looped = None
        if fam is not None and fam.attack_chunks == "loop":
            def looped(batch, cand, chunk):
                return _score_model(graphdef, state, batch, cand, cfg, chunk)
        return Scorer(lambda batch, idx, cand: _images_model(graphdef, state, batch, idx, cand, cfg),
                      lambda batch: _clean_model(graphdef, state, batch), cfg, whole=mesh is not None,
                      looped=looped, bound=(graphdef, state))
    if not callable(model_or_fn):
        raise ConfigError(f"expected an NNX model with .reconstruct or a recon_fn, got {type(model_or_fn)}")
    return Scorer(lambda batch, idx, cand: _images_fn(model_or_fn, batch, idx, cand, cfg),
                  lambda batch: _clean_fn(model_or_fn, batch), cfg, whole=mesh is not None,
                  bound=(model_or_fn, None))


def _device_batch(batch):
    """Only the arrays the scorer reads (strings and file names stay on the host)."""
    keep = {"target_raw": batch.get("target_raw"), "mask": batch.get("mask")}
    for key in ("metadata", "clean_output"):
        if batch.get(key) is not None:
            keep[key] = batch[key]
    return keep
