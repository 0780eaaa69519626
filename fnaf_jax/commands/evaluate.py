"""``fnaf evaluate``: fastMRI metrics (NMSE, PSNR, SSIM) of reconstructions against targets
(``fnaf_jax.evaluation.evaluate``)."""

from __future__ import annotations

from fnaf_jax.commands.flags import add_fields, read_fields

HELP = {
    "target": "folder of fastMRI volumes holding the targets",
    "predictions": "folder of prediction volumes with the same file names",
    "out": "write metrics.json and metrics.md here (default: print only)",
    "challenge": "target key: reconstruction_esc (singlecoil) or reconstruction_rss (multicoil)",
    "maxval": "data range of PSNR/SSIM: the target volume's max (as fastmri.evaluate) or the "
              "target file's 'max' attribute",
    "acquisition": "only volumes of this acquisition (e.g. CORPD_FBK)",
    "acceleration": "only volumes whose prediction has this 'acceleration' attribute",
}


def register(subparsers) -> None:
    from fnaf_jax.evaluation import EvaluateConfig

    p = subparsers.add_parser(
        "evaluate",
        help="fastMRI metrics of reconstructions against fully sampled targets",
        description="Score prediction volumes (HDF5 'reconstruction', as written by "
        "'fnaf reconstruct') against the fastMRI targets of the same file names, per "
        "volume, and print mean ± std per acceleration and acquisition.",
    )
    add_fields(p, EvaluateConfig, HELP, required=("target", "predictions"),
               choices={"challenge": ("singlecoil", "multicoil"), "maxval": ("volume", "attrs")})
    p.set_defaults(func=run)


def run(args) -> int:
    from fnaf_jax.evaluation import EvaluateConfig, evaluate, markdown_table

    _, groups, paths = evaluate(EvaluateConfig(**read_fields(args, EvaluateConfig)))
    print(markdown_table(groups), end="")
    for path in paths:
        print(f"wrote {path}")
    return 0
