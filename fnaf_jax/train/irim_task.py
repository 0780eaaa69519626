"""The i-RIM training task: the release's recipe (irim_fastMRI tag 0.1) on the Task protocol.

Host side (``prepare_batch``), per slice, as the release's ``TrainingTransform``:
the fully sampled k-space (the "raw" transform, no mask function) goes to image space
over the full field of view, is zero-padded and centre-cropped to ``crop x crop``
(368 in the release), goes back to k-space, and is under-sampled with a column mask
drawn for ``crop`` columns: random in training (seed from ``rng``, so a resumed run
replays it), seeded by the file name in validation (``rng=None``). The batch holds the
zero-filled complex image ``y`` and its mask; the target is ``reconstruction_esc``
centre-cropped to ``min(320, crop)``.

Jitted side: the loss is ``1 - SSIM`` (default; or L1 / MSE) between the model's
magnitude image and the target, both divided by the volume's ``max`` attribute, as the
release trains. Gradients go through the i-RIM's memory-free backward pass when the
model was built with ``memory_free=True`` (the default). ``optimizer()`` gives the
release's Adam with step decay.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from fnaf_jax.data.header import metadata_or_zeros
from fnaf_jax.data.transforms import irim_sample
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.masks import create_mask_for_mask_type, draw_column_mask
from fnaf_jax.train.task import stack_items

LOSSES = ("ssim", "l1", "mse")
TRAIN_CROP = 368  # the release's --train_resolution 368 368


class IrimTask:
    """Train an ``IRIM`` model (see the module docstring)."""

    transform = "raw"

    def __init__(
        self,
        mask_func=None,
        crop: int = TRAIN_CROP,
        loss: str = "ssim",
        lr: float = 1e-4,
        lr_step_epochs: int = 30,
        lr_gamma: float = 0.1,
    ):
        if loss not in LOSSES:
            raise ConfigError(
                f"i-RIM loss {loss!r} unknown; choose one of {', '.join(LOSSES)}"
            )
        if crop < 8:
            raise ConfigError(f"i-RIM training crop {crop} too small (>= 8)")
        self.mask_func = mask_func or create_mask_for_mask_type("random", [0.08], [4])
        self.crop = int(crop)
        self.loss_name = loss
        self.lr = float(lr)
        self.lr_step_epochs = int(lr_step_epochs)
        self.lr_gamma = float(lr_gamma)

    @classmethod
    def from_config(cls, cfg) -> IrimTask:
        """From a ``TrainConfig``: masks, loss, lr and decay; crop None -> 368 (the release)."""
        mask_func = create_mask_for_mask_type(
            cfg.mask_type, list(cfg.center_fractions), list(cfg.accelerations)
        )
        step = max(1, round(cfg.lr_step_fraction * cfg.epochs))
        return cls(
            mask_func=mask_func,
            crop=cfg.crop or TRAIN_CROP,
            loss=cfg.loss,
            lr=cfg.lr,
            lr_step_epochs=step,
            lr_gamma=cfg.lr_gamma,
        )

    def optimizer(self, steps_per_epoch: int = 1) -> optax.GradientTransformation:
        """Adam (PyTorch defaults) with the learning rate times ``lr_gamma`` every
        ``lr_step_epochs`` epochs (the release: lr 1e-4, x0.1 every 30 epochs)."""
        schedule = optax.exponential_decay(
            self.lr,
            transition_steps=self.lr_step_epochs * max(1, steps_per_epoch),
            decay_rate=self.lr_gamma,
            staircase=True,
        )
        return optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8)

    # --- host side ---------------------------------------------------------------------
    def sizes(self, target_shape, training: bool) -> tuple[int, int]:
        """(field of view, output size) of one slice.

        Training: the ``crop x crop`` field of view, output ``min(320, crop)``.
        Validation: the output must cover the whole target (the loop compares it with
        ``target_raw``), so the field of view grows to at least the target (320) when
        ``crop`` is smaller (a smoke-run speed knob).
        """
        if training:
            return self.crop, min(320, self.crop)
        out_size = min(320, *target_shape)
        return max(self.crop, out_size), out_size

    def prepare_batch(self, items: list[dict], rng: np.random.Generator | None) -> dict:
        """Stacked ``y`` (B, F, F) complex64, ``mask`` (B, F), ``target`` (B, c, c),
        ``max_value`` (B,), ``metadata`` (B, 8) and ``target_raw`` (B, 320, 320), with the
        field of view F and output size c of ``sizes`` (``rng=None`` means validation)."""
        rows = []
        for item in items:
            where = f"{item.get('fname', '?')} slice {item.get('slice_num', '?')}"
            if "kspace" not in item:
                raise DataError(
                    f"{where}: IrimTask needs the 'raw' transform (no 'kspace')"
                )
            target = item.get("target_raw")
            if target is None:
                raise DataError(
                    f"{where}: no target (a test file cannot be used for training)"
                )
            target = np.asarray(target, np.float32)
            fov, out_size = self.sizes(target.shape, training=rng is not None)
            if min(target.shape) < out_size:
                raise DataError(
                    f"{where}: target {target.shape} smaller than {out_size}"
                )
            mask = draw_column_mask(self.mask_func, fov, item["fname"], rng)
            sample = irim_sample(item["kspace"], target, fov, out_size, mask)
            rows.append({**sample._asdict(), "max_value": np.float32(item["max_value"]),
                         "metadata": metadata_or_zeros(item.get("metadata")), "target_raw": target,
                         "fname": item.get("fname"), "slice_num": item.get("slice_num")})
        keys = ("y", "mask", "target", "max_value", "metadata", "target_raw")
        return stack_items(rows, keys)

    # --- jitted side -------------------------------------------------------------------
    def loss(self, model, batch, key):
        del key  # the i-RIM has no randomness in training
        out = model(batch["y"], batch["mask"], batch["metadata"])
        scale = batch["max_value"][:, None, None]
        out, target = out / scale, batch["target"] / scale
        if self.loss_name == "ssim":
            from fnaf_jax.metrics import ssim_jax

            value = 1.0 - jnp.mean(ssim_jax(target, out, 1.0))
        elif self.loss_name == "l1":
            value = jnp.mean(jnp.abs(out - target))
        else:
            value = jnp.mean(jnp.square(out - target))
        return value, {"l1": jnp.mean(jnp.abs(out - target))}

    def predict(self, model, batch):
        """Magnitude images (B, c, c) in the units of ``target_raw``; c = 320 for
        validation batches of fastMRI data (see ``sizes``)."""
        return model(batch["y"], batch["mask"], batch["metadata"])


def train_step(model, optimizer, task: IrimTask, batch, key=None):
    """One optimizer step outside the generic loop (``nnx.Optimizer``); returns the loss.

    The generic loop (``fnaf_jax.train.loop``) does the same from ``task.loss``; this is
    the small standalone path used by tests and the memory benchmark.
    """
    from flax import nnx

    def loss_fn(m):
        return task.loss(m, batch, key)

    (value, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return value, aux
