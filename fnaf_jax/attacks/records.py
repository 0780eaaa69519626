"""The attack results file: its record schema, reading, appending and resume checks.

One JSON line per attacked slice (``attack_record``): ``file``, ``slice``, ``method``
("rs" | "fd" | "pgd"), ``acceleration``, ``center_fraction``, ``mask_type``, ``mask_seed`` (the
file name that seeds the column mask, fastMRI's validation convention), ``worst_loss``,
``hit``, ``ip``, ``accepted``, ``num_accepted``/``num_scored`` (candidates with IP >=
threshold / scored), ``passes`` {``forward``, ``backward``} (model passes
spent on the slice beside the no-feature one), ``location`` [row, col], ``feature`` {``pixels`` [[row, col], ...],
``values``}, the controls of the chosen feature (``nofeature_loss``, ``eraser_loss``,
``lost_fraction``), ``scored`` (per-candidate lists ``loss``, ``ip``, ``nofeature``,
``eraser``, ``lost`` in scoring order, from which the tables derive the control and
random-feature rows), ``model``, ``role``, ``checkpoint``, ``seed``, ``gamma``,
``ip_threshold``, ``settings`` (the run identity, ``run_settings``) and, for transfer
runs, ``transfer_from``, ``source_model`` and ``source_role``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnaf_jax.attacks.config import AttackConfig, AttackResult, passes
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.features import Candidates
from fnaf_jax.masks import MaskSpec


def attack_record(result: AttackResult, i: int, batch: dict, *, method: str, spec: MaskSpec,
                  cfg: AttackConfig, extra: dict) -> dict:
    """The JSON record of sample ``i`` of an attacked batch (see the module docstring)."""
    cand = jax.tree.map(lambda a: np.asarray(a[i, 0]), result.candidate)
    pixels = cand.offsets + cand.location
    chosen = int(result.index[i])
    return {
        "file": batch["fname"][i],
        "slice": batch["slice_num"][i],
        "method": method,
        "acceleration": spec.acceleration,
        "center_fraction": spec.fraction(),
        "mask_type": spec.mask_type,
        "mask_seed": batch["fname"][i],
        "worst_loss": float(result.worst_loss[i]),
        "hit": bool(result.hit[i]),
        "ip": float(result.ip[i]),
        "accepted": bool(result.accepted[i]),
        "num_accepted": int(result.num_accepted[i]),
        "num_scored": int(result.losses.shape[1]),
        "passes": passes(method, cfg),
        "location": [int(v) for v in cand.location],
        "feature": {"pixels": pixels.astype(int).tolist(), "values": [float(v) for v in cand.values]},
        "nofeature_loss": _num(result.nofeature[i, chosen]),
        "eraser_loss": _num(result.eraser[i, chosen]),
        "lost_fraction": _num(result.lost[i, chosen]),
        "scored": {name: [_num(v) for v in np.asarray(getattr(result, field)[i])]
                   for name, field in SCORED_FIELDS},
        "gamma": cfg.gamma,
        "ip_threshold": cfg.ip_threshold,
        "box_size": cfg.features.box_size,
        **extra,
    }


def kspace_hit(method: str, value, gamma: float, shown_threshold: float) -> bool:
    """A k-space attack's hit: shown fraction >= threshold for hallucinations, the feature's
    Eq. 5 loss > gamma otherwise (``value`` the one that applies; None: no hit)."""
    if value is None:
        return False
    return value >= shown_threshold if method == "hallucinate" else value > gamma


def kspace_record(result, i: int, batch: dict, *, method: str, spec: MaskSpec, cfg: AttackConfig,
                  extra: dict) -> dict:
    """The JSON record of slice ``i`` of a k-space attack (``attacks.kspace``): the common
    keys, then per-eps lists ``eps``, ``objective``, ``nmse``, ``loss``, ``lost`` or ``shown``,
    ``ratio`` (||e|| / ||y_k|| reached), ``hit`` (Eq. 5 loss > gamma for the feature target,
    shown >= threshold for hallucinations, null for the image target) and the eps = 0 values
    in ``clean`` {objective, nmse, loss, lost or shown}."""
    cand = jax.tree.map(lambda a: np.asarray(a[i, 0]), result.candidate)
    halluc = method == "hallucinate"
    other = "shown" if halluc else "lost"
    per = {name: [_num(v) for v in np.asarray(getattr(result, name)[i])]
           for name in ("objective", "nmse", "loss", other, "ratio")}
    target = "feature" if halluc else cfg.kspace_target
    hit = (None if target == "image" else
           [kspace_hit(method, v, cfg.gamma, cfg.shown_threshold) for v in per["shown" if halluc else "loss"]])
    clean = dict(zip(("objective", "nmse", "loss", other), (_num(v) for v in np.asarray(result.clean[i])), strict=True))
    return {
        "file": batch["fname"][i],
        "slice": batch["slice_num"][i],
        "method": method,
        "target": target,
        "acceleration": spec.acceleration,
        "center_fraction": spec.fraction(),
        "mask_type": spec.mask_type,
        "mask_seed": batch["fname"][i],
        "eps": [float(v) for v in cfg.eps],
        **per,
        "hit": hit,
        "clean": clean,
        "location": [int(v) for v in cand.location],
        "feature": {"pixels": (cand.offsets + cand.location).astype(int).tolist(),
                    "values": [float(v) for v in cand.values]},
        "passes": passes(method, cfg),
        "gamma": cfg.gamma,
        "shown_threshold": cfg.shown_threshold,
        **extra,
    }


#: per-candidate lists in a record's ``scored``, in scoring order (RS: draw order)
SCORED_FIELDS = (("loss", "losses"), ("ip", "ips"), ("nofeature", "nofeature"),
                 ("eraser", "eraser"), ("lost", "lost"))


def _num(value) -> float | None:
    """A float for JSON; NaN (a lost fraction with nothing to lose) becomes null."""
    value = float(value)
    return None if np.isnan(value) else value


def candidate_from_record(record: dict) -> Candidates:
    """A (1, 1, P, ...) candidate rebuilt from a record's ``feature`` and ``location``."""
    try:
        pixels = np.asarray(record["feature"]["pixels"], np.int32)
        values = np.asarray(record["feature"]["values"], np.float32)
        location = np.asarray(record["location"], np.int32)
    except (KeyError, TypeError) as exc:
        raise DataError(f"attack record of {record.get('file')} slice {record.get('slice')}: "
                        f"no usable feature ({exc})") from None
    if pixels.ndim != 2 or pixels.shape[1] != 2 or values.shape != (len(pixels),) or location.shape != (2,):
        raise DataError(f"attack record of {record.get('file')} slice {record.get('slice')}: malformed feature")
    return Candidates(jnp.asarray(pixels - location)[None, None], jnp.asarray(location)[None, None],
                      jnp.asarray(values)[None, None])


