"""``fnaf convert``: a PyTorch checkpoint (U-Net, U-Net v0, i-RIM) -> fnaf-jax model checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fnaf_jax.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a PyTorch checkpoint to an fnaf-jax (Orbax) model checkpoint",
        description="Read a PyTorch .pt file (plain state_dict, Lightning checkpoint, FNAF/i-RIM "
        "training checkpoint; zip or legacy format), check every key and shape, and write an "
        "fnaf-jax model checkpoint directory that `fnaf reconstruct` / `fnaf attack` load.",
    )
    p.add_argument("source", type=Path, metavar="SRC.pt", help="PyTorch checkpoint file")
    p.add_argument("--arch", choices=("unet", "unet-v0", "irim"), default=None,
                   help="architecture (default: read from the checkpoint's keys)")
    p.add_argument("--config", default=None, metavar="JSON",
                   help='constructor arguments overriding the inferred ones, e.g. \'{"drop_prob": 0.0}\'')
    p.add_argument("--out", required=True, type=Path, metavar="CKPT", help="output checkpoint directory")
    p.set_defaults(func=run)


def _parse_config(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config: expected a JSON object, got {text!r}")
    return config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(args) -> int:
    from fnaf_jax.models.convert import load_torch, parameter_count
    from fnaf_jax.models.store import save_model

    model, config = load_torch(args.source, arch=args.arch, config=_parse_config(args.config))
    meta = {"source": str(args.source.absolute()), "source_sha256": _sha256(args.source)}
    out = save_model(args.out, model, config, meta=meta)
    print(f"arch: {config['arch']}")
    print(f"config: {json.dumps(config, sort_keys=True)}")
    print(f"parameters: {parameter_count(model):,}")
    print(f"wrote {out}")
    return 0
