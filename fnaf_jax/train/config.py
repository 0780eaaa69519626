"""Training configuration: one frozen dataclass whose defaults are each model's recipe.

U-Nets get fastMRI's recipe; ``model="irim"`` gets the i-RIM release's (SSIM loss, lr 1e-4,
decay at epoch 30 of 50) for whichever of ``lr``, ``loss``, ``lr_step_fraction`` is unset.

Every ``fnaf train`` flag maps to exactly one field (``--worst-of`` -> ``worst_of``).
A run writes its resolved config to ``WORKDIR/config.json``; running again in the same
workdir with a different config is refused (unless ``--force``), so a resumed run can
never silently continue under other settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from fnaf_jax.errors import ConfigError
from fnaf_jax.fileio import write_text
from fnaf_jax.models.families import FAMILIES, NAMES

CONFIG_FILE = "config.json"
LOSSES = ("l1", "mse", "ssim")
MASK_TYPES = ("random", "equispaced", "equispaced_fraction")


#: defenses of ``fnaf train --robust MODE`` (fnaf_jax.train.robust): FNAF-robust training
#: with random features (rs, the paper's), the worst of k, or the gradient attack (pgd:
#: adversarial training); jittering (noisy k-space); l2 k-space adversarial training
ROBUST_MODES = ("rs", "worst-of-k", "pgd", "jitter", "kspace-adv")


@dataclass(frozen=True)
class TrainConfig:
    # data: DATA/TRAIN_SPLIT and DATA/VAL_SPLIT hold fastMRI single-coil h5 files. None =
    # auto: singlecoil_train|train (singlecoil_val|val), else DATA itself (smoke sets)
    data: str = ""
    train_split: str | None = None
    val_split: str | None = None
    limit_train: int | None = None  # use only the first N training slices (smoke runs)
    limit_val: int | None = None  # use only the first N validation slices
    skip_bad: bool = False  # skip unreadable data files (logged) instead of stopping
    crop: int | None = None  # centre-crop training images to crop x crop (speed knob); None = 320

    # model (fastMRI U-Net defaults: chans 32, 4 pools, no dropout)
    model: str = "unet"
    chans: int = 32
    num_pools: int = 4
    drop_prob: float = 0.0

    # optimisation (fastMRI: RMSprop lr 1e-3, alpha 0.99, eps 1e-8; StepLR x0.1 at epoch 40/50)
    epochs: int = 50
    batch_size: int = 1
    lr: float | None = None  # None: the model family's recipe
    rms_decay: float = 0.99
    rms_eps: float = 1e-8
    weight_decay: float = 0.0
    lr_step_fraction: float | None = None  # lr *= lr_gamma after this fraction of the epochs
    lr_gamma: float = 0.1
    loss: str | None = None  # on z-scored images; None: the model's recipe

    # under-sampling masks for training (random per step) and validation (seeded by file name)
    mask_type: str = "random"
    accelerations: tuple[int, ...] = (4,)
    center_fractions: tuple[float, ...] = (0.08,)

    # FNAF-robust training (fnaf_jax.train.robust.RobustTask)
    robust: str | None = None  # a defense (ROBUST_MODES); True (older configs): rs, or worst-of-k
    worst_of: int = 1  # candidates per sample; 1 = random features (augmentation)
    adv_steps: int = 2  # pgd, kspace-adv: inner gradient steps per training step
    jitter: float = 0.02  # jitter: k-space noise norm / ||y_k||
    kspace_eps: float = 0.01  # kspace-adv: perturbation norm / ||y_k||
    alpha: float = 1.0  # weight of the whole-image MSE in Eq. 5
    beta: float = 100.0  # weight of the feature-region MSE in Eq. 5
    ip_threshold: float = 1e-4  # never train on a feature whose IP is below this (paper 4.2)
    init_from: str | None = None  # model checkpoint to start from

    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 500  # steps between Orbax training checkpoints
    keep_checkpoints: int = 2

    # extra constructor kwargs for the model (e.g. a small i-RIM); JSON object on the CLI
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        recipe = FAMILIES[self.model].recipe if self.model in FAMILIES else {}
        for name, value in recipe.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        # tuples, not lists, so configs read back from JSON compare equal
        object.__setattr__(self, "accelerations", tuple(int(a) for a in self.accelerations))
        object.__setattr__(self, "center_fractions", tuple(float(c) for c in self.center_fractions))
        if self.robust is True:  # the paper's switch: random features, or the worst of k
            object.__setattr__(self, "robust", "rs" if self.worst_of == 1 else "worst-of-k")
        elif self.robust is False:
            object.__setattr__(self, "robust", None)
        self.validate()

    def validate(self) -> None:
        def bad(name, why):
            raise ConfigError(f"train config {name}={getattr(self, name)!r}: {why}")

        if self.model not in FAMILIES:
            bad("model", f"unknown model; choose one of {', '.join(NAMES)}")
        if self.loss not in LOSSES:
            bad("loss", f"unknown loss; choose one of {', '.join(LOSSES)}")
        if self.mask_type not in MASK_TYPES:
            bad("mask_type", f"unknown mask type; choose one of {', '.join(MASK_TYPES)}")
        if len(self.accelerations) != len(self.center_fractions) or not self.accelerations:
            bad("accelerations", f"needs one center fraction each (got {self.center_fractions})")
        for name in ("epochs", "batch_size", "chans", "num_pools", "checkpoint_every",
                     "keep_checkpoints", "worst_of"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        for name in ("limit_train", "limit_val"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(name, "must be >= 1 (or unset for all slices)")
        if self.robust is not None and self.robust not in ROBUST_MODES:
            bad("robust", f"unknown defense; choose one of {', '.join(ROBUST_MODES)}")
        if self.robust == "worst-of-k" and self.worst_of < 2:
            bad("worst_of", "worst-of-k training needs --worst-of K >= 2")
        if self.adv_steps < 1 or self.jitter <= 0 or self.kspace_eps <= 0:
            bad("adv_steps", f"adversarial steps must be >= 1 and jitter {self.jitter}, "
                             f"kspace_eps {self.kspace_eps} > 0")
        if self.crop is not None and not 16 <= self.crop <= 320:
            bad("crop", "must be between 16 and 320")
        if self.lr <= 0:
            bad("lr", "must be positive")
        if not 0.0 < self.lr_step_fraction <= 1.0:
            bad("lr_step_fraction", "must be in (0, 1]")

    # --- JSON round trip -------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown train config keys {unknown}")
        return cls(**data)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def model_config(self) -> dict:
        """The model config dict for ``fnaf_jax.models.build_model``."""
        return FAMILIES[self.model].model_config(self)


def write_or_check(cfg: TrainConfig, workdir, force: bool = False) -> Path:
    """Record ``cfg`` in ``WORKDIR/config.json``; refuse a different recorded config.

    Returns the path. With ``force`` the old record is replaced (the caller clears the
    previous run's state).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / CONFIG_FILE
    if path.exists() and not force:
        old = read_config(path)
        if old != cfg:
            diff = {k: (v, cfg.to_dict()[k]) for k, v in old.to_dict().items()
                    if cfg.to_dict()[k] != v}
            changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ConfigError(
                f"{path}: workdir holds a run with a different config ({changes}); "
                "use another --workdir, or --force to start this one over")
        return path
    write_text(path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_config(path) -> TrainConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read train config ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: train config must be a JSON object")
    return TrainConfig.from_dict(data, source=str(path))
