"""Study presets: typed, validated configs read from JSON (shipped in the package,
``fnaf_jax/study/preset_files/``: ``mini``, ``smoke``, ``synthetic``, ``paper``, or any
file with the same sections).

Every section is built from the configs of the verbs it drives: a training section holds
``TrainConfig`` fields, the attack section ``AttackConfig`` / ``FeatureConfig`` /
``ObjectiveConfig`` fields (plus the run's ``batch_size`` and ``limit``), the evaluation
masks are ``MaskSpec``s. An unknown key anywhere is an error naming it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fnaf_jax.attacks.config import AttackConfig
from fnaf_jax.attacks.runner import METHODS as ATTACK_METHODS
from fnaf_jax.errors import ConfigError
from fnaf_jax.features import FeatureConfig
from fnaf_jax.masks import MaskSpec
from fnaf_jax.objective import ObjectiveConfig
from fnaf_jax.train.config import ROBUST_MODES, TrainConfig

# inside the package, so a plain (non-editable) install can run them
PRESET_DIR = Path(__file__).resolve().parent / "preset_files"
SECTIONS = ("data", "masks", "unet", "robust", "irim", "attack")
#: keys that document a preset and change nothing
INFO_KEYS = ("name", "description", "annotations", "compute")
_ARCH_KEYS = ("chans", "num_pools", "drop_prob")  # the fine-tunes take the U-Net's


@dataclasses.dataclass(frozen=True)
class DataSection:
    """The synthetic data set (``fnaf synth`` settings) or the split names of ``--data``."""

    train_volumes: int | None = None
    val_volumes: int | None = None
    slices: int | None = None
    val_slices: int | None = None  # default: slices
    width: int | None = None
    seed: int = 0
    lesions: bool = False
    train_split: str = "singlecoil_train"
    val_split: str = "singlecoil_val"

    @property
    def synthetic(self) -> bool:
        return None not in (self.train_volumes, self.val_volumes, self.slices, self.width)


@dataclasses.dataclass(frozen=True)
class MasksSection:
    type: str = "random"
    train_accelerations: tuple[int, ...] = (4,)
    train_center_fractions: tuple[float, ...] = (0.08,)
    eval: tuple[MaskSpec, ...] = ()


@dataclasses.dataclass(frozen=True)
class AttackSection:
    config: AttackConfig
    batch_size: int = 8  # slices per compiled call
    limit: int | None = None  # attack only the first N validation slices
    methods: tuple[str, ...] = ("rs", "fd")  # run on every trained model (the baseline: rs)


@dataclasses.dataclass(frozen=True)
class StudyPreset:
    name: str
    description: str
    path: str
    data: DataSection
    masks: MasksSection
    train: dict  # model -> TrainConfig overrides (the data and masks fields are the study's)
    irim_source: str  # "train" (a small i-RIM), "convert" (the released one) or "none"
    attack: AttackSection
    figure_examples: int = 4
    raw: dict = dataclasses.field(default_factory=dict, compare=False)  # the JSON as read

    def models(self) -> list[str]:
        """The trained models: the U-Net, the budget-matched clean fine-tune (unless
        ``clean_finetune`` is false), the FNAF-robust U-Net, the worst-of-k variant (when
        the preset has ``robust_wk``), the preset's ``defenses`` (fine-tunes of the U-Net
        with another ``--robust MODE``) and the i-RIM (unless its source is "none")."""
        return list(self.train)

    def fine_tunes(self) -> list[str]:
        """The models that start from the trained U-Net (every model but it and the i-RIM)."""
        return [m for m in self.train if m not in ("unet", "irim")]


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_keys(where: str, given: dict, known) -> None:
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: must be a JSON object, got {type(given).__name__}")
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")


def _build(where: str, cls, values: dict, **fixed):
    _check_keys(where, values, _fields(cls) - set(fixed))
    try:
        return cls(**values, **fixed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


_FNAF_KEYS = ("alpha", "beta", "worst_of", "ip_threshold")
# fields a training section may not set: the study sets them (data, splits, masks, start)
_STUDY_FIELDS = ("data", "train_split", "val_split", "mask_type", "accelerations", "center_fractions",
                 "robust", "init_from", "model")


def _training(where: str, section: dict, model: str) -> dict:
    """Check one training section against ``TrainConfig`` (built once, so bad values fail now)."""
    _check_keys(where, section, _fields(TrainConfig) - set(_STUDY_FIELDS))
    _build(where, TrainConfig, dict(section), data="-", model=model)
    return dict(section)


def _train_sections(path, preset: dict) -> dict:
    unet = _training(f"{path}: unet", preset["unet"], "unet")
    arch = {k: unet[k] for k in _ARCH_KEYS if k in unet}
    robust = _training(f"{path}: robust", preset["robust"], "unet")
    sections = {"unet": unet}
    if preset.get("clean_finetune", True):
        # the clean fine-tune is the robust section without the FNAF term: same epochs,
        # learning rate, batch and data
        sections["cleanft"] = {**arch, **{k: v for k, v in robust.items() if k not in _FNAF_KEYS},
                               "robust": False}
    sections["robust"] = {**arch, **robust, "robust": True}
    if preset.get("robust_wk"):
        wk = _training(f"{path}: robust_wk", {**robust, **preset["robust_wk"]}, "unet")
        sections["robust_wk"] = {**arch, **wk, "robust": True}
    defenses = preset.get("defenses", {})
    if not isinstance(defenses, dict):
        raise ConfigError(f"{path}: defenses must be a JSON object of name -> training section")
    taken = [n for n in defenses if n in (*sections, "irim", "zero-filled")]
    if taken:
        raise ConfigError(f"{path}: defenses.{taken[0]}: the name is taken by a study model; choose another")
    for name, section in defenses.items():
        where = f"{path}: defenses.{name}"
        _check_keys(where, section, _fields(TrainConfig) - set(_STUDY_FIELDS) | {"robust"})
        mode = section.get("robust")
        if mode not in ROBUST_MODES:
            raise ConfigError(f"{where}: robust must be one of {', '.join(ROBUST_MODES)}, got {mode!r}")
        # budget-matched: the robust section's epochs, learning rate, batch and data
        tuned = _training(where, {**robust, **{k: v for k, v in section.items() if k != "robust"}}, "unet")
        sections[name] = {**arch, **tuned, "robust": mode}
    if preset["irim"].get("source", "train") != "none":
        irim = {k: v for k, v in preset["irim"].items() if k != "source"}
        sections["irim"] = {**_training(f"{path}: irim", irim, "irim"), "model": "irim"}
    return sections


def _attack(where: str, section: dict) -> AttackSection:
    feature_keys = ("num_pixels", "shape", "box_size")
    objective_keys = ("reduction", "max_images_per_call")
    run_keys = ("batch_size", "limit", "methods")
    known = (_fields(AttackConfig) - {"features", "objective"}) | set(feature_keys) | set(objective_keys) | set(run_keys)
    _check_keys(where, section, known)
    # JSON lists (eps) become tuples: the configs are frozen and hashed (jit static arguments)
    pick = lambda keys: {k: tuple(section[k]) if isinstance(section[k], list) else section[k]
                         for k in keys if k in section}
    attack_keys = _fields(AttackConfig) - {"features", "objective"}
    cfg = _build(where, AttackConfig, pick(attack_keys),
                 features=_build(where, FeatureConfig, pick(feature_keys)),
                 objective=_build(where, ObjectiveConfig, pick(objective_keys)))
    run = pick(run_keys)
    if "methods" in run:
        methods = run["methods"]
        bad = [m for m in methods if m not in ATTACK_METHODS] if isinstance(methods, tuple) else [methods]
        if bad or not methods:
            raise ConfigError(f"{where}: methods must be a non-empty list of {', '.join(ATTACK_METHODS)}"
                              + (f"; got {bad[0]!r}" if bad else ""))
        run["methods"] = tuple(dict.fromkeys(methods))
    run = _build(where, AttackSection, run, config=cfg)
    if run.batch_size < 1 or (run.limit is not None and run.limit < 1):
        raise ConfigError(f"{where}: batch_size and limit must be >= 1 (limit may be null)")
    return run


def parse_preset(preset: dict, path: str) -> StudyPreset:
    """The typed preset of a JSON object (``path`` names it in errors)."""
    if not isinstance(preset, dict):
        raise ConfigError(f"{path}: preset must be a JSON object")
    missing = [s for s in SECTIONS if not isinstance(preset.get(s), dict)]
    if missing:
        raise ConfigError(f"{path}: preset lacks section(s) {missing}")
    _check_keys(path, preset, (*SECTIONS, *INFO_KEYS, "robust_wk", "clean_finetune", "figures", "defenses"))
    source = preset["irim"].get("source", "train")
    if source not in ("train", "convert", "none"):
        raise ConfigError(f"{path}: irim.source must be 'train', 'convert' or 'none', got {source!r}")
    masks = dict(preset["masks"])
    evals = masks.pop("eval", None)
    if not evals:
        raise ConfigError(f"{path}: masks.eval lists no acceleration to evaluate")
    specs = tuple(_build(f"{path}: masks.eval", MaskSpec, {k: v for k, v in e.items()},
                         mask_type=masks.get("type", "random")) for e in evals)
    for spec in specs:
        spec.mask_func()
    figures = preset.get("figures", {})
    _check_keys(f"{path}: figures", figures, ("examples",))
    return StudyPreset(
        name=preset.get("name", Path(path).stem), description=preset.get("description", ""), path=str(path),
        data=_build(f"{path}: data", DataSection, preset["data"]),
        masks=_build(f"{path}: masks", MasksSection, {k: tuple(v) if isinstance(v, list) else v
                                                      for k, v in masks.items()}, eval=specs),
        train=_train_sections(path, preset), irim_source=source,
        attack=_attack(f"{path}: attack", preset["attack"]),
        figure_examples=int(figures.get("examples", 4)), raw=preset)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path) -> StudyPreset:
    """The preset called ``name`` (``preset_files/NAME.json``) or the JSON at a path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.is_file()):
        path = PRESET_DIR / f"{text}.json"
        if not path.is_file():
            raise ConfigError(f"unknown preset {text!r}; known: {', '.join(preset_names())} "
                              f"(or give the path of a JSON file)")
    try:
        preset = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read preset ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: preset is not valid JSON ({exc})") from None
    return parse_preset(preset, str(path))
