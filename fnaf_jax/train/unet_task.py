"""The U-Net training task: fastMRI's UnetDataTransform on the host, L1/MSE/SSIM in jit.

The task reads the "raw" transform of ``SliceDataset`` (built without a mask function, so
k-space arrives fully sampled) and draws the column masks itself in ``prepare_batch``:

* training (``rng`` given): the mask seed is drawn from ``rng``, which the loop derives
  from (seed, epoch, batch index), so a resumed run replays the very same masks;
* validation (``rng=None``): the seed is the file name, fastMRI's validation convention.

Test files (already under-sampled k-space, no target) keep their stored mask.
Batches hold 320x320 z-scored images, so slices of different k-space widths batch
together.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax.data.header import metadata_or_zeros
from fnaf_jax.data.transforms import unet_sample
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.masks import create_mask_for_mask_type, draw_column_mask
from fnaf_jax.physics import center_crop
from fnaf_jax.train.task import stack_items

LOSSES = ("l1", "mse", "ssim")


class UnetTask:
    """Train a z-scored image-to-image model (fastMRI U-Net or the 2020 v0 U-Net)."""

    transform = "raw"

    def __init__(self, loss: str = "l1", mask_func=None, crop: int | None = None):
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.loss_name = loss
        self.mask_func = mask_func or create_mask_for_mask_type("random", [0.08], [4])
        self.crop = crop

    @classmethod
    def from_config(cls, cfg) -> UnetTask:
        mask_func = create_mask_for_mask_type(cfg.mask_type, cfg.center_fractions,
                                              cfg.accelerations)
        return cls(loss=cfg.loss, mask_func=mask_func, crop=cfg.crop)

    # --- host side ---------------------------------------------------------------------
    def item_mask(self, item: dict, rng: np.random.Generator | None) -> np.ndarray:
        """Column mask of one item: stored for test files, else drawn (see module doc)."""
        width = item["kspace"].shape[-1]
        if item.get("target_raw") is None:  # test file: k-space is already under-sampled
            return np.asarray(item["mask"], np.float32)
        return draw_column_mask(self.mask_func, width, item["fname"], rng)

    def prepare_batch(self, items: list[dict], rng: np.random.Generator | None) -> dict:
        """Stacked UnetDataTransform outputs: image, target, mean, std, target_raw (B, ...)."""
        rows = []
        for item in items:
            if "kspace" not in item:
                raise DataError(f"{item.get('fname', '?')}: UnetTask needs the 'raw' transform "
                                "(item has no 'kspace')")
            target = item.get("target_raw")
            if target is None:
                raise DataError(f"{item['fname']} slice {item['slice_num']}: no target "
                                "(a test file cannot be used for training or validation)")
            mask = self.item_mask(item, rng)
            sample = unet_sample(item["kspace"], mask, target, crop=np.shape(target))
            rows.append({**sample._asdict(), "target_raw": np.asarray(target, np.float32),
                         "metadata": metadata_or_zeros(item.get("metadata")),
                         "fname": item["fname"], "slice_num": item["slice_num"]})
        return stack_items(rows, ("image", "target", "mean", "std", "target_raw", "metadata"))

    # --- jitted side -------------------------------------------------------------------
    def _crop(self, x):
        return x if self.crop is None else center_crop(x, (self.crop, self.crop))

    def loss(self, model, batch, key):
        del key  # the U-Net's only randomness (dropout) lives in its own nnx.Rngs
        image, target = self._crop(batch["image"]), self._crop(batch["target"])
        out = model(image[..., None])[..., 0]
        value = image_loss(self.loss_name, out, target)
        return value, {"l1": jnp.mean(jnp.abs(out - target))}

    def predict(self, model, batch):
        out = model(batch["image"][..., None])[..., 0]
        std = batch["std"][:, None, None]
        mean = batch["mean"][:, None, None]
        return out * std + mean


def image_loss(name: str, out, target):
    """Mean L1, mean squared error, or 1 - SSIM (fastMRI's SSIMLoss) between (B, H, W) images."""
    if name == "l1":
        return jnp.mean(jnp.abs(out - target))
    if name == "mse":
        return jnp.mean(jnp.square(out - target))
    if name == "ssim":
        return 1.0 - _ssim_loss_term(out, target)
    raise ConfigError(f"unknown loss {name!r}")


def _ssim_loss_term(out, target):
    from fnaf_jax.metrics import ssim_jax

    # fastMRI's SSIMLoss takes the data range from the target; per sample here.
    data_range = jax.lax.stop_gradient(jnp.max(target, axis=(-2, -1)) - jnp.min(target, axis=(-2, -1)))
    return jnp.mean(ssim_jax(target, out, data_range))
