"""``fnaf profile``: where, at what size, contrast and acceleration a model loses features.

Four sweeps, each holding the others at the base setting (``acceleration``, the paper's
10-pixel features with intensities drawn from the slice's range, anywhere in the box):

- ``size``: P pixels for P in ``sizes`` (the box grows to ``2P - 1`` where P needs it);
- ``contrast``: every pixel of the feature at ``c * (max - min)`` of its slice;
- ``acceleration``: fastMRI random masks at each acceleration, centre fraction
  ``0.32 / acceleration`` (fastMRI's 4x 0.08 and 8x 0.04);
- ``location``: the feature anchored at the centre of every cell of a ``grid x grid``
  partition of the box (a heatmap over the anatomy).

At each point ``k`` features per slice are scored (Eq. 5, IP and the controls, the
features of a slice drawn from its own key, so every point sees the same shapes and
anchors where the sweep allows): the *hit rate* is hits / accepted features (IP >=
threshold, loss > gamma) and the *feature-lost fraction* its mean over accepted
features. Features of one slice are correlated, so every interval is the wider of
Wilson's and a bootstrap over volumes. The candidates of a whole sweep (every contrast,
every cell) go through the scorer together, so each compiled call scores many.

Resumable: ``OUT/points.jsonl`` gets one line per finished sweep; a re-run skips them and
refuses other settings. Outputs: ``profile.json``, ``profile.csv`` and one PNG per sweep.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax import features as F
from fnaf_jax import stats
from fnaf_jax.attacks.config import DEFAULT_ATTACK, AttackConfig
from fnaf_jax.attacks.random_search import draw
from fnaf_jax.attacks.runner import batch_keys, make_batch
from fnaf_jax.errors import ConfigError
from fnaf_jax.fileio import atomic_path, exclusive_lock, write_text
from fnaf_jax.masks import MaskSpec
from fnaf_jax.objective import make_scorer
from fnaf_jax.tabulation import mean_ci

SWEEPS = ("size", "contrast", "acceleration", "location")


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
    """One ``fnaf profile`` run (module docstring)."""

    data: str  # folder (or file) of fastMRI .h5 volumes
    out: str  # profile folder
    checkpoint: str | None = None  # model checkpoint folder ...
    baseline: str | None = None  # ... or a network-free recon_fn
    acceleration: int = 8  # of the size, contrast and location sweeps
    sizes: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 50, 100)
    contrasts: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    accelerations: tuple[int, ...] = (2, 4, 6, 8, 10, 12)
    grid: int = 12  # location heatmap: cells per side of the box
    k: int = 4  # features per slice at each point (location: per cell, 1)
    sweeps: tuple[str, ...] = SWEEPS
    limit: int | None = 16  # slices, spread evenly over the folder (None: all)
    batch_size: int = 4
    seed: int = 0
    attack: AttackConfig = DEFAULT_ATTACK

    def __post_init__(self):
        if (self.checkpoint is None) == (self.baseline is None):
            raise ConfigError("a profile needs exactly one of a checkpoint and a baseline")
        unknown = sorted(set(self.sweeps) - set(SWEEPS))
        if unknown:
            raise ConfigError(f"unknown sweep(s) {unknown}; expected some of {SWEEPS}")
        if min(self.sizes, default=1) < 1 or min(self.contrasts, default=1) <= 0:
            raise ConfigError(f"sizes must be >= 1 and contrasts > 0, got {self.sizes}, {self.contrasts}")
        if min(self.accelerations, default=2) < 1 or self.acceleration < 1:
            raise ConfigError(f"accelerations must be >= 1, got {self.accelerations}, {self.acceleration}")
        if self.grid < 1 or self.k < 1 or self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise ConfigError("grid, k, batch size and limit must be >= 1")


def center_fraction_for(acceleration: int) -> float:
    """fastMRI's pairing extended: 0.32 / acceleration (4x keeps 8%, 8x 4%)."""
    return 0.32 / acceleration


def _spec(acceleration: int) -> MaskSpec:
    return MaskSpec(int(acceleration), center_fraction_for(int(acceleration)), "random")


def _settings(cfg: ProfileConfig, model_name: str) -> dict:
    a = cfg.attack
    return {"model": model_name, "acceleration": cfg.acceleration, "k": cfg.k, "limit": cfg.limit,
            "seed": cfg.seed, "gamma": a.gamma, "ip_threshold": a.ip_threshold, "radius": a.objective.radius,
            "reduction": a.objective.reduction, "box_size": a.features.box_size,
            "num_pixels": a.features.num_pixels}


