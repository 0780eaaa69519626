"""ISMRMRD header of a fastMRI file, and the i-RIM scanner metadata one-hot.

fastMRI stores the acquisition's ISMRMRD XML header in the ``ismrmrd_header`` dataset.
We read the sizes and the phase-encoding limits the way ``fastmri.data.SliceDataset``
does (``padding_left = enc_y // 2 - center``, ``padding_right = padding_left + max + 1``)
and the scanner name (``systemModel``) that i-RIM's metadata needs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from fnaf_jax.errors import ConfigError

NAMESPACE = "http://www.ismrm.org/ISMRMRD"

#: i-RIM's slot order: scanner-major, fat-suppressed first (``mri_data.py`` of irim_fastMRI).
SCANNERS = ("Aera", "Biograph", "Prisma", "Skyra")
FAT_SUPPRESSED = "CORPDFS_FBK"
NOT_FAT_SUPPRESSED = "CORPD_FBK"
METADATA_SIZE = 2 * len(SCANNERS)


@dataclass(frozen=True)
class Header:
    """The fields of an ISMRMRD header that the data pipeline uses."""

    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int
    system_model: str  # "" when the header does not name one


class HeaderError(ValueError):
    """Raised by ``parse_header``; the caller adds the file name (a DataError)."""


def _find(root: ET.Element, path: list[str]) -> ET.Element | None:
    query = "/".join(f"{{{NAMESPACE}}}{name}" for name in path)
    return root.find(query)


def _int_field(root: ET.Element, path: list[str]) -> int:
    node = _find(root, path)
    if node is None or node.text is None or not node.text.strip():
        raise HeaderError(f"ismrmrd_header has no {'/'.join(path)}")
    try:
        return int(node.text.strip())
    except ValueError:
        raise HeaderError(f"ismrmrd_header field {'/'.join(path)} is not an integer: "
                          f"{node.text.strip()!r}") from None


def parse_header(xml: bytes | str) -> Header:
    """Parse ISMRMRD XML; raises ``HeaderError`` when it is not XML or lacks a size field."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise HeaderError(f"ismrmrd_header is not valid XML ({err})") from None
    enc = ["encoding", "encodedSpace", "matrixSize"]
    rec = ["encoding", "reconSpace", "matrixSize"]
    lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    encoding_size = tuple(_int_field(root, enc + [a]) for a in "xyz")
    recon_size = tuple(_int_field(root, rec + [a]) for a in "xyz")
    center = _int_field(root, lims + ["center"])
    maximum = _int_field(root, lims + ["maximum"]) + 1
    padding_left = encoding_size[1] // 2 - center
    model = _find(root, ["acquisitionSystemInformation", "systemModel"])
    return Header(
        encoding_size=encoding_size,
        recon_size=recon_size,
        padding_left=padding_left,
        padding_right=padding_left + maximum,
        system_model=(model.text or "").strip() if model is not None else "",
    )


def metadata_slot(acquisition: str, system_model: str) -> int | None:
    """Index of the i-RIM one-hot slot, or None when scanner or sequence is unknown.

    Scanner names are matched by substring, case-insensitively ("Prisma_fit" is a
    Prisma, "Biograph_mMR" a Biograph).
    """
    model = (system_model or "").lower()
    scanner = next((i for i, name in enumerate(SCANNERS) if name.lower() in model), None)
    if scanner is None or acquisition not in (FAT_SUPPRESSED, NOT_FAT_SUPPRESSED):
        return None
    return 2 * scanner + (0 if acquisition == FAT_SUPPRESSED else 1)


def metadata_onehot(acquisition: str, system_model: str, strict: bool = True) -> np.ndarray:
    """(8,) float32 one-hot of (scanner, fat suppression) in i-RIM's slot order.

    Slots: 0 fs Aera, 1 non-fs Aera, 2 fs Biograph, 3 non-fs Biograph, 4 fs Prisma,
    5 non-fs Prisma, 6 fs Skyra, 7 non-fs Skyra. An unknown scanner or acquisition
    raises ConfigError when ``strict``, else gives all zeros.
    """
    out = np.zeros(METADATA_SIZE, np.float32)
    slot = metadata_slot(acquisition, system_model)
    if slot is None:
        if strict:
            raise ConfigError(
                f"unknown scanner/acquisition for i-RIM metadata: system_model="
                f"{system_model!r}, acquisition={acquisition!r} (known scanners "
                f"{', '.join(SCANNERS)}; acquisitions {FAT_SUPPRESSED}, {NOT_FAT_SUPPRESSED})")
        return out
    out[slot] = 1.0
    return out


def header_xml(encoding_size=(640, 368, 1), recon_size=(320, 320, 1), center=None,
               maximum=None, system_model="Skyra", omit=()) -> bytes:
    """A minimal ISMRMRD header holding the fields ``parse_header`` reads.

    For writing small files in tests and tools. ``center``/``maximum`` default to a
    fully acquired width; ``omit`` names elements to leave out ("encodedSpace",
    "reconSpace", "kspace_encoding_step_1", "systemModel") to make broken headers.
    """
    width = encoding_size[1]
    center = width // 2 if center is None else center
    maximum = width - 1 if maximum is None else maximum

    def size(tag, xyz):
        if tag in omit:
            return ""
        x, y, z = xyz
        return f"<{tag}><matrixSize><x>{x}</x><y>{y}</y><z>{z}</z></matrixSize></{tag}>"

    limits = ("" if "kspace_encoding_step_1" in omit else
              f"<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>"
              f"{maximum}</maximum><center>{center}</center></kspace_encoding_step_1>"
              f"</encodingLimits>")
    model = "" if "systemModel" in omit else f"<systemModel>{system_model}</systemModel>"
    return (f'<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader xmlns="{NAMESPACE}">'
            f"<acquisitionSystemInformation>{model}</acquisitionSystemInformation>"
            f"<encoding>{size('encodedSpace', encoding_size)}"
            f"{size('reconSpace', recon_size)}{limits}</encoding></ismrmrdHeader>").encode()


def metadata_or_zeros(metadata) -> np.ndarray:
    """An item's (8,) float32 i-RIM metadata, or all zeros (unknown scanner) when it has none."""
    return np.zeros(METADATA_SIZE, np.float32) if metadata is None else np.asarray(metadata, np.float32)
