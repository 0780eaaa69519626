"""``fnaf convert``: a PyTorch checkpoint (U-Net, U-Net v0, i-RIM) -> fnaf-jax model checkpoint
(``fnaf_jax.models.convert.convert_checkpoint``)."""

from __future__ import annotations

import json

from fnaf_jax.commands.flags import add_fields, read_fields

HELP = {
    "out": "output checkpoint directory",
    "arch": "architecture (default: read from the checkpoint's keys)",
    "config": 'constructor arguments overriding the inferred ones, e.g. \'{"drop_prob": 0.0}\'',
}


def register(subparsers) -> None:
    from fnaf_jax.models.convert import ConvertConfig
    from fnaf_jax.models.families import NAMES

    p = subparsers.add_parser(
        "convert",
        help="convert a PyTorch checkpoint to an fnaf-jax (Orbax) model checkpoint",
        description="Read a PyTorch .pt file (plain state_dict, Lightning checkpoint, FNAF/i-RIM "
        "training checkpoint; zip or legacy format), check every key and shape, and write an "
        "fnaf-jax model checkpoint directory that `fnaf reconstruct` / `fnaf attack` load.",
    )
    p.add_argument("source", metavar="SRC.pt", help="PyTorch checkpoint file")
    add_fields(p, ConvertConfig, HELP, skip=("source",), required=("out",), choices={"arch": NAMES})
    p.set_defaults(func=run)


def run(args) -> int:
    from fnaf_jax.models.convert import ConvertConfig, convert_checkpoint

    cfg = ConvertConfig(source=args.source, **read_fields(args, ConvertConfig, skip=("source",)))
    out, config, n_params = convert_checkpoint(cfg)
    print(f"arch: {config['arch']}")
    print(f"config: {json.dumps(config, sort_keys=True)}")
    print(f"parameters: {n_params:,}")
    print(f"wrote {out}")
    return 0