def summarize_point(loss, ip, lost, files, cfg: AttackConfig) -> dict:
    """Hit rate and feature-lost fraction of the features scored at one point."""
    loss, ip, lost = (np.asarray(a, np.float64).ravel() for a in (loss, ip, lost))
    files = np.asarray(files).ravel()
    ok = ip >= cfg.ip_threshold
    hit = ok & (loss > cfg.gamma)
    n, k = int(ok.sum()), int(hit.sum())
    w_lo, w_hi = stats.wilson(k, n)
    indicator = mean_ci(np.where(ok, hit.astype(float), np.nan), files)
    lo = min(100 * w_lo, 100 * indicator["lo"]) if n else math.nan
    hi = max(100 * w_hi, 100 * indicator["hi"]) if n else math.nan
    return _bounded({"features": int(ok.size), "accepted": n, "hits": k,
                     "hit_rate": {"k": k, "n": n, "pct": 100.0 * k / n if n else math.nan, "lo": lo, "hi": hi},
                     "lost": mean_ci(np.where(ok, lost, np.nan), files),
                     "loss": mean_ci(np.where(ok, loss, np.nan), files)})


def _bounded(point: dict) -> dict:
    """A rate's interval kept inside [0, 100] (the t interval over volume means is not)."""
    rate = point["hit_rate"]
    if rate["n"]:
        rate["lo"], rate["hi"] = max(0.0, rate["lo"]), min(100.0, rate["hi"])
    return point


class _Scored:
    """Per slice and feature: loss, IP, lost fraction and the file, over all batches."""

    def __init__(self):
        self.loss, self.ip, self.lost, self.files = [], [], [], []

    def add(self, scores, fnames, real: int):
        for name in ("loss", "ip", "lost"):
            getattr(self, name).append(np.asarray(getattr(scores, name))[:real])
        k = np.asarray(scores.loss).shape[1]
        self.files.append(np.repeat(np.asarray(fnames[:real])[:, None], k, axis=1))

    def columns(self, sl=slice(None)):
        return [np.concatenate(a)[:, sl] for a in (self.loss, self.ip, self.lost, self.files)]


def _batches(items, size):
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        yield chunk + [chunk[-1]] * (size - len(chunk)), len(chunk)


