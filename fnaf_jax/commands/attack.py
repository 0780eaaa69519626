"""``fnaf attack``: FNAF random search or finite differences over a data folder.

Writes one JSON line per slice (see ``fnaf_jax.attacks.evaluate``); re-running the same
command skips the slices already in ``--out``. ``--transfer-from`` re-scores another
run's worst features, with the same masks, on this model (paper section 4.7).
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "attack",
        help="search for the small features a model loses (FNAF); one JSON line per slice",
        description="Attack every slice of a fastMRI single-coil folder with random search "
        "(rs) or finite-difference location ascent (fd). Masks are seeded by the file name. "
        "Resumable: slices already in --out are skipped.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="model checkpoint folder")
    source.add_argument("--baseline", choices=("zero-filled",),
                        help="attack a network-free reconstruction instead: zero-filled = the "
                        "under-sampled input itself (a control row)")
    p.add_argument("--data", required=True, type=Path, help="folder (or file) of .h5 volumes")
    p.add_argument("--out", required=True, type=Path, help="results file (JSON lines), appended")
    p.add_argument("--method", choices=("rs", "fd"), default="rs", help="attack (default rs)")
    p.add_argument("--acceleration", "--accelerations", type=int, default=4,
                   help="under-sampling factor (default 4)")
    p.add_argument("--center-fraction", "--center-fractions", type=float, default=None,
                   help="centre columns kept (default: 0.08 at 4x, 0.04 at 8x)")
    p.add_argument("--mask-type", default="random", help="random | equispaced | equispaced_fraction")
    p.add_argument("--k", type=int, default=11, help="random search: candidates per slice (default 11)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per compiled call (default 8)")
    p.add_argument("--limit", type=int, default=None, help="attack only the first N slices")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable data files (each is logged) instead of stopping")
    p.add_argument("--seed", type=int, default=0, help="feature randomness (default 0)")
    p.add_argument("--name", default=None, help="model name in the records (default: the checkpoint folder's name, or the "
                   "training run's for RUN/best and RUN/last)")
    p.add_argument("--role", choices=("unet", "robust", "irim"), default=None,
                   help="which of the paper's models this is, so reports put the paper's numbers "
                   "beside it (default: none)")
    p.add_argument("--transfer-from", type=Path, default=None,
                   help="re-score the worst features of this results file on this model")
    p.add_argument("--pixels", type=int, default=10, help="feature size P (default 10)")
    p.add_argument("--box", type=int, default=120, help="central box size (default 120)")
    p.add_argument("--shape", choices=("aggregate", "walk"), default="aggregate",
                   help="feature shapes: random aggregation (paper) or the released random walk")
    p.add_argument("--reduction", choices=("mse", "region_mean", "nmse"), default="mse",
                   help="region term of Eq. 5 (default mse, the paper's)")
    p.add_argument("--gamma", type=float, default=1e-3, help="hit threshold on the loss (default 1e-3)")
    p.add_argument("--ip-threshold", type=float, default=1e-4, help="reject IP below this (default 1e-4)")
    p.add_argument("--fd-iterations", type=int, default=2, help="finite differences: iterations (default 2)")
    p.add_argument("--fd-step", type=float, default=10.0, help="finite differences: h (default 10)")
    p.add_argument("--fd-lr", type=float, default=1e5, help="finite differences: lr (default 1e5)")
    p.add_argument("--max-images-per-call", type=int, default=64,
                   help="chunk the B*K model inputs above this (memory; default 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def attack_config(args):
    """The AttackConfig the flags describe."""
    from fnaf_jax.attacks.config import AttackConfig
    from fnaf_jax.features import FeatureConfig
    from fnaf_jax.objective import ObjectiveConfig

    return AttackConfig(
        k=args.k, ip_threshold=args.ip_threshold, gamma=args.gamma,
        fd_iterations=args.fd_iterations, fd_step=args.fd_step, fd_lr=args.fd_lr,
        features=FeatureConfig(num_pixels=args.pixels, shape=args.shape, box_size=args.box),
        objective=ObjectiveConfig(reduction=args.reduction, max_images_per_call=args.max_images_per_call),
    )


def run(args) -> int:
    from fnaf_jax.attacks.evaluate import MaskSpec, model_name_for, run_attack
    from fnaf_jax.data.fastmri import SliceDataset
    from fnaf_jax.models.store import load_model

    cfg = attack_config(args)
    spec = MaskSpec(args.acceleration, args.center_fraction, args.mask_type)
    spec.mask_func()  # bad mask options fail here, before the model loads
    if args.baseline is not None:
        from fnaf_jax.models.baselines import BASELINES

        model, name, checkpoint = BASELINES[args.baseline], args.baseline, ""
    else:
        model, _ = load_model(args.checkpoint)
        model.eval()
        name, checkpoint = model_name_for(args.checkpoint), str(args.checkpoint)
    dataset = SliceDataset(args.data, transform="raw", skip_bad=args.skip_bad)
    n = run_attack(model, dataset, args.out, method=args.method, spec=spec, cfg=cfg,
                   batch_size=args.batch_size, limit=args.limit, seed=args.seed,
                   model_name=args.name or name, checkpoint=checkpoint, role=args.role,
                   transfer_from=args.transfer_from, progress=not args.no_progress)
    print(f"{n} new records in {args.out}")
    return 0
