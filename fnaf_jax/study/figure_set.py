"""The study's figures (PNG).

Figures 1-3 of each acceleration come from ``fnaf report`` (``fnaf_jax.report`` /
``fnaf_jax.figures``) over every attack file of that acceleration, with the U-Net for
Figure 1's re-run. The study adds one comparison the single-model report cannot draw:
randomly drawn slices (a neutral rule) through the U-Net, the FNAF-robust U-Net and the
i-RIM side by side, each with the worst feature random search found on it, re-run
(``fnaf_jax.figures.rerun``) and marked hit or kept against gamma.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fnaf_jax.published import MODEL_NAMES

ZOOM = 48  # side of the zoomed window around a feature


def _pick(by_model: dict, n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` slices drawn at random (seeded) among those every model attacked and accepted:
    a neutral rule, not any model's own worst hits (which would favour that model)."""
    common = None
    for recs in by_model.values():
        keys = {(r["file"], int(r["slice"])) for r in recs if r.get("accepted") and "feature" in r}
        common = keys if common is None else common & keys
    pool = sorted(common or ())
    if not pool:
        return []
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]


def model_comparison(layout, acc: int, out: Path, n: int, models=("unet", "robust", "irim")) -> Path | None:
    """Figure 1b: the same randomly chosen slices through each model, each with the worst
    feature random search found on that model (target + feature, and the model's output)."""
    from fnaf_jax.attacks.runner import read_records
    from fnaf_jax.data.fastmri import SliceDataset
    from fnaf_jax.figures import _plt, rerun, save_figure
    from fnaf_jax.models.store import load_model

    by_model = {}
    for name in models:
        path = layout.attack(name, acc, "rs")
        if path.is_file() and (layout.checkpoint(name) / "model.json").is_file():
            by_model[name] = {(r["file"], int(r["slice"])): r for r in read_records(path)}
    slices = _pick({k: list(v.values()) for k, v in by_model.items()}, n)
    if not slices:
        return None
    dataset = SliceDataset(layout.val_dir, transform="raw")
    panels: dict[str, list] = {}
    for name, recs in by_model.items():
        model, _ = load_model(layout.checkpoint(name))
        model.eval()
        panels[name] = [(recs[key], rerun(model, dataset, recs[key])) for key in slices]
    plt = _plt()
    names = list(panels)
    fig, axes = plt.subplots(len(slices), 2 * len(names), figsize=(1.9 * 2 * len(names), 2.1 * len(slices)),
                             squeeze=False)
    for i, key in enumerate(slices):
        for j, name in enumerate(names):
            rec, run = panels[name][i]
            r, c = rec["location"]
            h, w = run["region"].shape
            top, left = int(np.clip(r - ZOOM // 2, 0, h - ZOOM)), int(np.clip(c - ZOOM // 2, 0, w - ZOOM))
            window = (slice(top, top + ZOOM), slice(left, left + ZOOM))
            lo, hi = np.percentile(run["target"][window], [1, 99.5])
            verdict = "hit" if run["loss"] > rec.get("gamma", 1e-3) else "kept (miss)"
            for k, (image, label) in enumerate(((run["target"], "target + feature"), (run["output"], "output"))):
                ax = axes[i, 2 * j + k]
                ax.imshow(image[window], cmap="gray", vmin=lo, vmax=hi)
                ax.contour(run["region"][window].astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{MODEL_NAMES.get(name, name)}\n{label}", fontsize=7)
                if k == 1:
                    ax.set_xlabel(f"loss {run['loss']:.2g}: {verdict}", fontsize=7,
                                  color="red" if verdict == "hit" else "green")
        axes[i, 0].set_ylabel(f"{key[0]} s{key[1]}", fontsize=7)
    fig.suptitle(f"{len(slices)} slices drawn at random, each model with its own worst RS feature "
                 f"({acc}x, z-scored, {ZOOM}x{ZOOM} zoom)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
    return out


def make_figures(layout, preset, accs, results: dict) -> dict[str, list[str]]:
    """All figures (the defenses trade-off from the gathered ``results``); returns
    {"figure1": [paths relative to the study folder], ...}."""
    from fnaf_jax.report import ReportConfig, make_report
    from fnaf_jax.study.defenses import tradeoff_figure
    from fnaf_jax.study.stages import BASELINE, model_names

    found: dict[str, list[str]] = {"figure1": [], "figure1b": [], "figure2": [], "figure3": [], "kspace": [],
                                   "defenses": []}
    for acc in accs:
        models = [*model_names(preset), BASELINE]
        files = [layout.attack(m, acc, k) for m in models for k in preset.attack.methods] + [layout.transfer(acc)]
        files = [str(f) for f in files if f.is_file()]
        if not files:
            continue
        folder = layout.figures / f"{acc}x"
        with_model = (layout.checkpoint("unet") / "model.json").is_file()
        make_report(ReportConfig(tuple(files), str(folder),
                                 checkpoint=str(layout.checkpoint("unet")) if with_model else None,
                                 data=str(layout.val_dir) if with_model else None,
                                 model_name="unet" if with_model else None))
        for key in ("figure1", "figure2", "figure3"):
            found[key] += [str(p.relative_to(layout.out)) for p in sorted(folder.glob(f"{key}_*.png"))]
        if (folder / "kspace_curves.png").is_file():
            found["kspace"].append(str((folder / "kspace_curves.png").relative_to(layout.out)))
        png = model_comparison(layout, acc, folder / "figure1b_models.png", preset.figure_examples)
        if png:
            found["figure1b"].append(str(Path(png).relative_to(layout.out)))
        if tradeoff_figure(results, acc, preset.attack.methods, folder / "defenses.png"):
            found["defenses"].append(str((folder / "defenses.png").relative_to(layout.out)))
    return found
