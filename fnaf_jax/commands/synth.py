"""``fnaf synth``: write a synthetic knee data set in fastMRI single-coil format."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="synthetic single-coil knee volumes in fastMRI format",
        description="Write synthetic coronal knee volumes (fastMRI single-coil HDF5 files "
        "file1000001.h5, ...) alternating CORPD_FBK and CORPDFS_FBK.",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--volumes", type=int, default=8, metavar="N", help="number of volumes (default 8)")
    p.add_argument("--slices", type=int, default=12, metavar="S", help="slices per volume (default 12)")
    p.add_argument("--width", type=int, default=368, metavar="W",
                   help="k-space columns (phase encodes), >= 320 (default 368)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--first-index", type=int, default=0, metavar="I",
                   help="index of the first volume: names start at file{1000001+I}.h5, so "
                   "train and val splits get distinct names (default 0)")
    p.add_argument("--lesions", action="store_true",
                   help="plant labelled lesions and write annotations.csv (fastMRI+ format)")
    p.add_argument("--preview", action="store_true", help="also save DIR/preview.png")
    p.set_defaults(func=run)


def run(args) -> int:
    from fnaf_jax.data.synthetic import ANNOTATIONS, save_preview, write_dataset

    paths = write_dataset(args.out, n_volumes=args.volumes, n_slices=args.slices,
                          width=args.width, seed=args.seed, lesions=args.lesions,
                          progress=True, first_index=args.first_index)
    print(f"wrote {len(paths)} volumes to {args.out}")
    if args.lesions:
        print(f"lesion boxes: {args.out / ANNOTATIONS}")
    if args.preview:
        print(f"preview: {save_preview(args.out, args.out / 'preview.png')}")
    return 0
