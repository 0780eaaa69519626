"""The study's stages. Each one calls the library function behind an ``fnaf`` verb
(``synthesize``, ``train``, ``reconstruct_folder``, ``evaluate``, ``attack_folder``, ...)
with a config built from the typed preset, so ``fnaf reproduce`` does exactly what a user
typing the verbs would do; the verbs' own checkpoints make a killed stage resume where
it stopped.

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

import dataclasses
import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

from fnaf_jax.errors import ConfigError, DataError, FnafError
from fnaf_jax.fileio import write_text
from fnaf_jax.published import MODEL_NAMES
from fnaf_jax.study.pipeline import Stage, StageError
from fnaf_jax.study.presets import StudyPreset

#: the paper's role of each study model (reports put the paper's numbers beside these)
ROLES = {"unet": "unet", "robust": "robust", "irim": "irim"}
BASELINE = "zero-filled"  # the under-sampled input as the output: attacked, never trained


def model_names(preset: StudyPreset) -> list[str]:
    """The trained models of a study (``StudyPreset.models``)."""
    return preset.models()


def _asdict(cfg) -> dict:
    """A config as the JSON-able dict that keys its stage."""
    return dataclasses.asdict(cfg)


@dataclass
class Layout:
    out: Path
    data_root: Path
    train_split: str
    val_split: str
    synthetic: bool = False  # the study makes its own data (a data stage runs first)

    @functools.cached_property
    def val_scan_slices(self) -> int | None:
        """Slices in the validation folder of ``--data`` (one header scan per study, for the
        ETA's units of work); None when it cannot be read now (the stages will say why)."""
        from fnaf_jax.data.fastmri import SliceDataset

        try:
            return len(SliceDataset(self.val_dir, transform="raw", skip_bad=True))
        except (OSError, FnafError):
            return None

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


def find_data_root(data: Path, preset: StudyPreset) -> tuple[Path, str, str]:
    """``--data DIR``: DIR/singlecoil_{train,val} (fastMRI layout) or DIR/{train,val}."""
    names = (preset.data.train_split, preset.data.val_split)
    for train, val in (names, ("train", "val")):
        if (data / train).is_dir() and (data / val).is_dir():
            return data, train, val
    raise DataError(f"{data}: expected sub-folders {names[0]}/ and {names[1]}/ (or train/ and val/)")


def eval_accs(preset: StudyPreset) -> list[int]:
    return [spec.acceleration for spec in preset.masks.eval]


#: prior seconds per unit of work of each stage kind on the reference machine (2 idle CPU
#: cores, the synthetic preset's models); the ETA replaces them by measured rates
#: (fitted to the smoke and synthetic studies' stage timings)
PRIOR_RATES = {"data": 0.037, "train_unet": 0.18, "train_robust": 0.29, "train_robust_wk": 0.14,
               "train_irim": 0.14, "convert": 10.0, "reconstruct_unet": 0.06, "reconstruct_irim": 0.19,
               "evaluate": 0.07, "attack_unet": 0.042, "attack_irim": 0.072, "attack_baseline": 0.0045,
               "transfer": 0.14, "table4": 0.02, "report": 8.0}


def val_slices(layout: Layout, preset: StudyPreset) -> int:
    """Slices the study attacks and reconstructs (for the ETA's units of work)."""
    d = preset.data
    if layout.synthetic:
        n = d.val_volumes * (d.val_slices or d.slices)
    else:  # unreadable now: the ETA only guesses
        n = layout.val_scan_slices if layout.val_scan_slices is not None else 1000
    return min(n, preset.attack.limit) if preset.attack.limit else n


def val_volumes(layout: Layout, preset: StudyPreset) -> int:
    if layout.synthetic:
        return preset.data.val_volumes
    return max(1, val_slices(layout, preset) // 35)  # fastMRI knee volumes hold about 35 slices


def train_slices(layout: Layout, preset: StudyPreset) -> int:
    d = preset.data
    return d.train_volumes * d.slices if layout.synthetic else 10 * val_slices(layout, preset)


def _data_after(layout: Layout) -> list[str]:
    return ["data"] if layout.synthetic else []


# ----------------------------------------------------------------------------- stages
def data_stage(layout: Layout, preset: StudyPreset) -> Stage:
    from fnaf_jax.data.synthetic import SynthConfig, synthesize

    d = preset.data
    # val files are numbered after the train files: distinct names, as in fastMRI; a
    # val_slices smaller than slices lets a small validation set span more volumes
    configs = [SynthConfig(out=str(layout.data_root / split), volumes=n, slices=slices, width=d.width,
                           seed=d.seed * 1000 + offset, first_index=first, lesions=d.lesions)
               for split, offset, first, n, slices in (
                   (layout.train_split, 0, 0, d.train_volumes, d.slices),
                   (layout.val_split, 1, d.train_volumes, d.val_volumes, d.val_slices or d.slices))]

    def run():
        for cfg in configs:
            synthesize(cfg)

    work = sum(c.volumes * c.slices for c in configs)
    return Stage("data", run, {"data": [_asdict(c) for c in configs]}, outputs=[layout.data_root],
                 weight=PRIOR_RATES["data"], kind="data", work=work)


def train_config(layout: Layout, preset: StudyPreset, model: str):
    """The ``TrainConfig`` of one study model: its preset section plus the study's data,
    masks and (for the fine-tunes) the trained U-Net to start from."""
    from fnaf_jax.train.config import TrainConfig

    masks = preset.masks
    fields = dict(preset.train[model], data=str(layout.data_root), train_split=layout.train_split,
                  val_split=layout.val_split, mask_type=masks.type,
                  accelerations=masks.train_accelerations, center_fractions=masks.train_center_fractions)
    if model in preset.fine_tunes():
        fields["init_from"] = str(layout.checkpoint("unet"))
    return TrainConfig(**fields)


def train_stage(layout: Layout, preset: StudyPreset, model: str) -> Stage:
    """U-Net (``unet``), a fine-tune of it (``StudyPreset.fine_tunes``: clean, FNAF-robust,
    worst-of-k, the preset's defenses), or a small i-RIM trained from scratch (``irim`` with source "train")."""
    from fnaf_jax.train.loop import train

    cfg = train_config(layout, preset, model)
    workdir = layout.workdir(model)

    def run():
        summary = train(cfg, workdir, progress=True)
        if summary["status"] != "done":  # SIGINT/SIGTERM: the run saved its state
            raise KeyboardInterrupt
        if not (layout.checkpoint(model) / "model.json").is_file():
            raise StageError(f"training finished but {layout.checkpoint(model)} holds no model")

    after = ["train_unet"] if model in preset.fine_tunes() else []
    work = cfg.epochs * min(train_slices(layout, preset), cfg.limit_train or 10**9)
    if model == "irim":
        kind = "train_irim"
    elif cfg.robust == "worst-of-k":
        kind, work = "train_robust_wk", work * cfg.worst_of
    elif cfg.robust in ("pgd", "kspace-adv"):  # each inner step a forward and a backward
        kind, work = "train_robust_wk", work * 3 * cfg.adv_steps
    else:
        kind = "train_robust" if cfg.robust else "train_unet"
    return Stage(f"train_{model}", run, _asdict(cfg), outputs=[workdir], after=[*_data_after(layout), *after],
                 weight=PRIOR_RATES[kind], kind=kind, work=work)


def convert_irim_stage(layout: Layout, irim_pt: Path | None) -> Stage:
    from fnaf_jax.models.convert import ConvertConfig, convert_checkpoint

    def run():
        if irim_pt is None:
            raise ConfigError("this preset converts the released i-RIM: give --irim-checkpoint PT")
        if not Path(irim_pt).is_file():
            raise DataError(f"{irim_pt}: i-RIM checkpoint not found")
        convert_checkpoint(ConvertConfig(str(irim_pt), str(layout.checkpoint("irim")), arch="irim"))

    return Stage("train_irim", run, {"convert": str(irim_pt)}, outputs=[layout.workdir("irim")],
                 weight=PRIOR_RATES["convert"], kind="convert")


def reconstruct_stage(layout: Layout, preset: StudyPreset, model: str) -> Stage:
    from fnaf_jax.inference import ReconstructConfig, reconstruct_folder

    configs = [ReconstructConfig(str(layout.checkpoint(model)), str(layout.val_dir),
                                 str(layout.recon(model, spec.acceleration)), mask=spec,
                                 batch_size=preset.attack.batch_size)
               for spec in preset.masks.eval]

    def run():
        for cfg in configs:
            reconstruct_folder(cfg)

    kind = f"reconstruct_{'irim' if model == 'irim' else 'unet'}"
    return Stage(f"reconstruct_{model}", run, {"recon": [_asdict(c) for c in configs]},
                 outputs=[Path(c.out) for c in configs], after=[f"train_{model}"], weight=PRIOR_RATES[kind],
                 kind=kind, work=len(configs) * val_slices(layout, preset))


def evaluate_stage(layout: Layout, preset: StudyPreset) -> Stage:
    from fnaf_jax.evaluation import EvaluateConfig, evaluate

    configs = [EvaluateConfig(str(layout.val_dir), str(layout.recon(model, acc)), str(layout.metrics(model, acc)))
               for model in model_names(preset) for acc in eval_accs(preset)]

    def run():
        for cfg in configs:
            evaluate(cfg)

    return Stage("evaluate", run, {"evaluate": [_asdict(c) for c in configs]}, outputs=[layout.out / "metrics"],
                 after=[f"reconstruct_{m}" for m in model_names(preset)], weight=PRIOR_RATES["evaluate"],
                 kind="evaluate", work=len(configs) * val_volumes(layout, preset))


def methods(preset: StudyPreset, model: str) -> tuple[str, ...]:
    """The attack methods run on ``model``: the preset's (``attack.methods``, default RS and
    FD); RS only on the zero-filled baseline, whose hit rate is a control."""
    return ("rs",) if model == BASELINE else preset.attack.methods


def attack_jobs(layout: Layout, preset: StudyPreset, model: str) -> list:
    """The ``AttackJob``s of one model: each of its ``methods`` at each evaluation mask."""
    from fnaf_jax.attacks.runner import AttackJob

    source = ({"baseline": BASELINE} if model == BASELINE
              else {"checkpoint": str(layout.checkpoint(model))})
    a = preset.attack
    return [AttackJob(data=str(layout.val_dir), out=str(layout.attack(model, spec.acceleration, method)),
                      method=method, mask=spec, attack=a.config, batch_size=a.batch_size, limit=a.limit,
                      name=model, role=ROLES.get(model), **source)
            for spec in preset.masks.eval for method in methods(preset, model)]


def model_calls(job, slices: int) -> int:
    """Model passes of one attack job (``attacks.config.passes``, a backward counted as two
    forwards), 1 per slice to transfer."""
    from fnaf_jax.attacks.config import passes

    if job.transfer_from is not None:
        return slices
    spent = passes(job.method, job.attack)
    return slices * (spent["forward"] + 2 * spent["backward"])


def _attack_stage(name: str, jobs: list, after: list[str], kind: str, slices: int) -> Stage:
    from fnaf_jax.attacks.runner import attack_folder, shared_controls

    def run():
        controls = shared_controls(jobs)  # the stage's methods share each slice's no-feature output
        for job in jobs:
            attack_folder(job, controls=controls)

    return Stage(name, run, {"jobs": [_asdict(j) for j in jobs]}, outputs=[Path(j.out) for j in jobs],
                 after=after, weight=PRIOR_RATES[kind], kind=kind,
                 work=sum(model_calls(j, slices) for j in jobs))


def attack_stage(layout: Layout, preset: StudyPreset, model: str) -> Stage:
    """The preset's methods on a trained model, or RS on the zero-filled baseline (``BASELINE``)."""
    after = _data_after(layout) if model == BASELINE else [f"train_{model}"]
    kind = {"irim": "attack_irim", BASELINE: "attack_baseline"}.get(model, "attack_unet")
    return _attack_stage(f"attack_{model}", attack_jobs(layout, preset, model), after, kind,
                         val_slices(layout, preset))


def transfer_stage(layout: Layout, preset: StudyPreset) -> Stage:
    """The U-Net's worst RS features re-scored on the i-RIM (paper section 4.7)."""
    jobs = [dataclasses.replace(job, out=str(layout.transfer(job.mask.acceleration)), role=None,
                                transfer_from=str(layout.attack("unet", job.mask.acceleration, "rs")))
            for job in attack_jobs(layout, preset, "irim") if job.method == "rs"]
    return _attack_stage("transfer", jobs, ["attack_unet", "train_irim"], "transfer", val_slices(layout, preset))


def table4_stage(layout: Layout, preset: StudyPreset, annotations: Path | None) -> Stage:
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
        for acc in accs:
            for model in model_names(preset):
                name = f"{MODEL_NAMES.get(model, model)} {acc}x"
                names.append(name)
                scores += score_model(name, layout.val_dir, layout.recon(model, acc), anns)
        write_table4(scores, out, names)

    return Stage("table4", run, {"annotations": str(table), "accs": accs},
                 outputs=[layout.tables / "table4"],
                 after=[f"reconstruct_{m}" for m in model_names(preset)], weight=PRIOR_RATES["table4"],
                 kind="table4", work=len(accs) * len(model_names(preset)) * val_volumes(layout, preset))
