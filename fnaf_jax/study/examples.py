"""Figure 1: the worst features random search found on the U-Net, re-run through every model.

Each row is one validation slice (the U-Net's largest RS losses among its hits, or among
accepted slices when there are few hits): the target with the feature, the zero-filled
input the models see, and the U-Net's, robust U-Net's and i-RIM's reconstructions, all in
the z-scored space of the loss and zoomed on the feature (its region T outlined).
The slices, masks and features are rebuilt with the attack's own helpers
(``fnaf_jax.attacks.evaluate``), so the picture shows exactly what was scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fnaf_jax.study.paper import MODEL_NAMES

ZOOM = 48  # half-size of the zoomed window around the feature


def _pick(records, n):
    accepted = [r for r in records if r.get("accepted")]
    hits = [r for r in accepted if r.get("hit")]
    pool = hits if len(hits) >= n else accepted
    return sorted(pool, key=lambda r: -float(r["worst_loss"]))[:n]


def figure1_examples(layout, preset, acc: int, out: Path, models=("unet", "robust", "irim")) -> Path | None:
    from fnaf_jax.attacks.evaluate import (
        MaskSpec,
        candidate_from_record,
        make_batch,
        read_records,
    )
    from fnaf_jax.data.fastmri import SliceDataset
    from fnaf_jax.models.store import load_model
    from fnaf_jax.objective import forward
    from fnaf_jax.study.figures import _plt
    from fnaf_jax.study.stages import eval_accs

    source = layout.attack("unet", acc, "rs")
    if not source.is_file():
        return None
    picked = _pick(read_records(source), int(preset.get("figures", {}).get("examples", 4)))
    if not picked:
        return None
    cf = dict(eval_accs(preset))[acc]
    spec = MaskSpec(acc, cf, preset["masks"].get("type", "random"))
    dataset = SliceDataset(layout.val_dir, transform="raw")
    index = {}
    for i in range(len(dataset)):
        volume, s = dataset.locate(i)
        index[(Path(volume.fname).name, int(s))] = i
    rows = [r for r in picked if (r["file"], int(r["slice"])) in index]
    if not rows:
        return None
    batch = make_batch([dataset[index[(r["file"], int(r["slice"]))]] for r in rows], spec, (320, 320))
    cands = [candidate_from_record(r) for r in rows]

    panels = {}  # name -> list of (H, W) arrays per row
    region = None
    for model_name in models:
        ckpt = layout.checkpoint(model_name)
        if not (ckpt / "model.json").is_file():
            continue
        model, _ = load_model(ckpt)
        model.eval()
        outs = []
        for i, cand in enumerate(cands):
            one = {k: v[i:i + 1] for k, v in batch.items() if k in ("target_raw", "mask", "metadata")}
            res = forward(model.reconstruct, one, cand)
            outs.append({k: np.asarray(v[0, 0]) for k, v in res.items()
                         if k in ("input", "output", "target", "region")})
        if "target + feature" not in panels:
            panels["target + feature"] = [o["target"] for o in outs]
            panels["zero-filled input"] = [o["input"] for o in outs]
            region = [o["region"] for o in outs]
        panels[MODEL_NAMES.get(model_name, model_name)] = [o["output"] for o in outs]
    if not panels:
        return None

    plt = _plt()
    names = list(panels)
    fig, axes = plt.subplots(len(rows), len(names), figsize=(2.2 * len(names), 2.3 * len(rows)),
                             squeeze=False)
    for i, rec in enumerate(rows):
        r, c = rec["location"]
        h, w = panels[names[0]][i].shape
        r0, c0 = int(np.clip(r - ZOOM, 0, h - 2 * ZOOM)), int(np.clip(c - ZOOM, 0, w - 2 * ZOOM))
        window = (slice(r0, r0 + 2 * ZOOM), slice(c0, c0 + 2 * ZOOM))
        ref = panels[names[0]][i][window]
        vmin, vmax = float(ref.min()), float(ref.max())
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.imshow(panels[name][i][window], cmap="gray", vmin=vmin, vmax=vmax)
            ax.contour(region[i][window].astype(float), levels=[0.5], colors="yellow", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
        axes[i, 0].set_ylabel(f"{rec['file']} s{rec['slice']}\nloss {float(rec['worst_loss']):.2g}", fontsize=7)
    fig.suptitle(f"Worst U-Net features (RS, {acc}x), z-scored, zoomed", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
