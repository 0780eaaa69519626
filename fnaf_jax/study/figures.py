"""The study's figures (PNG).

Figures 1-3 of each acceleration come from ``fnaf report`` (``fnaf_jax.report`` /
``fnaf_jax.figures``) over every attack file of that acceleration, with the U-Net for
Figure 1's re-run. The study adds one comparison the single-model report cannot draw:
the worst features random search found on the U-Net, re-run (``fnaf_jax.figures.rerun``)
through the U-Net, the FNAF-robust U-Net and the i-RIM side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fnaf_jax.published import MODEL_NAMES

ZOOM = 48  # side of the zoomed window around a feature


def _pick(records, n):
    """The U-Net's largest worst losses among its hits (among accepted slices if few hit)."""
    accepted = [r for r in records if r.get("accepted") and "feature" in r]
    hits = [r for r in accepted if r.get("hit")]
    pool = hits if len(hits) >= n else accepted
    return sorted(pool, key=lambda r: -float(r["worst_loss"]))[:n]


def model_comparison(layout, acc: int, out: Path, n: int, models=("unet", "robust", "irim")) -> Path | None:
    from fnaf_jax.attacks.evaluate import read_records
    from fnaf_jax.data.fastmri import SliceDataset
    from fnaf_jax.figures import _plt, rerun
    from fnaf_jax.models.store import load_model

    source = layout.attack("unet", acc, "rs")
    rows = _pick(read_records(source), n) if source.is_file() else []
    if not rows:
        return None
    dataset = SliceDataset(layout.val_dir, transform="raw")
    columns: dict[str, list] = {}
    for name in models:
        ckpt = layout.checkpoint(name)
        if not (ckpt / "model.json").is_file():
            continue
        model, _ = load_model(ckpt)
        model.eval()
        runs = [rerun(model, dataset, r) for r in rows]
        if not columns:
            columns["target + feature"] = [(x["target"], None) for x in runs]
            columns["zero-filled input"] = [(x["input"], None) for x in runs]
        columns[MODEL_NAMES.get(name, name)] = [(x["output"], x["loss"]) for x in runs]
        region = [x["region"] for x in runs]
    plt = _plt()
    names = list(columns)
    fig, axes = plt.subplots(len(rows), len(names), figsize=(2.1 * len(names), 2.2 * len(rows)),
                             squeeze=False)
    for i, rec in enumerate(rows):
        r, c = rec["location"]
        h, w = region[i].shape
        top, left = int(np.clip(r - ZOOM // 2, 0, h - ZOOM)), int(np.clip(c - ZOOM // 2, 0, w - ZOOM))
        window = (slice(top, top + ZOOM), slice(left, left + ZOOM))
        lo, hi = np.percentile(columns[names[0]][i][0][window], [1, 99.5])
        for j, name in enumerate(names):
            image, loss = columns[name][i]
            ax = axes[i, j]
            ax.imshow(image[window], cmap="gray", vmin=lo, vmax=hi)
            ax.contour(region[i][window].astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if loss is not None:
                ax.set_xlabel(f"loss {loss:.2g}" + (" (hit)" if loss > rec.get("gamma", 1e-3) else ""),
                              fontsize=7)
        axes[i, 0].set_ylabel(f"{rec['file']} s{rec['slice']}", fontsize=7)
    fig.suptitle(f"Worst U-Net features (RS, {acc}x) through each model (z-scored, zoomed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def make_figures(layout, preset, accs) -> dict[str, list[str]]:
    """All figures; returns {"figure1": [paths relative to the study folder], ...}."""
    from fnaf_jax.study.stages import BASELINE, METHODS, model_names, run_verb

    found: dict[str, list[str]] = {"figure1": [], "figure1b": [], "figure2": [], "figure3": []}
    n_examples = int(preset.get("figures", {}).get("examples", 4))
    for acc in accs:
        models = [*model_names(preset), BASELINE]
        files = [layout.attack(m, acc, k) for m in models for k in METHODS] + [layout.transfer(acc)]
        files = [f for f in files if f.is_file()]
        if not files:
            continue
        folder = layout.figures / f"{acc}x"
        argv = ["report", *files, "--out", folder]
        if (layout.checkpoint("unet") / "model.json").is_file():
            argv += ["--checkpoint", layout.checkpoint("unet"), "--data", layout.val_dir,
                     "--model-name", "unet"]
        run_verb(argv)
        for key in ("figure1", "figure2", "figure3"):
            found[key] += [str(p.relative_to(layout.out)) for p in sorted(folder.glob(f"{key}_*.png"))]
        png = model_comparison(layout, acc, folder / "figure1b_models.png", n_examples)
        if png:
            found["figure1b"].append(str(Path(png).relative_to(layout.out)))
    return found
