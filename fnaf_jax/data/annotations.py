"""Knee abnormality annotations: fastMRI+ boxes and the FNAF authors' radiologist boxes.

Both tables are turned into the same ``Annotation`` records, whose boxes are given in
*array* coordinates of the 320x320 ``reconstruction_esc`` slice (row 0 = first row of the
HDF5 array, no flip), as half-open row and column ranges. ``box_mask`` rasterizes them.

Two formats are read:

* fastMRI+ ``knee.csv`` (microsoft/fastmri-plus): ``file, slice, study_level, x, y, width,
  height, label``. Integer pixel boxes drawn on the image flipped up/down: ``x`` is the
  column and ``y`` the row of the top-left corner in the flipped image, so the array rows are
  ``[320 - y - height, 320 - y)`` and the columns ``[x, x + width)``. Slices are 0-based.
  ``study_level == "Yes"`` rows describe the whole study and carry no box. A zero width or
  height (one row of the real table) is read as one pixel.
* The FNAF authors' CSVs (fcaliva/fastMRI_BB_abnormalities_annotation, ``fastMRI_csv/``):
  ``filename, slice, numBBs, labels, coords``. Facts read off that repository's ``main.py``
  (commit 6b7e9d8): the volume is shown as ``np.flip(reconstruction_esc, axis=1)`` (rows
  flipped up/down) with ``imshow``; each box is ``[x0, x1, y0, y1]`` and is drawn as
  ``Rectangle((x0, y0), x1 - x0, y1 - y0)``, so x = column, y = row of the flipped image,
  in matplotlib's convention (pixel centres at integer coordinates); slices are 1-based
  ("the annotation ranges from slice 1 to Nslices ... subtract 1"). Their
  ``Abnormality-classification`` code flips the same axis. We take the pixels whose centres
  lie inside the box: flipped row i is array row ``319 - i``.

  ``labels`` is written by NumPy (``['A' 'B']``, no comma when there are several), which
  ``ast.literal_eval`` would silently concatenate into ``'AB'``; commas are inserted between
  adjacent quoted strings first. ``coords`` is a NumPy-printed list of 4-number boxes.
"""

from __future__ import annotations

import ast
import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fnaf_jax.errors import DataError

IMAGE_SIZE = 320
FASTMRI_PLUS_COLUMNS = ("file", "slice", "study_level", "x", "y", "width", "height", "label")
FNAF_BOX_COLUMNS = ("filename", "slice", "numBBs", "labels", "coords")
FNAF_LABELS = (
    "CartMedFem", "CartLatFem", "CartMedTib", "CartLatTib",
    "BML_Med_Fem", "BML_Lat_Fem", "BML_Med_Tib", "BML_Lat_Tib",
    "Med_Men", "Lat_Men", "Cyst",
)


@dataclass(frozen=True)
class Annotation:
    """One labelled finding. ``rows``/``cols`` are half-open array ranges, None when the
    finding concerns the whole study (then ``slice`` may be None too)."""

    fname: str            # file name as SliceDataset reports it, e.g. "file1000001.h5"
    slice: int | None     # 0-based slice index into the volume
    label: str
    rows: tuple[int, int] | None
    cols: tuple[int, int] | None
    source: str           # "fastmri_plus" | "fnaf_bb"

    @property
    def has_box(self) -> bool:
        return self.rows is not None


def h5_name(name: str) -> str:
    """Annotation tables name files without the extension; the data loader with it."""
    name = name.strip()
    return name if name.endswith(".h5") else name + ".h5"


def _clip_range(start: int, stop: int, size: int) -> tuple[int, int] | None:
    start, stop = max(0, start), min(size, stop)
    return (start, stop) if stop > start else None


