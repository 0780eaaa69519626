"""PNG figures of the FNAF report (matplotlib, Agg backend; small files).

Each function returns ``{"file": name, ...stats}`` or None when there is nothing to draw.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx

_DPI = 90


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """PNG written atomically (a reader never sees half a figure)."""
    from fnaf_jax.fileio import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=_DPI, format="png")


def _attack_records(records):
    return [r for r in records if not r.get("transfer_from")]


def ip_vs_loss(records, path) -> dict | None:
    """Figure 2: IP against the worst FNAF loss, one point per accepted slice, per model."""
    recs = [r for r in _attack_records(records) if r["accepted"]]
    if len(recs) < 2:
        return None
    plt = _plt()
    ip = np.array([r["ip"] for r in recs], float)
    loss = np.array([r["worst_loss"] for r in recs], float)
    r_all = float(np.corrcoef(ip, loss)[0, 1]) if ip.std() > 0 and loss.std() > 0 else float("nan")
    fig, ax = plt.subplots(figsize=(5, 4))
    groups = sorted({(r.get("model", ""), r["method"], r["acceleration"]) for r in recs})
    for model, method, acc in groups:
        sel = [(a, b) for a, b, r in zip(ip, loss, recs, strict=True)
               if (r.get("model", ""), r["method"], r["acceleration"]) == (model, method, acc)]
        x, y = np.array(sel).T
        ax.scatter(x, y, s=8, alpha=0.7, label=f"{model} {method.upper()} {acc}x")
    gamma = recs[0].get("gamma", 1e-3)
    ax.axhline(gamma, color="gray", ls="--", lw=0.8)
    ax.axvline(recs[0].get("ip_threshold", 1e-4), color="gray", ls=":", lw=0.8)
    if (ip > 0).all() and (loss > 0).all():
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("information preservation (IP)")
    ax.set_ylabel("worst FNAF loss")
    ax.set_title(f"IP vs FNAF loss (Pearson r = {r_all:.3f}, n = {len(recs)})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return {"file": Path(path).name, "pearson_r": r_all, "n": len(recs)}


def kspace_curves(groups: dict, path) -> dict | None:
    """NMSE and the lost (or shown) fraction against eps, one line per k-space run, each
    point its mean over slices with the 95% interval (``tabulation.summarize_kspace``)."""
    if not groups:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, rows in groups.items():
        eps = np.array([r["eps"] for r in rows])
        x = np.where(eps > 0, eps, eps[eps > 0].min() / 3 if (eps > 0).any() else 1e-3)  # eps 0 left of the rest
        for ax, name in zip(axes, ("nmse", "lost" if "lost" in rows[0] else "shown"), strict=True):
            mean = np.array([r[name]["mean"] for r in rows])
            err = np.abs(np.array([[r[name]["lo"], r[name]["hi"]] for r in rows]).T - mean)
            ax.errorbar(x, mean, yerr=err, marker="o", ms=3, capsize=2, label=f"{label} ({name})")
    axes[0].set_ylabel("NMSE of the output")
    axes[1].set_ylabel("feature-lost / shown fraction")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("eps = ||e|| / ||y_k|| (leftmost point: eps = 0)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return {"file": Path(path).name, "runs": len(groups)}


def defense_tradeoff(panels: dict[str, list[dict]], path) -> dict | None:
    """One panel per attack: each model's clean SSIM (x) against its feature-lost or shown
    fraction under that attack (y, with the 95% interval), labelled by model. ``panels``:
    {attack label: [{"label", "ssim", "fraction": mean_ci dict, "fraction_name"}]}."""
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    plt = _plt()
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, points) in zip(axes.flat, panels.items(), strict=False):
        for pt in points:
            m = pt["fraction"]
            ax.errorbar([pt["ssim"]], [m["mean"]], yerr=[[m["mean"] - m["lo"]], [m["hi"] - m["mean"]]],
                        marker="o", ms=4, capsize=2)
            ax.annotate(pt["label"], (pt["ssim"], m["mean"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("clean SSIM")
        ax.set_ylabel(f"{points[0]['fraction_name']} fraction")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return {"file": Path(path).name, "panels": len(panels)}


_SWEEP_LABELS = {"size": "feature size (pixels)", "contrast": "contrast (fraction of the slice's range)",
                 "acceleration": "acceleration"}


def profile_figures(sweeps: dict, out_dir, grid: int) -> dict:
    """One PNG per sweep of ``fnaf profile``: hit rate and feature-lost fraction with their
    95% intervals against the swept value; the location sweep as two heatmaps over the box."""
    plt = _plt()
    made = {}
    for name, points in sweeps.items():
        if name == "location":
            fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
            for ax, key, label, scale in ((axes[0], "hit_rate", "hit rate %", 100.0), (axes[1], "lost", "lost fraction", 1.0)):
                img = np.full((grid, grid), np.nan)
                for p in points:
                    v = p[key]["pct"] if key == "hit_rate" else p[key]["mean"]
                    img[p["cell"][0], p["cell"][1]] = np.nan if v is None else v
                im = ax.imshow(img, vmin=0, vmax=scale, cmap="magma")
                ax.set_title(f"{label} per cell of the box", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                fig.colorbar(im, ax=ax, fraction=0.046)
        else:
            fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
            x = np.array([p["value"] for p in points], float)
            for ax, key, label in ((axes[0], "hit_rate", "hit rate % (hits / accepted)"),
                                   (axes[1], "lost", "feature-lost fraction")):
                mean = np.array([p[key]["pct"] if key == "hit_rate" else p[key]["mean"] for p in points], float)
                lo = np.array([p[key]["lo"] for p in points], float)
                hi = np.array([p[key]["hi"] for p in points], float)
                ax.errorbar(x, mean, yerr=[np.abs(mean - lo), np.abs(hi - mean)], marker="o", ms=3, capsize=2)
                if name != "acceleration":
                    ax.set_xscale("log")
                ax.set_xlabel(_SWEEP_LABELS[name])
                ax.set_ylabel(label)
            axes[1].axhline(0.5, color="gray", ls=":", lw=0.8)
        fig.tight_layout()
        path = Path(out_dir) / f"profile_{name}.png"
        save_figure(fig, path)
        plt.close(fig)
        made[name] = path.name
    return made


def display_name(record: dict) -> str:
    """A model's name for figures: the paper's name for its role, else its own."""
    from fnaf_jax.published import MODEL_NAMES

    model = record.get("model", "")
    return MODEL_NAMES.get(record.get("role") or model, model)


def location_heatmaps(records, path, image_size: int = 320, underlay=None) -> dict | None:
    """Figure 3: per model, where the worst features lie in the central box: each accepted
    slice's worst feature (its centroid) as a filled dot (hit) or a cross (miss), coloured
    by its loss on one shared log scale, over ``underlay`` (a mean clean image) if given."""
    from matplotlib.colors import LogNorm

    recs = [r for r in _attack_records(records) if r["accepted"] and "feature" in r]
    names = list(dict.fromkeys(display_name(r) for r in recs))
    if not names:
        return None
    plt = _plt()
    box = int(recs[0].get("box_size", 120))
    first = (image_size - box) // 2
    losses = np.array([max(float(r["worst_loss"]), 1e-8) for r in recs])
    norm = LogNorm(vmin=losses.min(), vmax=max(losses.max(), losses.min() * 1.01))
    gamma = float(recs[0].get("gamma", 1e-3))
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names) + 1.0, 3.4), squeeze=False,
                             layout="constrained")
    stats, scatter = {}, None
    extent = (first - 0.5, first + box - 0.5, first + box - 0.5, first - 0.5)
    for ax, name in zip(axes[0], names, strict=True):
        mine = [r for r in recs if display_name(r) == name]
        if underlay is not None:
            ax.imshow(np.asarray(underlay)[first:first + box, first:first + box], cmap="gray", extent=extent)
        for hit, marker in ((True, "o"), (False, "x")):
            sel = [r for r in mine if bool(r["hit"]) == hit]
            if not sel:
                continue
            centre = np.array([np.mean(r["feature"]["pixels"], axis=0) for r in sel])
            scatter = ax.scatter(centre[:, 1], centre[:, 0], c=[max(float(r["worst_loss"]), 1e-8) for r in sel],
                                 cmap="plasma", norm=norm, marker=marker, s=18, linewidths=1.0,
                                 label="hit" if hit else "miss")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        hits = sum(bool(r["hit"]) for r in mine)
        methods = "+".join(sorted({r["method"].upper() for r in mine}))
        ax.set_title(f"{name}\n{hits} hits / {len(mine)} accepted ({methods})", fontsize=8)
        ax.set_xlabel("column (pixels)", fontsize=7)
        ax.tick_params(labelsize=6)
        stats[name] = {"n": len(mine), "hits": hits}
    axes[0, 0].set_ylabel("row (pixels)", fontsize=7)
    axes[0, 0].legend(fontsize=6, loc="lower left")
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=axes[0].tolist(), fraction=0.04)
        bar.set_label(f"worst FNAF loss (hit above gamma = {gamma:g})", fontsize=7)
        bar.ax.axhline(gamma, color="white", lw=1.0)
        bar.ax.tick_params(labelsize=6)
    save_figure(fig, path)
    plt.close(fig)
    return {"file": Path(path).name, "models": stats}


def mean_clean_image(records, data, limit: int = 64):
    """The mean ground truth of (up to ``limit``) attacked slices: the anatomy underlay."""
    from fnaf_jax.data.fastmri import SliceDataset

    dataset = SliceDataset(data, transform="raw")
    wanted = {(r["file"], int(r["slice"])) for r in _attack_records(records)}
    images = []
    for index in range(len(dataset)):
        volume, s = dataset.locate(index)
        if (os.path.basename(volume.fname), int(s)) in wanted:
            images.append(np.asarray(dataset[index]["target_raw"], np.float64))
            images[-1] /= images[-1].max() or 1.0
        if len(images) >= limit:
            break
    return np.mean(images, axis=0) if images else None


def _find_item(dataset, fname: str, slice_num: int):
    for index in range(len(dataset)):
        volume, s = dataset.locate(index)
        if os.path.basename(volume.fname) == fname and s == slice_num:
            return dataset[index]
    return None


@functools.partial(jax.jit, static_argnames="graphdef")
def _forward_model(graphdef, state, batch, candidates):
    from fnaf_jax.objective import forward

    return forward(nnx.merge(graphdef, state).reconstruct, batch, candidates)


def rerun(model, dataset, record: dict) -> dict:
    """Zero-filled input, target, output and region (z-scored, 2-D) of one record's feature,
    with the loss recomputed (alpha 0, beta 1, MSE)."""
    from fnaf_jax.attacks.runner import candidate_from_record, make_batch
    from fnaf_jax.errors import DataError
    from fnaf_jax.masks import MaskSpec
    from fnaf_jax.objective import fnaf_loss

    item = _find_item(dataset, record["file"], int(record["slice"]))
    if item is None:
        raise DataError(f"{record['file']} slice {record['slice']}: not in the data folder given to the report")
    spec = MaskSpec(int(record["acceleration"]), record.get("center_fraction"), record.get("mask_type", "random"))
    batch = make_batch([item], spec, np.shape(item["target_raw"]))
    arrays = {k: batch[k] for k in ("target_raw", "mask", "metadata")}
    graphdef, state = nnx.split(model)
    out = _forward_model(graphdef, state, arrays, candidate_from_record(record))
    loss = fnaf_loss(out["output"], out["target"], out["region"])
    images = {k: np.asarray(out[k][0, 0]) for k in ("input", "output", "target", "region")}
    return {**images, "loss": float(loss[0, 0]), "ip": float(out["ip"][0, 0])}


def attack_examples(records, checkpoint, data, path, model_name: str | None = None, zoom: int = 48) -> dict | None:
    """Figure 1: the worst successful and the mildest failed attack of one model, re-run."""
    from fnaf_jax.attacks.runner import model_name_for
    from fnaf_jax.data.fastmri import SliceDataset
    from fnaf_jax.models.store import load_model

    name = model_name or model_name_for(checkpoint)
    recs = [r for r in _attack_records(records) if r["accepted"] and "feature" in r]
    mine = [r for r in recs if r.get("model") == name] or recs
    hits = [r for r in mine if r["hit"]]
    misses = [r for r in mine if not r["hit"]]
    chosen = []
    if hits:
        chosen.append(("successful", max(hits, key=lambda r: r["worst_loss"])))
    if misses:
        chosen.append(("failed", min(misses, key=lambda r: r["worst_loss"])))
    if not chosen:
        return None
    model, _ = load_model(checkpoint)
    model.eval()
    dataset = SliceDataset(data, transform="raw")
    plt = _plt()
    fig, axes = plt.subplots(len(chosen), 4, figsize=(8, 2.5 * len(chosen)), squeeze=False,
                             layout="constrained")
    captions = {}
    for row, (label, rec) in zip(axes, chosen, strict=True):
        res = rerun(model, dataset, rec)
        r0, c0 = rec["location"]
        h, w = res["target"].shape
        top, left = int(np.clip(r0 - zoom // 2, 0, h - zoom)), int(np.clip(c0 - zoom // 2, 0, w - zoom))
        window = (slice(top, top + zoom), slice(left, left + zoom))
        lo, hi = np.percentile(res["target"], [1, 99.5])
        panels = [("zero-filled input", res["input"], None),
                  ("ground truth + feature", res["target"][window], window),
                  ("reconstruction", res["output"][window], window),
                  ("|error|", np.abs(res["output"] - res["target"])[window], window)]
        for ax, (title, img, win) in zip(row, panels, strict=True):
            kw = {"cmap": "gray"} if title != "|error|" else {"cmap": "inferno"}
            if title != "|error|":
                kw.update(vmin=lo, vmax=hi)
            shown = ax.imshow(img, **kw)
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=5)
            if title == "|error|":
                bar.set_label("z-scored", fontsize=5)
            if win is not None:  # a 10-pixel scale bar in the zoomed panels
                ax.plot([zoom - 14, zoom - 4], [zoom - 4, zoom - 4], color="yellow", lw=1.5)
                ax.text(zoom - 9, zoom - 6, "10 px", color="yellow", fontsize=5, ha="center")
            region = res["region"] if win is None else res["region"][win]
            ax.contour(region.astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
            if win is None:
                ax.add_patch(plt.Rectangle((left, top), zoom, zoom, fill=False, ec="yellow", lw=0.8))
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
        caption = (f"{rec['file']} slice {rec['slice']}, {rec['method'].upper()} {rec['acceleration']}x: "
                   f"loss {res['loss']:.2e} ({'hit' if rec['hit'] else 'no hit'}), IP {res['ip']:.1e}")
        row[0].set_title("")  # the left-aligned caption below replaces the panel title
        row[0].set_title(f"{label} attack\n{caption.replace(': ', chr(10))}\n\nzero-filled input",
                         fontsize=7, loc="left")
        captions[label] = {"caption": caption, "recorded_loss": rec["worst_loss"], "rerun_loss": res["loss"]}
    save_figure(fig, path)
    plt.close(fig)
    return {"file": Path(path).name, "model": name, "examples": captions,
            "hit_caption": captions.get("successful", {}).get("caption", "none"),
            "miss_caption": captions.get("failed", {}).get("caption", "none")}
