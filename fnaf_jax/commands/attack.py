"""``fnaf attack``: FNAF random search, finite differences or the gradient attack over a data folder.

Flags are generated from ``AttackJob``, ``AttackConfig``, ``FeatureConfig`` and
``ObjectiveConfig`` (``fnaf_jax.commands.flags``), so their defaults live in the configs.
Writes one JSON line per slice (``fnaf_jax.attacks.records``); re-running the same
command skips the slices already in ``--out``. ``--transfer-from`` re-scores another
run's worst features, with the same masks, on this model (paper section 4.7).
"""

from __future__ import annotations

from pathlib import Path

from fnaf_jax.commands.flags import add_fields, read_fields
from fnaf_jax.commands.mask_flags import ListOnce, add_mask_arguments, mask_jobs
from fnaf_jax.errors import ConfigError

METHODS = ("rs", "fd", "pgd", "kspace-pgd", "hallucinate")

HELP = {
    "data": "folder (or file) of .h5 volumes",
    "out": "results file (JSON lines), appended; with several accelerations OUT_4x.jsonl, "
           "OUT_8x.jsonl, ...; with several methods OUT_rs.jsonl, OUT_fd.jsonl, ... (OUT_4x_rs.jsonl "
           "with both)",
    "batch_size": "slices per compiled call",
    "limit": "attack only the first N slices",
    "seed": "feature randomness",
    "name": "model name in the records (default: the checkpoint folder's name, or the training "
            "run's for RUN/best and RUN/last)",
    "role": "which of the paper's models this is, so reports put the paper's numbers beside it",
    "transfer_from": "re-score the worst features of this results file on this model",
    "skip_bad": "skip unreadable data files (each is logged) instead of stopping",
    "k": "random search: candidates per slice",
    "ip_threshold": "reject a candidate whose information preservation is below this",
    "gamma": "hit threshold on the loss",
    "fd_iterations": "finite differences: iterations",
    "fd_step": "finite differences: h (probes at p +- h/2)",
    "fd_lr": "finite differences: learning rate",
    "eps": "k-space attacks: perturbation sizes ||e|| / ||y_k|| (one run each)",
    "kspace_steps": "k-space attacks: projected gradient steps per eps",
    "kspace_step": "k-space attacks: step length, a fraction of the ball's radius",
    "kspace_target": "kspace-pgd: maximise the whole-image error or a feature's Eq. 5 loss",
    "shown_threshold": "hallucinate: a hit shows at least this share of the feature",
    "pgd_starts": "gradient attack: starting features per slice",
    "pgd_steps": "gradient attack: steps per start (a forward and a backward pass each)",
    "pgd_sigma": "gradient attack: blur (px) of the first step's feature, annealed to 0",
    "pgd_step": "gradient attack: first location step (px), annealed to 0",
    "pgd_value_step": "gradient attack: first intensity step, a fraction of the slice's range",
    "num_pixels": "feature size P",
    "shape": "feature shapes: random aggregation (paper) or the released random walk",
    "box_size": "central box side the features lie in",
    "reduction": "region term of Eq. 5 (mse is the paper's)",
    "max_images_per_call": "model images per compiled call (default: the backend's rule, 2 on CPU, "
                           "64 on accelerators; the numbers do not change, only speed and memory)",
}
_JOB = ("data", "out", "batch_size", "limit", "seed", "name", "role", "transfer_from", "skip_bad")


def register(subparsers) -> None:
    from fnaf_jax.attacks.config import KSPACE_TARGETS, AttackConfig
    from fnaf_jax.attacks.runner import AttackJob
    from fnaf_jax.features import FeatureConfig
    from fnaf_jax.models.baselines import BASELINES
    from fnaf_jax.objective import ObjectiveConfig

    p = subparsers.add_parser(
        "attack",
        help="search for the small features a model loses (FNAF); one JSON line per slice",
        description="Attack every slice of a fastMRI single-coil folder with random search "
        "(rs), finite-difference location ascent (fd) or gradient ascent through the model (pgd); "
        "or perturb the measured k-space within an l2 ball to maximise the error (kspace-pgd) or "
        "to make the model show a feature that is not there (hallucinate). Masks are seeded by the file name. "
        "Resumable: slices already in --out are skipped.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="model checkpoint folder")
    source.add_argument("--baseline", choices=tuple(BASELINES),
                        help="attack a network-free reconstruction instead: zero-filled = the "
                        "under-sampled input itself (a control row)")
    add_fields(p, AttackJob, HELP, only=_JOB, required=("data", "out"),
               choices={"role": ("unet", "robust", "irim")})
    p.add_argument("--methods", "--method", nargs="+", action=ListOnce, default=[AttackJob.method],
                   choices=METHODS, metavar="METHOD",
                   help=f"attacks, one run each, sharing each slice's no-feature output: {', '.join(METHODS)} "
                   f"(default: {AttackJob.method})")
    add_mask_arguments(p)
    add_fields(p, AttackConfig, HELP, skip=("features", "objective"), choices={"kspace_target": KSPACE_TARGETS})
    add_fields(p, FeatureConfig, HELP, only=("num_pixels", "shape", "box_size"),
               rename={"num_pixels": "pixels", "box_size": "box"}, choices={"shape": ("aggregate", "walk")})
    add_fields(p, ObjectiveConfig, HELP, only=("reduction", "max_images_per_call"),
               choices={"reduction": ("mse", "region_mean", "nmse")})
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def attack_config(args):
    """The AttackConfig the flags describe."""
    from fnaf_jax.attacks.config import AttackConfig
    from fnaf_jax.features import FeatureConfig
    from fnaf_jax.objective import ObjectiveConfig

    return AttackConfig(
        **read_fields(args, AttackConfig, skip=("features", "objective")),
        features=FeatureConfig(**read_fields(args, FeatureConfig, only=("num_pixels", "shape", "box_size"))),
        objective=ObjectiveConfig(**read_fields(args, ObjectiveConfig, only=("reduction", "max_images_per_call"))),
    )


def jobs(args) -> list:
    """One AttackJob per acceleration and method the flags ask for (all validated before
    any runs)."""
    from fnaf_jax.attacks.runner import AttackJob

    methods = list(args.methods)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods: {methods} repeats a method")
    if args.transfer_from is not None and len(methods) > 1:
        raise ConfigError("--transfer-from re-scores the source run's method; give no second --methods")
    cfg = attack_config(args)
    fields = read_fields(args, AttackJob, only=_JOB)
    source = {"checkpoint": None if args.checkpoint is None else str(args.checkpoint),
              "baseline": args.baseline}

    def named(out: Path, method: str) -> Path:  # OUT.jsonl -> OUT_fd.jsonl when there are several
        return out if len(methods) == 1 else out.with_name(f"{out.stem}_{method}{out.suffix}")

    return [AttackJob(**{**fields, "out": str(named(out, method))}, **source, method=method, mask=spec, attack=cfg)
            for spec, out in mask_jobs(args, Path(args.out)) for method in methods]


def run(args) -> int:
    from fnaf_jax.attacks.runner import attack_folder, shared_controls

    todo = jobs(args)
    controls = shared_controls(todo)  # one model and folder: the methods share each slice's control
    for job in todo:
        n = attack_folder(job, progress=not args.no_progress, controls=controls)
        print(f"{n} new records in {job.out}")
    return 0
