"""``fnaf evaluate``: fastMRI metrics (NMSE, PSNR, SSIM) of reconstructions against targets."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="fastMRI metrics of reconstructions against fully sampled targets",
        description="Score prediction volumes (HDF5 'reconstruction', as written by "
        "'fnaf reconstruct') against the fastMRI targets of the same file names, per "
        "volume, and print mean ± std per acceleration and acquisition.",
    )
    p.add_argument(
        "--target",
        required=True,
        type=Path,
        help="folder of fastMRI volumes holding the targets",
    )
    p.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="folder of prediction volumes with the same file names",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write metrics.json and metrics.md here (default: print only)",
    )
    p.add_argument(
        "--challenge",
        choices=("singlecoil", "multicoil"),
        default="singlecoil",
        help="target key: reconstruction_esc (singlecoil, default) or "
        "reconstruction_rss (multicoil)",
    )
    p.add_argument(
        "--maxval",
        choices=("volume", "attrs"),
        default="volume",
        help="data range of PSNR/SSIM: the target volume's max (default, as "
        "fastmri.evaluate) or the target file's 'max' attribute",
    )
    p.add_argument(
        "--acquisition",
        default=None,
        help="only volumes of this acquisition (e.g. CORPD_FBK)",
    )
    p.add_argument(
        "--acceleration",
        type=float,
        default=None,
        help="only volumes whose prediction has this 'acceleration' attribute",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from fnaf_jax.evaluation import evaluate_dirs, markdown_table, write_reports
    from fnaf_jax.metrics import aggregate

    records = evaluate_dirs(
        args.target,
        args.predictions,
        challenge=args.challenge,
        maxval=args.maxval,
        acquisition=args.acquisition,
        acceleration=args.acceleration,
    )
    groups = aggregate(records)
    print(markdown_table(groups), end="")
    if args.out is not None:
        settings = {
            "target": str(args.target),
            "predictions": str(args.predictions),
            "challenge": args.challenge,
            "maxval": args.maxval,
            "acquisition": args.acquisition,
            "acceleration": args.acceleration,
        }
        for path in write_reports(records, groups, args.out, settings):
            print(f"wrote {path}")
    return 0
