"""``fnaf evaluate``'s engine: read target and prediction volumes, score them, tabulate.

Follows ``fastmri.evaluate`` (fastMRI 0.3.0): one record per volume; both volumes are
centre-cropped to ``(W, W)`` with ``W`` the target's last dimension (a no-op for the
320x320 single-coil targets); NMSE, PSNR and SSIM per volume; means over volumes.

Data range (``maxval``) of PSNR and SSIM:
- ``"volume"`` (default): the cropped target volume's max, as ``fastmri.evaluate`` does;
- ``"attrs"``: the target file's ``max`` attribute, as fastMRI's training-time
  validation does. For fastMRI single-coil files the two are the same number.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from fnaf_jax import metrics
from fnaf_jax.data.reconstructions import PREDICTION_KEY, read_volume
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.fileio import write_text

TARGET_KEYS = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}
MAXVAL_RULES = ("volume", "attrs")
TABLE_METRICS = (("nmse", "NMSE", 4), ("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4))


def _crop(volume: np.ndarray, size: int, path: Path, key: str) -> np.ndarray:
    h, w = volume.shape[-2:]
    if h < size or w < size:
        raise DataError(
            f"{path}: '{key}' of shape {volume.shape} is smaller than the "
            f"{size}x{size} evaluation crop"
        )
    top, left = (h - size) // 2, (w - size) // 2
    return volume[:, top : top + size, left : left + size]


def evaluate_volume(
    target_path: Path, prediction_path: Path, challenge="singlecoil", maxval="volume"
) -> dict:
    """Metrics of one volume: ``{fname, acquisition, acceleration, slices, maxval,
    mse, nmse, psnr, ssim}``."""
    target_key = TARGET_KEYS[challenge]
    if not prediction_path.is_file():
        raise DataError(
            f"{prediction_path}: prediction file is missing "
            f"(target {target_path.name} has no reconstruction)"
        )
    target, target_attrs = read_volume(target_path, target_key, "target")
    pred, pred_attrs = read_volume(prediction_path, PREDICTION_KEY, "prediction")
    if pred.shape[0] != target.shape[0]:
        raise DataError(
            f"{prediction_path}: {pred.shape[0]} slices in '{PREDICTION_KEY}' "
            f"but the target has {target.shape[0]}"
        )
    size = target.shape[-1]
    target = _crop(target, size, target_path, target_key)
    pred = _crop(pred, size, prediction_path, PREDICTION_KEY)

    if maxval == "attrs":
        data_range = target_attrs.get("max")
        if data_range is None:
            raise DataError(
                f"{target_path}: target file has no 'max' attribute "
                "(needed by --maxval attrs)"
            )
        data_range = float(data_range)
    else:
        data_range = float(target.max())
    values = metrics.volume_metrics(target, pred, maxval=data_range)

    acceleration = pred_attrs.get("acceleration", target_attrs.get("acceleration"))
    return {
        "fname": target_path.name,
        "acquisition": target_attrs.get("acquisition"),
        "acceleration": None if acceleration is None else float(acceleration),
        "slices": int(target.shape[0]),
        "maxval": data_range,
        **values,
    }


def evaluate_dirs(
    target_dir,
    prediction_dir,
    challenge="singlecoil",
    maxval="volume",
    acquisition=None,
    acceleration=None,
) -> list[dict]:
    """Records for every ``*.h5`` target in ``target_dir`` (sorted by name), after the
    optional acquisition / acceleration filters."""
    if challenge not in TARGET_KEYS:
        raise ConfigError(
            f"unknown challenge {challenge!r}; known: {', '.join(TARGET_KEYS)}"
        )
    if maxval not in MAXVAL_RULES:
        raise ConfigError(
            f"unknown maxval rule {maxval!r}; known: {', '.join(MAXVAL_RULES)}"
        )
    target_dir, prediction_dir = Path(target_dir), Path(prediction_dir)
    for folder, role in ((target_dir, "target"), (prediction_dir, "predictions")):
        if not folder.is_dir():
            why = "is a file, not a folder" if folder.exists() else "does not exist"
            raise DataError(f"{folder}: {role} folder {why}")
    targets = sorted(target_dir.glob("*.h5"))
    if not targets:
        raise DataError(f"{target_dir}: no .h5 target files")
    records = []
    for target_path in targets:
        record = evaluate_volume(
            target_path, prediction_dir / target_path.name, challenge, maxval
        )
        if acquisition is not None and record["acquisition"] != acquisition:
            continue
        if acceleration is not None and record["acceleration"] != float(acceleration):
            continue
        records.append(record)
    if not records:
        raise DataError(
            f"{target_dir}: no volume matches the acquisition/acceleration filter"
        )
    return records


def _table_rows(groups: dict) -> list[tuple[str, str, dict]]:
    """(acceleration, acquisition, stats) rows: each acceleration's total, then its
    acquisitions, then the overall total."""
    rows = []
    for name, stats in groups.items():
        if name == "all":
            continue
        acc, _, acq = name.partition("/")
        rows.append((acc, acq or "all", stats))
    rows.append(("all", "all", groups["all"]))
    return rows


def _fmt(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(groups: dict) -> str:
    """Table 1 layout: one row per acceleration x acquisition, mean ± std over volumes."""
    header = ["Acceleration", "Acquisition", "Volumes"] + [
        t for _, t, _ in TABLE_METRICS
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for acc, acq, stats in _table_rows(groups):
        n = stats[TABLE_METRICS[0][0]][2]
        cells = [acc, acq, str(n)]
        cells += [_fmt(*stats[key][:2], digits) for key, _, digits in TABLE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _finite_or_none(value):
    """JSON has no Infinity (PSNR of a perfect reconstruction): write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_reports(
    records: list[dict], groups: dict, out_dir, settings: dict
) -> list[Path]:
    """``metrics.json`` (settings, per-volume records, per-group mean/std/n) and
    ``metrics.md`` (the table) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": settings,
        "volumes": [{k: _finite_or_none(v) for k, v in r.items()} for r in records],
        "groups": {
            group: {
                m: {"mean": _finite_or_none(mean), "std": _finite_or_none(std), "n": n}
                for m, (mean, std, n) in stats.items()
            }
            for group, stats in groups.items()
        },
    }
    json_path = out_dir / "metrics.json"
    write_text(json_path, json.dumps(payload, indent=1, allow_nan=False) + "\n")
    md_path = out_dir / "metrics.md"
    write_text(
        md_path,
        "# Reconstruction metrics\n\n"
        f"Targets `{settings['target']}`, predictions `{settings['predictions']}`, "
        f"challenge {settings['challenge']}, data range = {settings['maxval']} max. "
        "Mean ± sample std over volumes (fastMRI metrics).\n\n" + markdown_table(groups)
    )
    return [json_path, md_path]


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """One ``fnaf evaluate`` run."""

    target: str  # folder of fastMRI volumes holding the targets
    predictions: str  # folder of prediction volumes with the same file names
    out: str | None = None  # write metrics.json and metrics.md here (None: print only)
    challenge: str = "singlecoil"  # target key: reconstruction_esc (or _rss for multicoil)
    maxval: str = "volume"  # data range: the target volume's max (fastMRI) or its 'max' attr
    acquisition: str | None = None  # only volumes of this acquisition
    acceleration: float | None = None  # only predictions with this 'acceleration' attribute


def evaluate(cfg: EvaluateConfig) -> tuple[list[dict], dict, list[Path]]:
    """``fnaf evaluate``: (per-volume records, per-group statistics, files written)."""
    records = evaluate_dirs(cfg.target, cfg.predictions, challenge=cfg.challenge, maxval=cfg.maxval,
                            acquisition=cfg.acquisition, acceleration=cfg.acceleration)
    groups = metrics.aggregate(records)
    paths = [] if cfg.out is None else write_reports(
        records, groups, cfg.out, {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"})
    return records, groups, paths
