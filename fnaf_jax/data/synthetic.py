"""Synthetic single-coil knee volumes written in exact fastMRI format.

Each volume is made from a magnitude phantom (``fnaf_jax.data.phantom``) times a smooth
phase and coil-like shading over the oversampled 640 x W field of view; ``kspace =
fft2c(image) + complex Gaussian noise`` with the columns outside the encoding limits
zeroed (as in real files), and ``reconstruction_esc = |center_crop_320(ifft2c(kspace))|``.
Every random draw comes from ``numpy.random.default_rng([seed, volume_index, stream])``,
so a volume depends only on the seed, its index and its size (slices, width), not on how
many volumes are written.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import jax
import numpy as np

from fnaf_jax import physics
from fnaf_jax.data import phantom
from fnaf_jax.errors import ConfigError, DataError
from fnaf_jax.fileio import atomic_path

HEIGHT = 640  # readout samples: 2x oversampled, as fastMRI knee data
RECON = 320  # reconSpace matrix
ACQUISITIONS = ("CORPD_FBK", "CORPDFS_FBK")
# systemModel strings as in fastMRI headers, with the field strength each reports.
SCANNERS = {"Skyra": 2.89362, "Prisma_fit": 2.89362, "Biograph_mMR": 2.89362, "Aera": 1.494}
FIRST_FILE_NUMBER = 1000001
ANNOTATIONS = "annotations.csv"
ANNOTATION_COLUMNS = ("file", "slice", "study_level", "x", "y", "width", "height", "label")
# Typical image-domain peak and noise std relative to it, per acquisition; each volume
# scales both by its own factor in VARIATION (scanners and patients differ).
PEAK = {"CORPD_FBK": 3.0e-4, "CORPDFS_FBK": 1.3e-4}
NOISE = {"CORPD_FBK": 0.012, "CORPDFS_FBK": 0.035}
VARIATION = (0.8, 1.25)

_STREAM_ANATOMY, _STREAM_NOISE, _STREAM_LESIONS, _STREAM_META = 0, 1, 2, 3


@dataclass
class SyntheticVolume:
    """One volume: fastMRI datasets and attributes, plus planted lesion boxes."""

    name: str
    kspace: np.ndarray  # (S, 640, W) complex64
    target: np.ndarray  # (S, 320, 320) float32
    header: bytes
    attrs: dict
    annotations: list = field(default_factory=list)  # fastMRI+ knee.csv rows (dicts)


def file_name(index: int) -> str:
    """fastMRI-style name of volume ``index`` (0-based): file1000001.h5, ..."""
    return f"file{FIRST_FILE_NUMBER + index}.h5"


def encoding_limits(width: int) -> tuple[int, int, int]:
    """``(minimum, maximum, center)`` of kspace_encoding_step_1, like real files.

    Real knee files acquire a few columns fewer than the matrix width and zero-pad the
    rest; for W = 368 this gives (0, 359, 181), as in the golden file.
    """
    n_acquired = width - 8
    return 0, n_acquired - 1, n_acquired // 2 + 1


def acquired_columns(width: int) -> slice:
    """Columns holding acquired data; fastMRI's SliceDataset padding_left/right."""
    _, maximum, center = encoding_limits(width)
    left = width // 2 - center
    return slice(left, left + maximum + 1)