def _run_sweep(name, scorer, items, cfg: ProfileConfig, shape, bar) -> list[dict]:
    """The points of one sweep: ``[{"sweep", "value", ...summary}]``."""
    a = cfg.attack
    base_spec = _spec(cfg.acceleration)
    points = []

    def score_all(spec, make):  # make(batch, keys) -> candidates (B, K', ...)
        scored = _Scored()
        for chunk, real in _batches(items, cfg.batch_size):
            batch = make_batch(chunk, spec, shape)
            cands = make(batch, batch_keys(cfg.seed, batch))
            scored.add(scorer(batch, cands), batch["fname"], real)
            bar.update(real)
        return scored

    def base_draw(batch, keys, features=a.features, k=cfg.k):
        return draw(keys, jnp.asarray(batch["target_raw"], jnp.float32), k, features)

    if name == "size":
        for p in cfg.sizes:
            feats = dataclasses.replace(a.features, num_pixels=int(p), box_size=max(a.features.box_size, 2 * p - 1))
            s = score_all(base_spec, lambda b, k_, f=feats: base_draw(b, k_, f))
            points.append({"value": int(p), **summarize_point(*s.columns(), a)})
    elif name == "contrast":
        cs = jnp.asarray(cfg.contrasts, jnp.float32)

        def make(batch, keys):
            base = base_draw(batch, keys)
            lo, hi = F.intensity_range(jnp.asarray(batch["target_raw"], jnp.float32))
            values = cs[None, :, None, None] * (hi - lo)[:, None, None, None]  # (B, C, 1, 1)
            values = jnp.broadcast_to(values, (values.shape[0], cs.shape[0], cfg.k, a.features.num_pixels))
            c = cs.shape[0]
            # contrast-major: candidates j*K .. (j+1)*K - 1 are the K features at contrast j
            return F.Candidates(jnp.tile(base.offsets, (1, c, 1, 1)), jnp.tile(base.location, (1, c, 1)),
                                values.reshape(values.shape[0], c * cfg.k, -1))

        s = score_all(base_spec, make)
        for j, c in enumerate(cfg.contrasts):
            cols = s.columns(slice(j * cfg.k, (j + 1) * cfg.k))
            points.append({"value": float(c), **summarize_point(*cols, a)})
    elif name == "acceleration":
        for acc in cfg.accelerations:
            s = score_all(_spec(acc), base_draw)
            points.append({"value": int(acc), "center_fraction": center_fraction_for(acc),
                           **summarize_point(*s.columns(), a)})
    else:
        centres = cell_centres(cfg.grid, a.features)  # (G*G, 2)

        def make(batch, keys):
            base = base_draw(batch, keys, k=1)
            b, g = base.offsets.shape[0], centres.shape[0]
            offsets = jnp.repeat(base.offsets, g, axis=1)
            loc = F.clip_location(jnp.broadcast_to(centres, (b, g, 2)), offsets, a.features)
            return F.Candidates(offsets, loc.astype(jnp.int32), jnp.repeat(base.values, g, axis=1))

        s = score_all(base_spec, make)
        for j, (r, c) in enumerate(np.asarray(centres)):
            cols = s.columns(slice(j, j + 1))
            points.append({"value": [int(r), int(c)], "cell": [j // cfg.grid, j % cfg.grid],
                           **summarize_point(*cols, a)})
    return [{"sweep": name, **p} for p in points]


def cell_centres(grid: int, features: F.FeatureConfig) -> jax.Array:
    """(grid * grid, 2) int32 centres of the cells of the box, row-major."""
    (r0, c0), (r1, _) = features.box()
    side = r1 - r0 + 1
    centre = (np.arange(grid) + 0.5) * side / grid
    rr, cc = np.meshgrid(r0 + centre, c0 + centre, indexing="ij")
    return jnp.asarray(np.stack([rr.ravel(), cc.ravel()], -1).astype(np.int32))


def sweep_work(cfg: ProfileConfig, name: str, slices: int) -> int:
    """Slices the progress bar counts for a sweep (one pass over them per call)."""
    return slices * {"size": len(cfg.sizes), "contrast": 1, "acceleration": len(cfg.accelerations),
                     "location": 1}[name]


def run_profile(model_or_fn, items: list[dict], cfg: ProfileConfig, model_name: str,
                progress: bool = True) -> dict:
    """Profile a model (an NNX model or a recon_fn) on ``items`` (dicts with ``target_raw``,
    ``fname``, ``slice_num``, optional ``metadata``); writes and returns ``profile.json``."""
    from tqdm import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(cfg, model_name)
    shape = tuple(np.asarray(items[0]["target_raw"]).shape)
    if shape != tuple(cfg.attack.features.image_shape):
        raise ConfigError(f"the slices are {shape}; the features expect {cfg.attack.features.image_shape}")
    with exclusive_lock(out / "points.jsonl", "profile"):
        done = _read_points(out / "points.jsonl", settings)
        todo = [s for s in cfg.sweeps if s not in done]
        scorer = make_scorer(model_or_fn, cfg.attack.objective)
        bar = tqdm(total=sum(sweep_work(cfg, s, len(items)) for s in todo), unit="slice", desc="profile",
                   disable=not progress)
        try:
            for name in todo:
                points = _run_sweep(name, scorer, items, cfg, shape, bar)
                with open(out / "points.jsonl", "a") as fh:
                    fh.write(json.dumps({"settings": settings, "sweep": name, "points": points}) + "\n")
                done[name] = points
        finally:
            bar.close()
    result = {"settings": settings, "sweeps": {s: done[s] for s in cfg.sweeps if s in done},
              "read_off": read_off({s: done[s] for s in done}, cfg.acceleration)}
    write_text(out / "profile.json", json.dumps(result, indent=1, allow_nan=True))
    _write_csv(out / "profile.csv", [p for s in result["sweeps"].values() for p in s])
    from fnaf_jax.figures import profile_figures

    result["figures"] = profile_figures(result["sweeps"], out, cfg.grid)
    return result


def _read_points(path: Path, settings: dict) -> dict:
    """Finished sweeps of an earlier run with the same settings; ConfigError otherwise."""
    done = {}
    if not path.is_file():
        return done
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line: that sweep runs again
        theirs = entry.get("settings", {})
        for key, value in settings.items():
            if theirs.get(key) != value:
                raise ConfigError(f"{path}:{n} was made with {key} = {theirs.get(key)!r}, this run has "
                                  f"{value!r}; profile into another --out")
        done[entry["sweep"]] = [_bounded(p) for p in entry["points"]]
    return done


def read_off(sweeps: dict, acceleration: int) -> list[str]:
    """Sentences a researcher reads off: below which size and contrast the model loses
    more than half of a feature (the lost fraction's interval above 0.5), and the
    accelerations where it does."""
    lines = []
    for name, unit in (("size", "pixels"), ("contrast", "of the slice's range")):
        points = sweeps.get(name)
        if not points:
            continue
        losing = [p["value"] for p in points if p["lost"]["n"] and p["lost"]["lo"] > 0.5]
        keeping = [p["value"] for p in points if p["lost"]["n"] and p["lost"]["hi"] < 0.5]
        if losing:
            lines.append(f"At {acceleration}x the model loses more than half of features of {name} "
                         f"<= {max(losing):g} {unit} (lost-fraction interval above 0.5)"
                         + (f"; it keeps more than half from {min(keeping):g} {unit}." if keeping else "."))
        elif keeping:
            lines.append(f"At {acceleration}x the model keeps more than half of features from {name} "
                         f"{min(keeping):g} {unit} (interval below 0.5); no {name} loses more than half.")
        else:
            lines.append(f"At {acceleration}x no {name} settles whether the model loses more or less than "
                         f"half of a feature (every interval spans 0.5): inconclusive.")
    points = sweeps.get("acceleration")
    if points:
        losing = [p["value"] for p in points if p["lost"]["n"] and p["lost"]["lo"] > 0.5]
        lines.append("Accelerations where the model loses more than half of a 10-pixel feature: "
                     + (", ".join(f"{v}x" for v in losing) if losing else "none (no interval lies above 0.5)") + ".")
    return lines


def _write_csv(path: Path, points: list[dict]) -> None:
    fields = ["sweep", "value", "features", "accepted", "hits", "hit_rate_pct", "hit_rate_lo", "hit_rate_hi",
              "lost_mean", "lost_lo", "lost_hi", "loss_mean", "loss_lo", "loss_hi", "volumes"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(fields)
    for p in points:
        value = p["value"] if not isinstance(p["value"], list) else f"{p['value'][0]};{p['value'][1]}"
        h, lost, loss = p["hit_rate"], p["lost"], p["loss"]
        w.writerow([p["sweep"], value, p["features"], p["accepted"], p["hits"], h["pct"], h["lo"], h["hi"],
                    lost["mean"], lost["lo"], lost["hi"], loss["mean"], loss["lo"], loss["hi"], lost["volumes"]])
    with atomic_path(path, suffix=".csv") as tmp:
        Path(tmp).write_text(buf.getvalue())


def profile_folder(cfg: ProfileConfig, progress: bool = True) -> dict:
    """``fnaf profile``: load the model (or baseline) and the slices, then ``run_profile``."""
    from fnaf_jax.attacks.runner import default_model_name, model_name_for
    from fnaf_jax.data.fastmri import SliceDataset

    dataset = SliceDataset(cfg.data, transform="raw")
    n = len(dataset) if cfg.limit is None else min(cfg.limit, len(dataset))
    if n == 0:
        raise ConfigError(f"{cfg.data}: no slices to profile")
    if cfg.baseline is not None:
        from fnaf_jax.models.baselines import BASELINES

        if cfg.baseline not in BASELINES:
            raise ConfigError(f"unknown baseline {cfg.baseline!r}; known: {', '.join(BASELINES)}")
        model, name = BASELINES[cfg.baseline], cfg.baseline
    else:
        from fnaf_jax.models.store import load_model

        model, _ = load_model(cfg.checkpoint)
        model.eval()
        name = model_name_for(cfg.checkpoint)
    # spread over the folder (not the first volume's slices): slices of one volume are
    # correlated, so the intervals (bootstrap over volumes) need as many volumes as possible
    items = [dataset[int(i)] for i in np.unique(np.linspace(0, len(dataset) - 1, n).round())]
    return run_profile(model, items, cfg, name or default_model_name(model), progress=progress)
