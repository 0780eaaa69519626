"""The study's stages. Each one is a thin call of another ``fnaf`` verb (in this process,
through ``fnaf_jax.cli.main``), so ``fnaf reproduce`` does exactly what a user typing the
verbs would do; the verbs' own checkpoints make a killed stage resume where it stopped.

Folder layout under ``--out DIR``::

    data/singlecoil_{train,val}/   synthetic data (when no --data is given)
    models/{unet,robust,irim}/     training workdirs (or the converted i-RIM)
    recon/MODEL_ACCx/              fastMRI-format reconstructions of the validation set
    metrics/MODEL_ACCx/            fnaf evaluate output (Table 1)
    attacks/MODEL_ACCx_METHOD.jsonl   one JSON line per attacked slice (Tables 2, 3)
    attacks/transfer_unet-irim_ACCx.jsonl
    tables/                        Table 4, results.json
    figures/                       Figures 1-3 (PNG)
    report.md, report.html
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.fileio import write_text
from fnaf_jax.published import MODEL_NAMES
from fnaf_jax.study.pipeline import Stage, StageError

METHODS = ("rs", "fd")
#: the paper's role of each study model (reports put the paper's numbers beside these)
ROLES = {"unet": "unet", "robust": "robust", "irim": "irim"}
FINE_TUNES = ("cleanft", "robust", "robust_wk")  # all start from the trained U-Net
BASELINE = "zero-filled"  # the under-sampled input as the output: attacked, never trained
_FNAF_KEYS = ("alpha", "beta", "worst_of", "ip_threshold")


def model_names(preset: dict) -> list[str]:
    """The trained models of a study: the U-Net, the budget-matched clean fine-tune (unless
    ``clean_finetune`` is false), the FNAF-robust U-Net (paper mode), the worst-of-k variant
    (when the preset has ``robust_wk``) and the i-RIM."""
    names = ["unet"]
    if preset.get("clean_finetune", True):
        names.append("cleanft")
    names.append("robust")
    if preset.get("robust_wk"):
        names.append("robust_wk")
    return [*names, "irim"]


def model_section(preset: dict, model: str) -> dict:
    """Training options of one model: the clean fine-tune is the robust section without
    the FNAF term (same epochs, learning rate, batch and data); worst-of-k overrides it."""
    if model == "cleanft":
        return {k: v for k, v in preset["robust"].items() if k not in _FNAF_KEYS}
    if model == "robust_wk":
        return {**preset["robust"], **preset["robust_wk"]}
    return preset[model]


def run_verb(argv: list[str]) -> None:
    """``fnaf ARGV`` in this process. Unlike ``cli.main``, errors propagate (so the stage's
    failure message carries the verb's own), and a non-zero exit becomes a StageError."""
    from fnaf_jax import cli

    argv = [str(a) for a in argv]
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed why
        raise StageError(f"'fnaf {' '.join(argv)}': flags refused (exit {exc.code})") from None
    status = args.func(args)
    if status == 130:  # the verb saw SIGINT/SIGTERM and saved its state: an interruption
        raise KeyboardInterrupt
    if status:
        raise StageError(f"'fnaf {' '.join(argv)}' exited with status {status}")


def flags(options: dict) -> list[str]:
    """{"worst_of": 3, "robust": True, "accelerations": [4, 8]} -> CLI flags."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


@dataclass
class Layout:
    out: Path
    data_root: Path
    train_split: str
    val_split: str

    @property
    def train_dir(self) -> Path:
        return self.data_root / self.train_split

    @property
    def val_dir(self) -> Path:
        return self.data_root / self.val_split

    def workdir(self, model: str) -> Path:
        return self.out / "models" / model

    def checkpoint(self, model: str) -> Path:
        """The model checkpoint directory (``fnaf_jax.models.store``) a workdir ends with."""
        return self.workdir(model) / "best"

    def recon(self, model: str, acc: int) -> Path:
        return self.out / "recon" / f"{model}_{acc}x"

    def metrics(self, model: str, acc: int) -> Path:
        return self.out / "metrics" / f"{model}_{acc}x"

    def attack(self, model: str, acc: int, method: str) -> Path:
        return self.out / "attacks" / f"{model}_{acc}x_{method}.jsonl"

    def transfer(self, acc: int) -> Path:
        return self.out / "attacks" / f"transfer_unet-irim_{acc}x.jsonl"

    @property
    def tables(self) -> Path:
        return self.out / "tables"

    @property
    def figures(self) -> Path:
        return self.out / "figures"


def find_data_root(data: Path, preset: dict) -> tuple[Path, str, str]:
    """``--data DIR``: DIR/singlecoil_{train,val} (fastMRI layout) or DIR/{train,val}."""
    names = (preset["data"].get("train_split", "singlecoil_train"),
             preset["data"].get("val_split", "singlecoil_val"))
    for train, val in (names, ("train", "val")):
        if (data / train).is_dir() and (data / val).is_dir():
            return data, train, val
    raise DataError(f"{data}: expected sub-folders {names[0]}/ and {names[1]}/ (or train/ and val/)")


def eval_accs(preset) -> list[tuple[int, float]]:
    return [(int(e["acceleration"]), float(e["center_fraction"])) for e in preset["masks"]["eval"]]


# ----------------------------------------------------------------------------- stages
def data_stage(layout: Layout, preset: dict) -> Stage:
    d = preset["data"]

    def run():
        # val_slices (default: slices) lets a small validation set span more volumes
        # val files are numbered after the train files: distinct names, as in fastMRI
        for split, seed_offset, first, n, slices in (
                (layout.train_split, 0, 0, d["train_volumes"], d["slices"]),
                (layout.val_split, 1, d["train_volumes"], d["val_volumes"],
                 d.get("val_slices", d["slices"]))):
            run_verb(["synth", "--out", layout.data_root / split, "--volumes", n,
                      "--slices", slices, "--width", d["width"], "--first-index", first,
                      "--seed", int(d.get("seed", 0)) * 1000 + seed_offset,
                      *(["--lesions"] if d.get("lesions") else [])])

    return Stage("data", run, {"data": d}, outputs=[layout.data_root], weight=0.3)


def _train_options(layout: Layout, preset: dict, section: dict) -> dict:
    masks = preset["masks"]
    opts = {k: v for k, v in section.items() if k not in ("source",)}
    opts.update({"data": layout.data_root, "train_split": layout.train_split,
                 "val_split": layout.val_split, "mask_type": masks.get("type", "random"),
                 "accelerations": masks["train_accelerations"],
                 "center_fractions": masks["train_center_fractions"]})
    return opts


def train_stage(layout: Layout, preset: dict, model: str) -> Stage:
    """U-Net (``unet``), a fine-tune of it (``FINE_TUNES``: clean, FNAF-robust, worst-of-k),
    or a small i-RIM trained from scratch (``irim`` with source "train")."""
    opts = _train_options(layout, preset, model_section(preset, model))
    after = []
    if model in FINE_TUNES:
        opts["robust"] = model != "cleanft"
        opts["init_from"] = layout.checkpoint("unet")
        # the architecture is the U-Net's
        for key in ("chans", "num_pools", "drop_prob"):
            if key in preset["unet"]:
                opts.setdefault(key, preset["unet"][key])
        after = ["train_unet"]
    elif model == "irim":
        opts["model"] = "irim"
    workdir = layout.workdir(model)

    def run():
        run_verb(["train", "--workdir", workdir, *flags(opts)])
        if not (layout.checkpoint(model) / "model.json").is_file():
            raise StageError(f"training finished but {layout.checkpoint(model)} holds no model")

    config = {k: str(v) if isinstance(v, Path) else v for k, v in opts.items()}
    return Stage(f"train_{model}", run, config, outputs=[workdir],
                 after=["data", *after] if preset.get("_synthetic") else after,
                 weight=3)


def convert_irim_stage(layout: Layout, irim_pt: Path | None) -> Stage:
    def run():
        if irim_pt is None:
            raise ConfigError("this preset converts the released i-RIM: give --irim-checkpoint PT")
        if not Path(irim_pt).is_file():
            raise DataError(f"{irim_pt}: i-RIM checkpoint not found")
        run_verb(["convert", irim_pt, "--arch", "irim", "--out", layout.checkpoint("irim")])

    return Stage("train_irim", run, {"convert": str(irim_pt)}, outputs=[layout.workdir("irim")],
                 weight=0.5)


def reconstruct_stage(layout: Layout, preset: dict, model: str) -> Stage:
    accs = eval_accs(preset)
    mask_type = preset["masks"].get("type", "random")
    batch_size = preset["attack"].get("batch_size", 8)

    def run():
        for acc, cf in accs:
            run_verb(["reconstruct", "--checkpoint", layout.checkpoint(model),
                      "--data", layout.val_dir, "--out", layout.recon(model, acc),
                      "--mask-type", mask_type, "--acceleration", acc,
                      "--center-fraction", cf, "--batch-size", batch_size])

    return Stage(f"reconstruct_{model}", run, {"accs": accs, "mask": mask_type, "batch": batch_size},
                 outputs=[layout.recon(model, a) for a, _ in accs], after=[f"train_{model}"],
                 weight=0.5)


def evaluate_stage(layout: Layout, preset: dict) -> Stage:
    accs = eval_accs(preset)

    def run():
        for model in model_names(preset):
            for acc, _ in accs:
                run_verb(["evaluate", "--target", layout.val_dir,
                          "--predictions", layout.recon(model, acc),
                          "--out", layout.metrics(model, acc)])

    return Stage("evaluate", run, {"accs": accs}, outputs=[layout.out / "metrics"],
                 after=[f"reconstruct_{m}" for m in model_names(preset)], weight=0.3)


def attack_options(preset: dict) -> dict:
    a = preset["attack"]
    return {"k": a["k"], "fd_iterations": a["fd_iterations"], "fd_step": a["fd_h"],
            "fd_lr": a["fd_lr"], "gamma": a["gamma"], "pixels": a["pixels"], "box": a["box"],
            "batch_size": a["batch_size"], "limit": a.get("max_slices"),
            "mask_type": preset["masks"].get("type", "random")}


def attack_stage(layout: Layout, preset: dict, model: str) -> Stage:
    """RS and FD on a trained model, or RS on the zero-filled baseline (``BASELINE``)."""
    accs, opts = eval_accs(preset), attack_options(preset)
    methods = ("rs",) if model == BASELINE else METHODS
    source = ["--baseline", BASELINE] if model == BASELINE else ["--checkpoint", layout.checkpoint(model)]
    role = ["--role", ROLES[model]] if model in ROLES else []

    def run():
        for acc, cf in accs:
            for method in methods:
                run_verb(["attack", *source, "--data", layout.val_dir, "--method", method,
                          "--out", layout.attack(model, acc, method), "--name", model, *role,
                          "--acceleration", acc, "--center-fraction", cf, *flags(opts)])

    if model == BASELINE:
        after = ["data"] if preset.get("_synthetic") else []
    else:
        after = [f"train_{model}"]
    return Stage(f"attack_{model}", run, {"accs": accs, "attack": opts, "role": role},
                 outputs=[layout.attack(model, a, m) for a, _ in accs for m in methods],
                 after=after, weight={"irim": 2, BASELINE: 0.3}.get(model, 1))


def transfer_stage(layout: Layout, preset: dict) -> Stage:
    accs, opts = eval_accs(preset), attack_options(preset)

    def run():
        for acc, cf in accs:
            run_verb(["attack", "--checkpoint", layout.checkpoint("irim"),
                      "--data", layout.val_dir, "--transfer-from", layout.attack("unet", acc, "rs"),
                      "--out", layout.transfer(acc), "--name", "irim",
                      "--acceleration", acc, "--center-fraction", cf, *flags(opts)])

    return Stage("transfer", run, {"accs": accs, "attack": opts},
                 outputs=[layout.transfer(a) for a, _ in accs],
                 after=["attack_unet", "train_irim"], weight=0.5)


def table4_stage(layout: Layout, preset: dict, annotations: Path | None) -> Stage:
    from fnaf_jax.abnormalities import score_model, write_table4
    from fnaf_jax.data.annotations import read_annotations

    accs = eval_accs(preset)
    table = annotations or (layout.val_dir / "annotations.csv")

    def run():
        out = layout.tables / "table4"
        if out.exists():
            shutil.rmtree(out)
        if not Path(table).is_file():
            out.mkdir(parents=True)
            write_text(out / "table4.md", f"No annotation table ({table}).\n")
            return
        anns = read_annotations(table)
        scores, names = [], []
        for acc, _ in accs:
            for model in model_names(preset):
                name = f"{MODEL_NAMES.get(model, model)} {acc}x"
                names.append(name)
                scores += score_model(name, layout.val_dir, layout.recon(model, acc), anns)
        write_table4(scores, out, names)

    return Stage("table4", run, {"annotations": str(table), "accs": accs},
                 outputs=[layout.tables / "table4"],
                 after=[f"reconstruct_{m}" for m in model_names(preset)], weight=0.2)