def ismrmrd_header(width: int, n_slices: int, acquisition: str, system_model: str,
                   measurement_id: str) -> bytes:
    """A valid ISMRMRD XML header with the fields fastMRI tools read."""
    minimum, maximum, center = encoding_limits(width)
    field_t = SCANNERS[system_model]
    larmor = round(42.577478 * 1e6 * field_t)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">
  <studyInformation>
    <studyTime>00:00:00</studyTime>
  </studyInformation>
  <measurementInformation>
    <measurementID>{measurement_id}</measurementID>
    <patientPosition>HFS</patientPosition>
    <protocolName>{acquisition}</protocolName>
  </measurementInformation>
  <acquisitionSystemInformation>
    <systemVendor>SIEMENS</systemVendor>
    <systemModel>{system_model}</systemModel>
    <systemFieldStrength_T>{field_t}</systemFieldStrength_T>
    <receiverChannels>1</receiverChannels>
  </acquisitionSystemInformation>
  <experimentalConditions>
    <H1resonanceFrequency_Hz>{larmor}</H1resonanceFrequency_Hz>
  </experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize>
        <x>{HEIGHT}</x>
        <y>{width}</y>
        <z>1</z>
      </matrixSize>
      <fieldOfView_mm>
        <x>280</x>
        <y>{140 * width / RECON:.1f}</y>
        <z>4.5</z>
      </fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize>
        <x>{RECON}</x>
        <y>{RECON}</y>
        <z>1</z>
      </matrixSize>
      <fieldOfView_mm>
        <x>140</x>
        <y>140</y>
        <z>3</z>
      </fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1>
        <minimum>{minimum}</minimum>
        <maximum>{maximum}</maximum>
        <center>{center}</center>
      </kspace_encoding_step_1>
      <kspace_encoding_step_2>
        <minimum>0</minimum>
        <maximum>0</maximum>
        <center>0</center>
      </kspace_encoding_step_2>
      <slice>
        <minimum>0</minimum>
        <maximum>{n_slices - 1}</maximum>
        <center>{n_slices // 2}</center>
      </slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
""".encode()


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, stream])


def _smooth_phase(rng, n_slices, height, width):
    """Low-order polynomial phase (radians) and its per-slice drift: returns
    ``(base (H, W), offsets (S,), tilts (S,), yy (H, 1))``; slice ``s`` has phase
    ``base + offsets[s] + tilts[s] * yy``, so the phase changes slowly through the volume."""
    yy = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    c = [float(x) for x in rng.normal(0.0, [0.3, 0.8, 0.8, 0.4, 0.4, 0.3])]
    base = c[0] + c[1] * yy + c[2] * xx + c[3] * yy * yy + c[4] * xx * xx + c[5] * xx * yy
    offsets = np.cumsum(rng.normal(0.0, 0.15, n_slices)).astype(np.float32)
    tilts = np.cumsum(rng.normal(0.0, 0.05, n_slices)).astype(np.float32)
    return base.astype(np.float32), offsets, tilts, yy


#: receive coil: elements on a ring around the knee (FOV pixels), each with sensitivity
#: 1 / (1 + (d / COIL_REACH)^2)^2, combined as root-sum-of-squares on top of a flat floor.
#: Bright near the skin, darker in the middle, as in real knee-coil images; the floor and
#: reach set the z-scored dynamic range, calibrated so that random FNAF features pass
#: information preservation as often as on fastMRI knee data (docs/synthetic.md).
COIL_ELEMENTS, COIL_RING, COIL_REACH, COIL_FLOOR = 8, 140.0, 18.0, 0.45


def _coil_shading(rng, height, width):
    """Smooth receive sensitivity over the 640 x W field of view (see ``COIL_*``)."""
    yy = np.arange(height, dtype=np.float32)[:, None] - height / 2
    xx = np.arange(width, dtype=np.float32)[None, :] - width / 2
    start = rng.uniform(0.0, 2.0 * np.pi)
    power = np.zeros((height, width), np.float32)
    for i in range(COIL_ELEMENTS):
        angle = start + 2.0 * np.pi * i / COIL_ELEMENTS
        # an elliptic ring, longer along the leg (the readout direction)
        cy, cx = 1.3 * COIL_RING * np.sin(angle), COIL_RING * np.cos(angle)
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / COIL_REACH**2
        power += (1.0 / (1.0 + d2)) ** 4
    elements = np.sqrt(power)
    # The coil covers about the central half of the readout FOV: the signal falls to a
    # few percent at the FOV's ends.
    along = np.exp(-((yy / (0.375 * height)) ** 4))
    return ((COIL_FLOOR + elements / elements.max()) * along).astype(np.float32)


@jax.jit
def _fft2c(image):
    return physics.fft2c(image)


@jax.jit
def _esc_target(kspace):
    """``reconstruction_esc``: |center_crop_320(ifft2c(kspace))|."""
    return physics.complex_abs(physics.center_crop(physics.ifft2c(kspace), (RECON, RECON)))


def _annotation_row(name: str, lesion, top: int, left: int) -> dict:
    """fastMRI+ knee.csv row: box on the up/down-flipped 320x320 image."""
    row0, col0 = lesion.rows[0] - top, lesion.cols[0] - left
    height, width = lesion.rows[1] - lesion.rows[0], lesion.cols[1] - lesion.cols[0]
    return {"file": name.removesuffix(".h5"), "slice": lesion.slice, "study_level": "No",
            "x": col0, "y": RECON - row0 - height, "width": width, "height": height,
            "label": lesion.label}


def make_volume(index: int, n_slices: int = 4, width: int = 368, seed: int = 0,
                lesions: bool = False, acquisition: str | None = None) -> SyntheticVolume:
    """Generate volume ``index`` of the set with ``seed`` (in memory)."""
    check_size(n_slices, width)
    meta_rng = _rng(seed, index, _STREAM_META)
    acquisition = acquisition or ACQUISITIONS[index % 2]
    system_model = str(meta_rng.choice(list(SCANNERS)))
    peak_level = PEAK[acquisition] * meta_rng.uniform(*VARIATION)
    noise_level = NOISE[acquisition] * meta_rng.uniform(*VARIATION)
    patient_id = hashlib.sha256(f"fnaf-synth-{seed}-{index}".encode()).hexdigest()

    anatomy_rng = _rng(seed, index, _STREAM_ANATOMY)
    fat_suppressed = acquisition == "CORPDFS_FBK"
    # Lesions need the slices' geometry; it draws nothing from the generator, so the
    # anatomy is the same with and without lesions.
    anatomy = phantom.knee_volume(anatomy_rng, n_slices, HEIGHT, width, fat_suppressed,
                                  return_geometry=lesions)
    magnitude, geoms, shape = anatomy if lesions else (anatomy, None, None)
    shading = _coil_shading(anatomy_rng, HEIGHT, width)
    base_phase, offsets, tilts, yy = _smooth_phase(anatomy_rng, n_slices, HEIGHT, width)
    # The scale comes from the lesion-free volume, so planting lesions changes nothing
    # outside their boxes.
    peak = max(float((m * shading).max()) for m in magnitude)
    shading *= np.float32(peak_level / max(peak, 1e-30))
    annotations = []
    if lesions:
        top, left = (HEIGHT - RECON) // 2, (width - RECON) // 2
        planted = phantom.plant_lesions(_rng(seed, index, _STREAM_LESIONS), magnitude, geoms,
                                        shape, fat_suppressed, (top, left, RECON, RECON))
        annotations = [_annotation_row(file_name(index), les, top, left) for les in planted]

    # Physics one slice at a time: small arrays that stay in cache and heap.
    noise_rng = _rng(seed, index, _STREAM_NOISE)
    sigma = np.float32(noise_level * peak_level / np.sqrt(2.0))
    cols = acquired_columns(width)
    kspace = np.empty((n_slices, HEIGHT, width), np.complex64)
    target = np.empty((n_slices, RECON, RECON), np.float32)
    image = np.empty((HEIGHT, width), np.complex64)
    for s in range(n_slices):
        mag = magnitude[s] * shading
        phase = base_phase + (offsets[s] + tilts[s] * yy)
        image.real = mag * np.cos(phase)
        image.imag = mag * np.sin(phase)
        ks = kspace[s]
        ks[...] = _fft2c(image)
        noise = noise_rng.standard_normal((2, HEIGHT, width), dtype=np.float32)
        noise *= sigma
        ks.real += noise[0]
        ks.imag += noise[1]
        # Real files hold zeros in the columns outside the encoding limits.
        ks[:, : cols.start] = 0
        ks[:, cols.stop :] = 0
        target[s] = _esc_target(ks)

    attrs = {
        "acquisition": acquisition,
        "max": np.float64(target.max()),
        "norm": np.float64(np.linalg.norm(target.astype(np.float64))),
        "patient_id": patient_id,
    }
    header = ismrmrd_header(width, n_slices, acquisition, system_model, f"synthetic_{seed}_{index}")
    return SyntheticVolume(file_name(index), kspace, target, header, attrs, annotations)


def write_volume(path: Path, volume: SyntheticVolume) -> Path:
    """Write one volume as a fastMRI single-coil HDF5 file (uncompressed, like real ones),
    atomically: a reader never sees a half-written file."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("ismrmrd_header", data=np.bytes_(volume.header))
        f.create_dataset("kspace", data=volume.kspace)
        f.create_dataset("reconstruction_esc", data=volume.target)
        for key, value in volume.attrs.items():
            f.attrs[key] = value
    return path


#: bytes held per k-space sample while a volume is made (k-space, magnitude, phase,
#: shading, textures and distance fields, float32 and complex64)
_BYTES_PER_SAMPLE = 64


def check_size(n_slices: int, width: int) -> None:
    """Refuse sizes whose arrays would not fit in this machine's memory, naming them."""
    if n_slices < 1:
        raise ConfigError(f"synthetic data: n_slices must be >= 1, got {n_slices}")
    if width < RECON:
        raise ConfigError(f"synthetic data: width must be >= {RECON}, got {width}")
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 2**40
    need = n_slices * HEIGHT * width * _BYTES_PER_SAMPLE
    if need > memory:
        raise ConfigError(f"synthetic data: {n_slices} slices of width {width} need about "
                          f"{need / 2**30:.0f} GiB, more than this machine's {memory / 2**30:.0f} GiB; "
                          "choose a smaller --width or --slices")


def write_dataset(out_dir, n_volumes: int = 2, n_slices: int = 4, width: int = 368,
                  seed: int = 0, lesions: bool = False, progress: bool = False,
                  first_index: int = 0) -> list[Path]:
    """Write ``n_volumes`` synthetic fastMRI files into ``out_dir``; returns their paths.

    Volumes ``first_index, first_index + 1, ...`` are written, so splits made with
    different first indices have distinct file names (and file-name-seeded masks), as in
    fastMRI.
    """
    if n_volumes < 1:
        raise ConfigError(f"synthetic data: n_volumes must be >= 1, got {n_volumes}")
    if first_index < 0:
        raise ConfigError(f"synthetic data: first_index must be >= 0, got {first_index}")
    check_size(n_slices, width)  # before any file or progress bar
    out_dir = Path(out_dir)
    indices = range(first_index, first_index + n_volumes)
    _check_output_folder(out_dir, [file_name(i) for i in indices], lesions)
    out_dir.mkdir(parents=True, exist_ok=True)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="volume")
    paths, rows = [], []
    for i in indices:
        volume = make_volume(i, n_slices, width, seed, lesions)
        paths.append(write_volume(out_dir / volume.name, volume))
        rows.extend(volume.annotations)
    if lesions:
        write_annotations(out_dir / ANNOTATIONS, rows)
    return paths


