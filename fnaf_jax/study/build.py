"""Assemble a study's stages from a typed preset and run them (``fnaf reproduce``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from fnaf_jax.errors import ConfigError
from fnaf_jax.fileio import write_text
from fnaf_jax.study import stages as st
from fnaf_jax.study.pipeline import Pipeline, Stage, stage_timings
from fnaf_jax.study.presets import StudyPreset


def make_layout(out: Path, preset: StudyPreset, data: Path | None) -> st.Layout:
    if data is None:
        if not preset.data.synthetic:
            raise ConfigError(f"preset {preset.name!r} has no synthetic data settings "
                              "(data.train_volumes, val_volumes, slices, width); give --data DIR")
        return st.Layout(out, out / "data", "singlecoil_train", "singlecoil_val", synthetic=True)
    root, train, val = st.find_data_root(Path(data), preset)
    return st.Layout(out, root.absolute(), train, val)


def report_stage(layout: st.Layout, preset: StudyPreset, stage_names: list[str]) -> Stage:
    from fnaf_jax.study import figure_set, results, summary

    accs = st.eval_accs(preset)
    models = st.model_names(preset)

    def run():
        res = results.gather(layout, accs, [*models, st.BASELINE], preset.attack.methods)
        layout.tables.mkdir(parents=True, exist_ok=True)
        write_text(layout.tables / "results.json", json.dumps(
            {k: {str(m): v for m, v in tree.items()} for k, tree in res.items()},
            indent=1, default=str))
        if layout.figures.exists():  # no stale figures of an earlier configuration
            shutil.rmtree(layout.figures)
        figs = figure_set.make_figures(layout, preset, accs, res)
        t4 = layout.tables / "table4" / "table4.md"
        timings = {name: sec for name, sec in stage_timings(layout.out).items() if name in stage_names}
        notes = [f"Data: `{layout.data_root}` ({layout.train_split} / {layout.val_split}).",
                 f"Preset file: `{preset.path}`.",
                 "Per-acceleration attack reports of `fnaf report` (Tables 2, 3 with hit counts, "
                 "CSV files): " + ", ".join(f"`figures/{a}x/report.md`" for a in accs) + "."]
        summary.write_study_report(layout.out, res, preset, figs,
                                   t4.read_text() if t4.is_file() else None, timings, notes)

    after = [f"attack_{m}" for m in [*models, st.BASELINE]] + ["evaluate", *transfer_after(preset), "table4"]
    return Stage("report", run, {"version": 2, "figures": preset.figure_examples}, outputs=[],
                 after=after, weight=st.PRIOR_RATES["report"], kind="report")


def transfer_after(preset: StudyPreset) -> list[str]:
    """["transfer"] when the study has an i-RIM and random search to transfer, else []."""
    return ["transfer"] if "irim" in st.model_names(preset) and "rs" in preset.attack.methods else []


def build_pipeline(preset: StudyPreset, out, data=None, irim_checkpoint=None, annotations=None,
                   log=None) -> Pipeline:
    out = Path(out).absolute()
    layout = make_layout(out, preset, data)
    stages: list[Stage] = []
    if layout.synthetic:
        stages.append(st.data_stage(layout, preset))
    models = st.model_names(preset)
    stages += [st.train_stage(layout, preset, m) for m in models if m != "irim"]
    if preset.irim_source == "convert":
        # checked up front: a missing file should not surface after hours of U-Net training
        if irim_checkpoint is None or not Path(irim_checkpoint).is_file():
            raise ConfigError(f"preset {preset.name!r} converts the released i-RIM: give "
                              f"--irim-checkpoint PT (got {irim_checkpoint})")
        stages.append(st.convert_irim_stage(layout, Path(irim_checkpoint).absolute()))
    elif "irim" in models:
        stages.append(st.train_stage(layout, preset, "irim"))
    stages += [st.reconstruct_stage(layout, preset, m) for m in models]
    stages.append(st.evaluate_stage(layout, preset))
    stages += [st.attack_stage(layout, preset, m) for m in [*models, st.BASELINE]]
    if transfer_after(preset):
        stages.append(st.transfer_stage(layout, preset))
    stages.append(st.table4_stage(layout, preset, Path(annotations) if annotations else None))
    stages.append(report_stage(layout, preset, [s.name for s in stages]))
    return Pipeline(out, stages, log=log)


def reproduce(preset: StudyPreset, out, data=None, irim_checkpoint=None, annotations=None, log=None,
              targets=None) -> dict:
    """Run the study (or only ``targets`` and the stages they need) under ``out``."""
    pipeline = build_pipeline(preset, out, data, irim_checkpoint, annotations, log)
    (pipeline.out_dir).mkdir(parents=True, exist_ok=True)
    write_text(pipeline.out_dir / "preset.json", json.dumps(
        {"source": preset.raw, "resolved": dataclasses.asdict(dataclasses.replace(preset, raw={}))},
        indent=1, default=str))
    t0 = time.monotonic()
    pipeline.log(f"fnaf reproduce: preset {preset.name!r}, {len(pipeline.stages)} stages, "
                 f"out {pipeline.out_dir}")
    status = pipeline.run(targets)
    return {"status": status, "seconds": time.monotonic() - t0,
            "report": str(pipeline.out_dir / "report.md"), "pipeline": pipeline}