def read_records(path) -> list[dict]:
    """Records of a results file, checked; a torn last line (a killed run) is ignored.

    Every line must be a JSON object with ``file`` and ``slice`` (an ``fnaf attack``
    record); a torn last line is only tolerated after at least one valid record, so a
    file that never held records (a text file, a training ``metrics.jsonl``) is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such results file")
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not an fnaf attack results file (not text)") from None
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) and records:
                break  # interrupted while writing its last line
            raise DataError(f"{path}:{n}: not an fnaf attack results file (not a JSON line)") from None
        if not isinstance(record, dict) or "file" not in record or "slice" not in record:
            raise DataError(f"{path}:{n}: not an fnaf attack results file (the line has no 'file' and 'slice')")
        records.append(record)
    return records


def cut_torn_line(path: Path) -> None:
    """Drop a torn final line left by a killed run (after ``read_records`` accepted the rest)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def run_settings(method: str, spec: MaskSpec, cfg: AttackConfig, *, model: str, checkpoint: str,
                 seed: int, transfer_from=None) -> dict:
    """Everything that defines a results file's numbers (its run identity)."""
    f, o = cfg.features, cfg.objective
    def where(path):  # the same file however it was spelled on the command line
        return str(Path(path).resolve()) if path else None

    return {"method": method, "model": model, "checkpoint": where(checkpoint) or "",
            "acceleration": spec.acceleration,
            "center_fraction": spec.fraction(), "mask_type": spec.mask_type, "k": cfg.k,
            "fd_iterations": cfg.fd_iterations, "fd_step": cfg.fd_step, "fd_lr": cfg.fd_lr,
            **({"kspace": {"eps": list(cfg.eps), "steps": cfg.kspace_steps, "step": cfg.kspace_step,
                           "target": cfg.kspace_target, "shown_threshold": cfg.shown_threshold}}
               if method in ("kspace-pgd", "hallucinate") else {}),
            **({"pgd": {"starts": cfg.pgd_starts, "steps": cfg.pgd_steps, "sigma": cfg.pgd_sigma,
                        "step": cfg.pgd_step, "value_step": cfg.pgd_value_step}} if method == "pgd" else {}),
            "features": {"num_pixels": f.num_pixels, "shape": f.shape, "box_size": f.box_size,
                         "intensity": f.intensity, "constant_value": f.constant_value},
            "reduction": o.reduction, "radius": o.radius, "seed": seed, "gamma": cfg.gamma,
            "ip_threshold": cfg.ip_threshold, "transfer_from": where(transfer_from)}


def check_same_run(out_path: Path, existing: list[dict], settings: dict) -> None:
    """Refuse to append to a file made with other settings, naming the first difference."""
    if not existing:
        return
    theirs = existing[0].get("settings")
    if theirs is None:  # a file from before run identities were recorded: the old check
        theirs = {k: existing[0].get(k) for k in ("method", "acceleration", "model")}
    for key, value in settings.items():
        if key in theirs and theirs[key] != value:
            raise ConfigError(f"{out_path} holds results of another run: {key} is {theirs[key]!r} there, "
                              f"{value!r} here; resume only the same run, or choose another --out")


def open_for_append(path: Path):
    """Append handle; a torn final line left by a killed run is cut off first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        cut_torn_line(path)
    return path.open("a")