def _check_output_folder(out_dir: Path, names: list[str], lesions: bool) -> None:
    """Refuse to mix a new set with files left by another one (a loader would read them
    all): other volumes, or a lesion table that would no longer match."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: output path exists and is not a folder")
    if not out_dir.is_dir():
        return
    stale = sorted(p.name for p in out_dir.glob("*.h5") if p.name not in set(names))
    if not lesions and (out_dir / ANNOTATIONS).exists():
        stale.append(ANNOTATIONS)
    if stale:
        shown = ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else "")
        raise DataError(f"{out_dir}: holds files that are not part of this synthetic set "
                        f"({shown}); remove them or choose another output folder")


def write_annotations(path: Path, rows: list[dict]) -> Path:
    """Write lesion boxes as a fastMRI+ ``knee.csv``-style table."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ANNOTATION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_preview(data_dir, out_path, slices_per_volume: int = 4) -> Path:
    """Montage of a few slices of one volume per acquisition found in ``data_dir``
    (``reconstruction_esc``, fastMRI orientation), with lesion boxes when the folder has
    an ``annotations.csv``. Written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    data_dir = Path(data_dir)
    chosen = {}
    for path in sorted(data_dir.glob("*.h5")):
        with h5py.File(path, "r") as f:
            acquisition = str(f.attrs.get("acquisition", "?"))
            if acquisition not in chosen:
                chosen[acquisition] = (path, f["reconstruction_esc"][()])
    if not chosen:
        raise DataError(f"{data_dir}: no .h5 volumes to preview")
    boxes = {}
    if (data_dir / ANNOTATIONS).is_file():
        with open(data_dir / ANNOTATIONS, newline="") as fh:
            for row in csv.DictReader(fh):
                boxes.setdefault((row["file"] + ".h5", int(row["slice"])), []).append(row)

    ncols = slices_per_volume
    fig, axes = plt.subplots(len(chosen), ncols, figsize=(2.6 * ncols, 2.8 * len(chosen)),
                             squeeze=False)
    order = sorted(chosen, key=lambda a: (ACQUISITIONS.index(a) if a in ACQUISITIONS else 9, a))
    for r, acquisition in enumerate(order):
        path, volume = chosen[acquisition]
        picks = np.unique(np.linspace(0, len(volume) - 1, ncols).round().astype(int))
        vmax = float(np.percentile(volume, 99.8))
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(picks):
                continue
            s = int(picks[c])
            ax.imshow(volume[s], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{path.stem} {acquisition} s{s}", fontsize=7)
            for row in boxes.get((path.name, s), []):
                h, w = int(row["height"]), int(row["width"])
                top = RECON - int(row["y"]) - h  # boxes are on the flipped image
                ax.add_patch(Rectangle((int(row["x"]) - 0.5, top - 0.5), w, h, fill=False,
                                       edgecolor="red", linewidth=0.8))
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_path


@dataclass(frozen=True)
class SynthConfig:
    """One ``fnaf synth`` data set."""

    out: str  # output folder
    volumes: int = 8
    slices: int = 12  # slices per volume
    width: int = 368  # k-space columns (phase encodes), >= 320
    seed: int = 0
    first_index: int = 0  # names start at file{1000001 + first_index}.h5
    lesions: bool = False  # plant labelled lesions, write annotations.csv
    preview: bool = False  # also save OUT/preview.png


def synthesize(cfg: SynthConfig, progress: bool = True) -> list[Path]:
    """``fnaf synth``: write the data set (and its preview); returns the volume paths."""
    paths = write_dataset(cfg.out, n_volumes=cfg.volumes, n_slices=cfg.slices, width=cfg.width,
                          seed=cfg.seed, lesions=cfg.lesions, progress=progress,
                          first_index=cfg.first_index)
    if cfg.preview:
        save_preview(cfg.out, Path(cfg.out) / "preview.png")
    return paths