def _read_rows(path: Path, expected: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: annotation table not found")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = tuple(h.strip() for h in (reader.fieldnames or ()))
        missing = [c for c in expected if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; header is {list(header)}")
        return [{k.strip(): (v or "") for k, v in row.items() if k} for row in reader]


def _int(path, line, row, key) -> int:
    try:
        return int(row[key])
    except ValueError:
        raise DataError(f"{path}:{line}: column {key!r} is not an integer: {row[key]!r}") from None


def read_fastmri_plus(path, size: int = IMAGE_SIZE) -> list[Annotation]:
    """Every row of a fastMRI+ ``knee.csv`` (including study-level rows, which have no box)."""
    path = Path(path)
    out = []
    for line, row in enumerate(_read_rows(path, FASTMRI_PLUS_COLUMNS), start=2):
        fname, label = h5_name(row["file"]), row["label"].strip()
        study = row["study_level"].strip().lower()
        if study not in ("yes", "no"):
            raise DataError(f"{path}:{line}: study_level must be Yes or No, got {row['study_level']!r}")
        if study == "yes":
            slice_ = _int(path, line, row, "slice") if row["slice"].strip() else None
            out.append(Annotation(fname, slice_, label, None, None, "fastmri_plus"))
            continue
        slice_ = _int(path, line, row, "slice")
        x, y, w, h = (_int(path, line, row, k) for k in ("x", "y", "width", "height"))
        if w < 0 or h < 0 or slice_ < 0:
            raise DataError(f"{path}:{line}: box needs width, height, slice >= 0: {row}")
        # The real table has a zero-height box (a line drawn by the reader): keep one pixel.
        w, h = max(w, 1), max(h, 1)
        rows = _clip_range(size - y - h, size - y, size)
        cols = _clip_range(x, x + w, size)
        if rows is None or cols is None:
            raise DataError(f"{path}:{line}: box x={x} y={y} w={w} h={h} lies outside {size}x{size}")
        out.append(Annotation(fname, slice_, label, rows, cols, "fastmri_plus"))
    return out


def parse_numpy_labels(text: str) -> list[str]:
    """``"['A' 'B']"`` (NumPy print) or ``"['A', 'B']"`` -> ``['A', 'B']``."""
    fixed = re.sub(r"(['\"])\s+(['\"])", r"\1, \2", text.strip())
    value = ast.literal_eval(fixed)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not a list of strings: {text!r}")
    return [v.strip() for v in value]


def parse_numpy_boxes(text: str) -> list[tuple[float, ...]]:
    """``"[[a b c d]\\n [e f g h]]"`` (NumPy print, commas optional) -> list of 4-tuples."""
    groups = re.findall(r"\[([^\[\]]*)\]", text)
    if not groups:
        raise ValueError(f"no [...] box in {text!r}")
    boxes = []
    for group in groups:
        numbers = [float(v) for v in re.split(r"[\s,]+", group.strip()) if v]
        if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"box {group!r} does not hold 4 finite numbers")
        boxes.append(tuple(numbers))
    return boxes


def fnaf_box_ranges(x0: float, x1: float, y0: float, y1: float, size: int = IMAGE_SIZE):
    """Array (rows, cols) half-open ranges of the pixels whose centres lie in the box
    ``[x0, x1] x [y0, y1]`` drawn on the up/down-flipped image."""
    cols = (math.ceil(x0), math.floor(x1) + 1)
    # flipped row i <-> array row size-1-i; y0 <= i <= y1  <=>  size-1-y1 <= r <= size-1-y0
    rows = (math.ceil(size - 1 - y1), math.floor(size - 1 - y0) + 1)
    return _clip_range(*rows, size), _clip_range(*cols, size)


def read_fnaf_boxes(path, size: int = IMAGE_SIZE) -> list[Annotation]:
    """Every box of one of the FNAF authors' ``singlecoil_bb_{train,val}.csv`` tables."""
    path = Path(path)
    out = []
    for line, row in enumerate(_read_rows(path, FNAF_BOX_COLUMNS), start=2):
        fname = h5_name(row["filename"])
        slice_1based = _int(path, line, row, "slice")
        n_boxes = _int(path, line, row, "numBBs")
        try:
            labels = parse_numpy_labels(row["labels"])
        except (ValueError, SyntaxError) as exc:
            raise DataError(f"{path}:{line}: column 'labels' unreadable: {exc}") from None
        try:
            boxes = parse_numpy_boxes(row["coords"])
        except ValueError as exc:
            raise DataError(f"{path}:{line}: column 'coords' unreadable: {exc}") from None
        if not (len(labels) == len(boxes) == n_boxes):
            raise DataError(f"{path}:{line}: numBBs={n_boxes} but {len(labels)} labels "
                            f"and {len(boxes)} boxes")
        if slice_1based < 1:
            raise DataError(f"{path}:{line}: slice {slice_1based} (these tables count from 1)")
        for label, (x0, x1, y0, y1) in zip(labels, boxes):
            if x1 < x0 or y1 < y0:
                raise DataError(f"{path}:{line}: box {[x0, x1, y0, y1]} is not [x0, x1, y0, y1]")
            rows, cols = fnaf_box_ranges(x0, x1, y0, y1, size)
            if rows is None or cols is None:
                raise DataError(f"{path}:{line}: box {[x0, x1, y0, y1]} covers no pixel of "
                                f"the {size}x{size} image")
            out.append(Annotation(fname, slice_1based - 1, label, rows, cols, "fnaf_bb"))
    return out


def read_annotations(path, size: int = IMAGE_SIZE) -> list[Annotation]:
    """Either table format, recognised by its header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation table not found")
    with open(path, newline="") as fh:
        header = {h.strip() for h in next(csv.reader(fh), [])}
    if set(FASTMRI_PLUS_COLUMNS) <= header:
        return read_fastmri_plus(path, size)
    if set(FNAF_BOX_COLUMNS) <= header:
        return read_fnaf_boxes(path, size)
    raise DataError(f"{path}: neither a fastMRI+ table {list(FASTMRI_PLUS_COLUMNS)} nor an "
                    f"FNAF box table {list(FNAF_BOX_COLUMNS)}; header is {sorted(header)}")


def box_mask(annotation: Annotation, shape=(IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    """Boolean (H, W) mask of the annotation's box."""
    if not annotation.has_box:
        raise DataError(f"{annotation.fname}: study-level annotation {annotation.label!r} has no box")
    mask = np.zeros(shape, dtype=bool)
    (r0, r1), (c0, c1) = annotation.rows, annotation.cols
    mask[r0:r1, c0:c1] = True
    return mask


def by_slice(annotations) -> dict[tuple[str, int], list[Annotation]]:
    """Boxed annotations grouped by (file name, slice index), in table order."""
    groups: dict[tuple[str, int], list[Annotation]] = defaultdict(list)
    for ann in annotations:
        if ann.has_box:
            groups[(ann.fname, ann.slice)].append(ann)
    return dict(groups)
