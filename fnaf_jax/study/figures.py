"""The study's figures (PNG), drawn from the attack records (and, for Figure 1, the models).

- Figure 1: worst features found on the U-Net: target with the feature, zero-filled input,
  and each model's reconstruction, zoomed on the feature;
- Figure 2: information preservation vs. FNAF loss of the chosen features, per model;
- Figure 3: where the features were found (hits and misses), U-Net vs. robust U-Net.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fnaf_jax.study.paper import MODEL_NAMES

GAMMA, IP_MIN = 1e-3, 1e-4


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _records(layout, model, acc, method):
    from fnaf_jax.study.results import read_jsonl

    path = layout.attack(model, acc, method)
    return read_jsonl(path) if path.is_file() else []


def _location(record):
    loc = record.get("location")
    if isinstance(loc, dict):
        loc = [loc.get("row"), loc.get("col")]
    return None if loc is None else (float(loc[0]), float(loc[1]))


def figure2_ip_vs_loss(layout, models, acc, out: Path, method="rs") -> Path | None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    drawn = False
    for model, colour in zip(models, ("tab:red", "tab:green", "tab:blue")):
        recs = _records(layout, model, acc, method)
        if not recs:
            continue
        ip = np.array([float(r.get("ip", np.nan)) for r in recs])
        loss = np.array([float(r.get("worst_loss", np.nan)) for r in recs])
        keep = (ip > 0) & (loss > 0)
        ax.scatter(ip[keep], loss[keep], s=14, alpha=0.7, c=colour,
                   label=f"{MODEL_NAMES.get(model, model)} ({keep.sum()})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(GAMMA, color="k", ls="--", lw=0.8, label="hit threshold gamma")
    ax.axvline(IP_MIN, color="gray", ls=":", lw=0.8, label="IP acceptance threshold")
    ax.set_xlabel("information preservation (IP) of the worst feature")
    ax.set_ylabel("FNAF loss (region MSE)")
    ax.set_title(f"IP vs. loss, {method.upper()} {acc}x")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def figure3_locations(layout, models, acc, out: Path, background=None, method="rs") -> Path | None:
    plt = _plt()
    panels = [(m, _records(layout, m, acc, method)) for m in models]
    panels = [(m, r) for m, r in panels if r]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
    for ax, (model, recs) in zip(axes[0], panels):
        if background is not None:
            ax.imshow(background, cmap="gray")
        pts = [(_location(r), bool(r.get("hit"))) for r in recs]
        pts = [(p, h) for p, h in pts if p is not None]
        for hit, colour, label in ((False, "tab:blue", "miss"), (True, "tab:red", "hit")):
            sel = [p for p, h in pts if h == hit]
            if sel:
                ax.scatter([p[1] for p in sel], [p[0] for p in sel], s=12, c=colour, label=label)
        ax.add_patch(plt.Rectangle((99.5, 99.5), 120, 120, fill=False, ec="yellow", lw=0.8))
        ax.set_xlim(0, 320)
        ax.set_ylim(320, 0)
        rate = 100 * np.mean([h for _, h in pts]) if pts else math.nan
        ax.set_title(f"{MODEL_NAMES.get(model, model)} {acc}x: {rate:.0f}% hits", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _mean_target(layout, n=4):
    """Mean validation target slice (background of Figure 3), or None."""
    import h5py

    files = sorted(Path(layout.val_dir).glob("*.h5"))[:n]
    images = []
    for f in files:
        with h5py.File(f, "r") as hf:
            if "reconstruction_esc" in hf:
                vol = np.asarray(hf["reconstruction_esc"])
                images.append(vol[len(vol) // 2] / max(float(vol.max()), 1e-12))
    return np.mean(images, 0) if images else None


def make_figures(layout, preset, accs) -> dict[str, list[str]]:
    """All figures; returns {"figure1": [relative png paths], ...} (paths relative to the
    study folder, as the report links them)."""
    from fnaf_jax.study.examples import figure1_examples

    layout.figures.mkdir(parents=True, exist_ok=True)
    models = ["unet", "robust", "irim"]
    out: dict[str, list[str]] = {"figure1": [], "figure2": [], "figure3": []}
    background = _mean_target(layout)
    for acc in accs:
        p = figure1_examples(layout, preset, acc, layout.figures / f"figure1_examples_{acc}x.png")
        if p:
            out["figure1"].append(p)
        p = figure2_ip_vs_loss(layout, models, acc, layout.figures / f"figure2_ip_vs_loss_{acc}x.png")
        if p:
            out["figure2"].append(p)
        p = figure3_locations(layout, models, acc, layout.figures / f"figure3_locations_{acc}x.png",
                              background)
        if p:
            out["figure3"].append(p)
    return {k: [str(Path(p).relative_to(layout.out)) for p in v] for k, v in out.items()}
