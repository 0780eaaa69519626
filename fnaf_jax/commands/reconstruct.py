"""``fnaf reconstruct``: fastMRI submission files from a model checkpoint.

For every ``.h5`` file in ``--data``: validation files (fully sampled k-space) are
under-sampled with the requested mask, seeded by the file name as fastMRI's validation
does; test files keep their stored mask. Slices go through ``model.reconstruct`` (so any
model family works) in batches, and ``OUT/<file name>`` receives ``reconstruction``
(S, 320, 320) float32 in the units of the target, with attrs ``acceleration``,
``center_fraction`` and ``checkpoint``: the format ``fnaf evaluate`` and fastMRI's
leaderboard read.
"""

from __future__ import annotations

from pathlib import Path

OUT_SIZE = (320, 320)
FULL_FIELD_OF_VIEW = ("irim",)  # these reconstruct from the whole image and crop themselves


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reconstruct",
        help="write fastMRI-format reconstructions of a data folder with a model checkpoint",
        description="Reconstruct every volume of a fastMRI single-coil folder (validation "
        "files are under-sampled with a file-name-seeded mask, test files use their stored "
        "mask) and write OUT/<file>.h5 with a 'reconstruction' dataset (S, 320, 320).",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint folder")
    p.add_argument("--data", required=True, type=Path, help="folder (or file) of .h5 volumes")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--acceleration", type=int, default=4, help="acceleration (default 4)")
    p.add_argument("--center-fraction", type=float, default=None,
                   help="fraction of centre columns kept (default: 0.08 at 4x, 0.04 at 8x)")
    p.add_argument("--mask-type", default="random",
                   help="random | equispaced | equispaced_fraction (default random)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="slices per model call (a multiple of the device count; default 8)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable data files (each is logged) instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    n = reconstruct_folder(args.checkpoint, args.data, args.out,
                           acceleration=args.acceleration,
                           center_fraction=args.center_fraction, mask_type=args.mask_type,
                           batch_size=args.batch_size, progress=not args.no_progress,
                           skip_bad=args.skip_bad)
    print(f"wrote {n} volumes to {args.out}")
    return 0


def make_reconstruct_fn(model, mesh):
    """Jitted ``(params, rest, u, mask, metadata) -> model.reconstruct(...)`` on the mesh."""
    import jax
    from flax import nnx

    from fnaf_jax import parallel

    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rep, shard = parallel.replicated(mesh), parallel.batch_sharding(mesh)

    def fn(params, rest, u, mask, metadata):
        return nnx.merge(graphdef, params, rest, copy=True).reconstruct(u, mask, metadata)

    jitted = jax.jit(fn, in_shardings=(rep, rep, shard, shard, shard), out_shardings=rep)
    return jitted, parallel.replicate(params, mesh), parallel.replicate(rest, mesh)


def reconstruct_folder(checkpoint, data, out, *, acceleration=4, center_fraction=None,
                       mask_type="random", batch_size=8, progress=True, skip_bad=False) -> int:
    """Reconstruct every volume in ``data`` into ``out``; returns the number of volumes."""
    import jax
    import numpy as np

    from fnaf_jax import parallel
    from fnaf_jax.data.fastmri import SliceDataset, ifft2c_np, unet_crop_size
    from fnaf_jax.errors import ConfigError
    from fnaf_jax.masks import create_mask_for_mask_type, default_center_fraction
    from fnaf_jax.models.store import load_model
    from fnaf_jax.physics import center_crop

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    mesh = parallel.make_mesh()
    parallel.check_batch_size(batch_size, mesh, what="--batch-size")
    model, record = load_model(checkpoint)
    arch = record["config"].get("arch")
    recon, params, rest = make_reconstruct_fn(model, mesh)
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    mask_func = create_mask_for_mask_type(mask_type, [center_fraction], [acceleration])
    dataset = SliceDataset(data, transform="raw", mask_func=mask_func, use_seed=True,
                           skip_bad=skip_bad)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset), desc="reconstruct", unit="slice", dynamic_ncols=True)
    start = 0
    for volume in dataset.volumes:
        crop = None if arch in FULL_FIELD_OF_VIEW else unet_crop_size(volume)
        slices = []
        for first in range(0, volume.num_slices, batch_size):
            items = [dataset[start + s]
                     for s in range(first, min(first + batch_size, volume.num_slices))]
            n = len(items)
            items += [items[-1]] * (batch_size - n)  # pad: every call has the same shape
            u = ifft2c_np(np.stack([it["kspace"] for it in items]))
            if crop is not None:  # fastMRI's U-Net sees the centre crop only
                u = center_crop(u, crop)
            batch = parallel.shard_batch({
                "u": u.astype(np.complex64),
                "mask": np.stack([it["mask"] for it in items]).astype(np.float32),
                "metadata": np.stack([it["metadata"] for it in items]).astype(np.float32),
            }, mesh)
            images = np.asarray(recon(params, rest, batch["u"], batch["mask"], batch["metadata"]))
            slices.append(_to_out_size(images[:n], volume.path, center_crop))
            if bar is not None:
                bar.update(n)
        start += volume.num_slices
        if jax.process_index() == 0:  # multi-host: every process holds the whole output
            _write(out / volume.fname, np.concatenate(slices), volume, acceleration,
                   center_fraction, checkpoint)
    if bar is not None:
        bar.close()
    return len(dataset.volumes)


def _to_out_size(images, path, center_crop):
    """Centre crop to 320 x 320; a smaller image (narrow k-space) cannot be submitted."""
    from fnaf_jax.errors import DataError

    h, w = images.shape[-2:]
    if h < OUT_SIZE[0] or w < OUT_SIZE[1]:
        raise DataError(f"{path}: reconstruction is {h}x{w}, smaller than {OUT_SIZE}")
    return center_crop(images, OUT_SIZE).astype("float32")


def _write(path, volume_images, volume, acceleration, center_fraction, checkpoint):
    """A volume's submission file; a test file reports its own under-sampling."""
    import h5py

    from fnaf_jax.data.reconstructions import write_reconstruction

    if volume.stored_mask is not None:
        with h5py.File(volume.path, "r") as f:
            acceleration = f.attrs.get("acceleration", acceleration)
        center_fraction = volume.stored_num_low / volume.kspace_shape[1]
    write_reconstruction(path, volume_images, acceleration=acceleration, center_fraction=center_fraction,
                         checkpoint=checkpoint)
