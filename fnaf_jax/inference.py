"""Reconstruct a data folder with a model checkpoint (``fnaf reconstruct``).

For every ``.h5`` file in ``data``: validation files (fully sampled k-space) are
under-sampled with the requested mask, seeded by the file name as fastMRI's validation
does; test files keep their stored mask. Slices go through ``model.reconstruct`` (so any
model family works; its family says whether it takes fastMRI's centre crop or the whole
field of view) in batches, and ``OUT/<file name>`` receives ``reconstruction``
(S, 320, 320) float32 in the units of the target (``fnaf_jax.data.reconstructions``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from fnaf_jax import parallel
from fnaf_jax.data.fastmri import SliceDataset, unet_crop_size
from fnaf_jax.data.reconstructions import write_reconstruction
from fnaf_jax.data.transforms import ifft2c
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.masks import DEFAULT_MASK, MaskSpec
from fnaf_jax.models.families import family
from fnaf_jax.models.store import load_model
from fnaf_jax.physics import center_crop

OUT_SIZE = (320, 320)


@dataclasses.dataclass(frozen=True)
class ReconstructConfig:
    checkpoint: str  # model checkpoint folder
    data: str  # folder (or file) of .h5 volumes
    out: str  # output folder
    mask: MaskSpec = DEFAULT_MASK
    batch_size: int = 8  # slices per model call (a multiple of the device count)
    skip_bad: bool = False  # skip unreadable data files (logged) instead of stopping

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")


def make_reconstruct_fn(model, mesh):
    """Jitted ``(params, rest, u, mask, metadata) -> model.reconstruct(...)`` on the mesh."""
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rep, shard = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    def fn(params, rest, u, mask, metadata):
        return nnx.merge(graphdef, params, rest, copy=True).reconstruct(u, mask, metadata)

    jitted = jax.jit(fn, in_shardings=(rep, rep, shard, shard, shard), out_shardings=rep)
    return jitted, parallel.replicate(params, mesh), parallel.replicate(rest, mesh)


def reconstruct_folder(cfg: ReconstructConfig, progress: bool = True) -> int:
    """``fnaf reconstruct``: every volume of ``cfg.data`` into ``cfg.out``; returns the
    number of volumes."""
    batch_size, checkpoint, out = cfg.batch_size, cfg.checkpoint, Path(cfg.out)
    acceleration, center_fraction = cfg.mask.acceleration, cfg.mask.fraction()
    mesh = parallel.make_mesh()
    parallel.check_batch_size(batch_size, mesh, what="--batch-size")
    model, record = load_model(checkpoint)
    full_view = family(record["config"].get("arch")).full_field_of_view
    recon, params, rest = make_reconstruct_fn(model, mesh)
    dataset = SliceDataset(cfg.data, transform="raw", mask_func=cfg.mask.mask_func(), use_seed=True,
                           skip_bad=cfg.skip_bad)
    out.mkdir(parents=True, exist_ok=True)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset), desc="reconstruct", unit="slice", dynamic_ncols=True)
    start = 0
    for volume in dataset.volumes:
        crop = None if full_view else unet_crop_size(volume)
        slices = []
        for first in range(0, volume.num_slices, batch_size):
            items = [dataset[start + s]
                     for s in range(first, min(first + batch_size, volume.num_slices))]
            n = len(items)
            items += [items[-1]] * (batch_size - n)  # pad: every call has the same shape
            u = ifft2c(np.stack([it["kspace"] for it in items]))
            if crop is not None:  # fastMRI's U-Net sees the centre crop only
                u = center_crop(u, crop)
            batch = parallel.shard_batch({
                "u": u.astype(np.complex64),
                "mask": np.stack([it["mask"] for it in items]).astype(np.float32),
                "metadata": np.stack([it["metadata"] for it in items]).astype(np.float32),
            }, mesh)
            images = np.asarray(recon(params, rest, batch["u"], batch["mask"], batch["metadata"]))
            slices.append(_to_out_size(images[:n], volume.path))
            if bar is not None:
                bar.update(n)
        start += volume.num_slices
        if jax.process_index() == 0:  # multi-host: every process holds the whole output
            _write(out / volume.fname, np.concatenate(slices), volume, acceleration,
                   center_fraction, checkpoint)
    if bar is not None:
        bar.close()
    return len(dataset.volumes)


def _to_out_size(images, path):
    """Centre crop to 320 x 320; a smaller image (narrow k-space) cannot be submitted."""
    h, w = images.shape[-2:]
    if h < OUT_SIZE[0] or w < OUT_SIZE[1]:
        raise DataError(f"{path}: reconstruction is {h}x{w}, smaller than {OUT_SIZE}")
    return center_crop(images, OUT_SIZE).astype("float32")


def _write(path, volume_images, volume, acceleration, center_fraction, checkpoint):
    """A volume's submission file; a test file reports its own under-sampling."""
    if volume.stored_mask is not None:
        acceleration = volume.stored_acceleration or acceleration
        center_fraction = volume.stored_num_low / volume.kspace_shape[1]
    write_reconstruction(path, volume_images, acceleration=acceleration, center_fraction=center_fraction,
                         checkpoint=checkpoint)
