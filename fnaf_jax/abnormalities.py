"""Real abnormalities (the paper's Table 4): how well each model keeps annotated lesions.

For every boxed annotation on a slice present in both the data folder (``reconstruction_esc``)
and a model's predictions folder (``reconstruction``, as written by ``fnaf reconstruct``),
we score the reconstruction inside the box only:

* region NMSE = ||gt_R - pred_R||^2 / ||gt_R||^2 over the box pixels R;
* region SSIM = the fastMRI SSIM map (7x7 uniform window, K1 0.01, K2 0.03, sample
  covariance, data_range = the ground-truth volume's max) averaged over the box pixels.
  The map is computed on the whole slice first, so the window sees the box's surroundings,
  as the slice-level SSIM does.

Scores are then averaged per label and per model.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fnaf_jax import metrics
from fnaf_jax.data.annotations import Annotation, box_mask, by_slice
from fnaf_jax.data.reconstructions import PREDICTION_KEY, read_volume
from fnaf_jax.errors import DataError
from fnaf_jax.fileio import atomic_path, write_text


@dataclass(frozen=True)
class RegionScore:
    model: str
    fname: str
    slice: int
    label: str
    n_pixels: int
    nmse: float
    ssim: float


def ssim_map(gt: np.ndarray, pred: np.ndarray, data_range: float) -> np.ndarray:
    """Full-size (H, W) SSIM map of two images: ``fnaf_jax.metrics.ssim_map`` (which keeps
    only windows inside the image) on copies mirrored by 3 pixels, so that boxes touching
    the border get values too; the mirroring is scikit-image's reflect padding."""
    pad = (metrics.WIN_SIZE - 1) // 2
    return metrics.ssim_map(np.pad(np.asarray(gt, np.float64), pad, mode="symmetric"),
                            np.pad(np.asarray(pred, np.float64), pad, mode="symmetric"), data_range)


def region_nmse(gt: np.ndarray, pred: np.ndarray, region: np.ndarray) -> float:
    """||gt - pred||^2 / ||gt||^2 over the pixels of ``region`` (NaN for an all-zero target)."""
    g, p = gt[region].astype(np.float64), pred[region].astype(np.float64)
    denom = float(np.sum(g * g))
    return float(np.sum((g - p) ** 2) / denom) if denom > 0 else float("nan")


def region_metrics(gt: np.ndarray, pred: np.ndarray, region: np.ndarray, data_range: float):
    """(nmse, ssim) of one slice inside the boolean ``region``."""
    if gt.shape != pred.shape or gt.shape != region.shape:
        raise DataError(f"shapes differ: target {gt.shape}, prediction {pred.shape}, region {region.shape}")
    if not region.any():
        raise DataError("empty region")
    return region_nmse(gt, pred, region), float(ssim_map(gt, pred, data_range)[region].mean())


def score_model(model: str, data_dir, predictions_dir, annotations: list[Annotation],
                target_key: str = "reconstruction_esc") -> list[RegionScore]:
    """Region scores of one model's predictions for every boxed annotation whose file and
    slice exist in both folders (others are skipped: annotation tables cover whole splits)."""
    data_dir, predictions_dir = Path(data_dir), Path(predictions_dir)
    if not predictions_dir.is_dir():
        raise DataError(f"{predictions_dir}: predictions folder not found")
    scores = []
    per_file: dict[str, list] = defaultdict(list)
    for (fname, slice_), anns in by_slice(annotations).items():
        per_file[fname].append((slice_, anns))
    for fname in sorted(per_file):
        target_path, pred_path = data_dir / fname, predictions_dir / fname
        if not (target_path.is_file() and pred_path.is_file()):
            continue
        gt_vol = read_volume(target_path, target_key, "target")[0]
        pred_vol = read_volume(pred_path, PREDICTION_KEY)[0]
        if gt_vol.shape != pred_vol.shape:
            raise DataError(f"{pred_path}: reconstruction shape {pred_vol.shape} != "
                            f"{target_key} {gt_vol.shape} of {target_path}")
        data_range = float(gt_vol.max())  # fastMRI: the target volume's max
        for slice_, anns in sorted(per_file[fname], key=lambda item: item[0]):
            if not 0 <= slice_ < gt_vol.shape[0]:
                continue
            gt, pred = gt_vol[slice_], pred_vol[slice_]
            smap = ssim_map(gt, pred, data_range)
            for ann in anns:
                region = box_mask(ann, gt.shape)
                scores.append(RegionScore(model, fname, slice_, ann.label, int(region.sum()),
                                          region_nmse(gt, pred, region), float(smap[region].mean())))
    return scores


def table4(scores: list[RegionScore]) -> list[dict]:
    """One row per (label, model): number of boxes and mean region NMSE / SSIM, plus an
    "all" row per model. Sorted by label, then model."""
    groups: dict[tuple[str, str], list[RegionScore]] = defaultdict(list)
    for s in scores:
        groups[(s.label, s.model)].append(s)
        groups[("all", s.model)].append(s)
    rows = []
    for (label, model), items in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        rows.append({
            "label": label, "model": model, "boxes": len(items),
            "nmse": float(np.nanmean([s.nmse for s in items])),
            "ssim": float(np.mean([s.ssim for s in items])),
        })
    return rows


def table4_markdown(rows: list[dict], models: list[str] | None = None) -> str:
    """Labels down, models across (in the order of ``models``, default sorted):
    `NMSE / SSIM` cells and the number of boxes."""
    models = models or sorted({r["model"] for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    cell = {(r["label"], r["model"]): r for r in rows}
    lines = ["| label | " + " | ".join(f"{m} NMSE / SSIM" for m in models) + " | boxes |",
             "|---|" + "---|" * len(models) + "---|"]
    for label in labels:
        cells, boxes = [], 0
        for m in models:
            r = cell.get((label, m))
            cells.append(f"{r['nmse']:.4f} / {r['ssim']:.4f}" if r else "-")
            boxes = max(boxes, r["boxes"] if r else 0)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {boxes} |")
    return "\n".join(lines) + "\n"


def write_table4(scores: list[RegionScore], out_dir, models: list[str] | None = None) -> dict:
    """Write per-box scores (CSV) and the per-label table (JSON, Markdown) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "table4_boxes.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(RegionScore.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(s) for s in scores)
    rows = table4(scores)
    write_text(out_dir / "table4.json", json.dumps(rows, indent=2))
    write_text(out_dir / "table4.md", table4_markdown(rows, models))
    return {"rows": rows, "boxes": len(scores)}
