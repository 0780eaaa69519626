"""``fnaf reconstruct``: fastMRI submission files from a model checkpoint
(``fnaf_jax.inference.reconstruct_folder``)."""

from __future__ import annotations

from pathlib import Path

from fnaf_jax.commands.flags import add_fields, read_fields
from fnaf_jax.commands.mask_flags import add_mask_arguments, mask_jobs

HELP = {
    "checkpoint": "model checkpoint folder",
    "data": "folder (or file) of .h5 volumes",
    "out": "output folder (with several accelerations OUT_4x, OUT_8x, ...)",
    "batch_size": "slices per model call (a multiple of the device count)",
    "skip_bad": "skip unreadable data files (each is logged) instead of stopping",
}


def register(subparsers) -> None:
    from fnaf_jax.inference import ReconstructConfig

    p = subparsers.add_parser(
        "reconstruct",
        help="write fastMRI-format reconstructions of a data folder with a model checkpoint",
        description="Reconstruct every volume of a fastMRI single-coil folder (validation "
        "files are under-sampled with a file-name-seeded mask, test files use their stored "
        "mask) and write OUT/<file>.h5 with a 'reconstruction' dataset (S, 320, 320).",
    )
    add_fields(p, ReconstructConfig, HELP, skip=("mask",), required=("checkpoint", "data", "out"))
    add_mask_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def configs(args) -> list:
    from fnaf_jax.inference import ReconstructConfig

    fields = read_fields(args, ReconstructConfig, skip=("mask", "out"))
    return [ReconstructConfig(**fields, out=str(out), mask=spec) for spec, out in mask_jobs(args, Path(args.out))]


def run(args) -> int:
    from fnaf_jax.inference import reconstruct_folder

    for cfg in configs(args):
        n = reconstruct_folder(cfg, progress=not args.no_progress)
        print(f"wrote {n} volumes to {cfg.out}")
    return 0
