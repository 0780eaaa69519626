"""``fnaf profile``: a model's robustness profile (``fnaf_jax.profile.profile_folder``):
hit rate and feature-lost fraction against feature size, contrast, acceleration and
location, each point with its 95% interval; CSV, JSON and PNG plots; resumable."""

from __future__ import annotations

from fnaf_jax.commands.flags import add_fields, read_fields

HELP = {
    "data": "folder (or file) of .h5 volumes",
    "out": "profile folder (points.jsonl, profile.json, profile.csv, profile_*.png)",
    "acceleration": "acceleration of the size, contrast and location sweeps",
    "sizes": "feature sizes (pixels)",
    "contrasts": "feature contrasts, fractions of each slice's intensity range",
    "accelerations": "accelerations of the acceleration sweep (centre fraction 0.32 / acceleration)",
    "grid": "location heatmap: cells per side of the central box",
    "k": "features scored per slice at each point (location: one per cell)",
    "sweeps": "which sweeps to run",
    "limit": "profile N slices spread evenly over the folder (all: more volumes, narrower intervals)",
    "batch_size": "slices per compiled call",
    "seed": "feature randomness",
    "gamma": "hit threshold on the loss",
    "ip_threshold": "reject a feature whose information preservation is below this",
}


def register(subparsers) -> None:
    from fnaf_jax.attacks.config import AttackConfig
    from fnaf_jax.models.baselines import BASELINES
    from fnaf_jax.profile import SWEEPS, ProfileConfig

    p = subparsers.add_parser(
        "profile",
        help="robustness profile: what a model loses against size, contrast, acceleration, location",
        description="Score random features on every slice at each point of four sweeps (feature size, "
        "contrast, acceleration, location in the box) and report the hit rate and the feature-lost "
        "fraction with 95% intervals (Wilson and a bootstrap over volumes, the wider), with sentences "
        "to read off. Resumable: finished sweeps in --out are skipped.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model checkpoint folder")
    source.add_argument("--baseline", choices=tuple(BASELINES), help="profile a network-free reconstruction")
    add_fields(p, ProfileConfig, HELP, skip=("checkpoint", "baseline", "attack"), required=("data", "out"),
               choices={"sweeps": SWEEPS})
    add_fields(p, AttackConfig, HELP, only=("gamma", "ip_threshold"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from fnaf_jax.attacks.config import AttackConfig
    from fnaf_jax.profile import ProfileConfig, profile_folder

    cfg = ProfileConfig(**read_fields(args, ProfileConfig, skip=("checkpoint", "baseline", "attack")),
                        checkpoint=args.checkpoint, baseline=args.baseline,
                        attack=AttackConfig(**read_fields(args, AttackConfig, only=("gamma", "ip_threshold"))))
    result = profile_folder(cfg, progress=not args.no_progress)
    for line in result["read_off"]:
        print(line)
    print(f"wrote {cfg.out}/profile.json, profile.csv and {', '.join(result['figures'].values())}")
    return 0
