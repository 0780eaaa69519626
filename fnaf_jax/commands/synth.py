"""``fnaf synth``: write a synthetic knee data set in fastMRI single-coil format
(``fnaf_jax.data.synthetic.synthesize``)."""

from __future__ import annotations

from fnaf_jax.commands.flags import add_fields, read_fields

HELP = {
    "out": "output folder",
    "volumes": "number of volumes",
    "slices": "slices per volume",
    "width": "k-space columns (phase encodes), >= 320",
    "seed": "random seed",
    "first_index": "index of the first volume: names start at file{1000001+I}.h5, so train and "
                   "val splits get distinct names",
    "lesions": "plant labelled lesions and write annotations.csv (fastMRI+ format)",
    "preview": "also save OUT/preview.png",
}


def register(subparsers) -> None:
    from fnaf_jax.data.synthetic import SynthConfig

    p = subparsers.add_parser(
        "synth",
        help="synthetic single-coil knee volumes in fastMRI format",
        description="Write synthetic coronal knee volumes (fastMRI single-coil HDF5 files "
        "file1000001.h5, ...) alternating CORPD_FBK and CORPDFS_FBK.",
    )
    add_fields(p, SynthConfig, HELP, required=("out",))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from fnaf_jax.data.synthetic import ANNOTATIONS, SynthConfig, synthesize

    cfg = SynthConfig(**read_fields(args, SynthConfig))
    paths = synthesize(cfg, progress=not args.no_progress)
    print(f"wrote {len(paths)} volumes to {cfg.out}")
    if cfg.lesions:
        print(f"lesion boxes: {Path(cfg.out) / ANNOTATIONS}")
    if cfg.preview:
        print(f"preview: {Path(cfg.out) / 'preview.png'}")
    return 0
