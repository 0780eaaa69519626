"""``fnaf train``: resumable (FNAF-robust) training; one flag per ``TrainConfig`` field.

Flags are generated from the dataclass, so a field and its flag cannot drift apart:
field ``worst_of`` is ``--worst-of``, booleans are switches, tuples take several values,
``model_kwargs`` takes a JSON object.
"""

from __future__ import annotations

import argparse

from fnaf_jax.commands.flags import add_fields, read_fields
from fnaf_jax.errors import ConfigError

HELP = {
    "data": "folder of fastMRI single-coil .h5 files (or with singlecoil_train/ and "
            "singlecoil_val/ inside)",
    "train_split": "training sub-folder of --data (default: singlecoil_train or train if "
                   "present, else --data itself)",
    "val_split": "validation sub-folder of --data (default: singlecoil_val or val if present, "
                 "else --data itself)",
    "limit_train": "use only the first N training slices",
    "limit_val": "use only the first N validation slices",
    "skip_bad": "skip unreadable data files (each is logged) instead of stopping",
    "crop": "centre-crop training images to N x N (speed knob; validation uses 320 x 320)",
    "model": "model family: unet | unet-v0 | irim",
    "chans": "U-Net channels of the first level",
    "num_pools": "U-Net pooling levels",
    "drop_prob": "U-Net dropout probability",
    "epochs": "training epochs",
    "batch_size": "global batch size (a multiple of the device count)",
    "lr": "learning rate (RMSprop for U-Nets, Adam for the i-RIM); unset: the model's recipe",
    "rms_decay": "RMSprop decay (torch's alpha)",
    "rms_eps": "RMSprop epsilon (added outside the square root, as torch)",
    "weight_decay": "L2 weight decay",
    "lr_step_fraction": "drop the learning rate after this fraction of the epochs; unset: "
                        "the model's recipe (U-Net 0.8, i-RIM 0.6)",
    "lr_gamma": "learning-rate drop factor",
    "loss": "training loss: l1 | mse | ssim; unset: the model's recipe (U-Net l1, i-RIM ssim)",
    "mask_type": "mask type: random | equispaced | equispaced_fraction",
    "accelerations": "accelerations to draw from (e.g. 4 8)",
    "center_fractions": "centre fractions, one per acceleration (e.g. 0.08 0.04)",
    "robust": "a defense: FNAF-robust training with random features (rs, the paper's; a bare "
              "--robust), the worst of --worst-of K (worst-of-k) or the gradient attack (pgd); "
              "jitter (noisy k-space); kspace-adv (l2 k-space adversarial training)",
    "adv_steps": "pgd, kspace-adv: inner gradient steps per training step",
    "jitter": "jitter: k-space noise norm as a fraction of the slice's sampled k-space norm",
    "kspace_eps": "kspace-adv: perturbation norm as a fraction of the sampled k-space norm",
    "worst_of": "FNAF candidates per sample; the worst is trained on (1 = random features)",
    "alpha": "weight of the whole-image MSE of the FNAF loss",
    "beta": "weight of the feature-region MSE of the FNAF loss",
    "ip_threshold": "never train on a FNAF feature whose information preservation is below this",
    "init_from": "start from this model checkpoint (e.g. a trained U-Net); its own "
                 "architecture is used (--chans, --num-pools are then ignored)",
    "seed": "random seed (model init, data order, masks, features)",
    "checkpoint_every": "steps between training checkpoints",
    "keep_checkpoints": "training checkpoints to keep",
    "model_kwargs": "extra model constructor arguments as a JSON object",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a reconstruction model (resumable; --robust for FNAF-robust training)",
        description="Train a U-Net (or i-RIM) on fastMRI single-coil data with fastMRI's "
        "recipe. Running the same command again resumes from WORKDIR/checkpoints; "
        "WORKDIR/best and WORKDIR/last are model checkpoints for the other commands.",
    )
    p.add_argument("--workdir", required=True, help="run folder (config, checkpoints, metrics)")
    p.add_argument("--force", action="store_true",
                   help="discard a previous run with another config in WORKDIR and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from fnaf_jax.train.config import ROBUST_MODES, TrainConfig

    add_fields(p, TrainConfig, HELP, required=("data",), skip=("robust",))
    p.add_argument("--robust", nargs="?", const=True, default=None, metavar="MODE",
                   type=_robust_mode(ROBUST_MODES), help=HELP["robust"] + " (default: off)")
    p.set_defaults(func=run)


def config_from_args(args):
    """The TrainConfig the flags describe."""
    from fnaf_jax.train.config import TrainConfig

    return TrainConfig(**read_fields(args, TrainConfig, skip=("robust",)), robust=args.robust)


def _robust_mode(modes):
    def parse(text: str) -> str:
        if text not in modes:
            raise argparse.ArgumentTypeError(f"unknown defense {text!r}; choose one of {', '.join(modes)}")
        return text

    return parse


def run(args) -> int:
    from fnaf_jax.train.loop import train

    cfg = config_from_args(args)
    if not cfg.data:
        raise ConfigError("--data is required")
    summary = train(cfg, args.workdir, force=args.force, progress=not args.no_progress)
    best = summary["best_val_loss"]
    print(f"{summary['status']}: step {summary['step']}/{summary['total_steps']}, best clean "
          f"validation loss {best if best is None else f'{best:.6g}'}; models in "
          f"{summary['workdir']}/best and /last")
    return 0 if summary["status"] == "done" else 130
