"""Image, mask and volume files, chosen by file ending: one registry of reader-writers.

Every verb that touches an image, mask or volume file (prepare, the datasets, predict, evaluate, reports)
comes through here, so a file format is supported everywhere or nowhere. A reader-writer (nnU-Net's
``nnunetv2/imageio`` idea: one module per format family, :mod:`gmseg.data.formats`) turns a file into plain
numpy arrays plus the properties a writer needs (:class:`Geometry`), and an array back into a file;
everything above it (the mask rule, the datasets, the metrics) sees arrays only, never a library's image
object. 2D formats are volumes of depth 1 (:func:`read_volume`); the 2D verbs keep their image and mask
readers. Adding a format is one module in :mod:`gmseg.data.formats` and one line in :data:`REGISTRY`.

File names are split by :func:`split_name`, which knows multi-part endings (``case.nii.gz`` is the stem
``case``, not ``case.nii``), instead of :attr:`pathlib.Path.stem` / :attr:`~pathlib.Path.suffix`.

Reading failures raise :class:`~gmseg.errors.DataError` naming the file, because a traceback from deep
inside an image library does not tell a user which of 10,000 files is bad.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gmseg.data.formats.base import (
    FIX_HINT,
    IDENTITY,
    PLANAR,
    FileFormat,
    Geometry,
    MaskData,
    Volume,
    bit_depth,
    to_uint8,
)
from gmseg.data.formats.dicom import SERIES_OUTPUT_SUFFIX, is_dicom_series, read_dicom_series
from gmseg.data.formats.pil import PNG_SUFFIX, pil_format
from gmseg.data.formats.sitk import sitk_format
from gmseg.errors import DataError
from gmseg.fileio import atomic_write

__all__ = [
    "FIX_HINT",
    "FORMATS",
    "IDENTITY",
    "OUTPUT_2D_SUFFIX",
    "PLANAR",
    "REGISTRY",
    "SUFFIXES",
    "VOLUME_FORMATS",
    "VOLUME_SUFFIXES",
    "FileFormat",
    "Geometry",
    "MaskData",
    "Volume",
    "bit_depth",
    "find_format",
    "format_for",
    "header_size",
    "is_dicom_series",
    "is_volume_file",
    "output_suffix",
    "read_image",
    "read_mask_data",
    "read_size",
    "read_volume",
    "split_name",
    "suffix_rank",
    "to_uint8",
    "write_array",
    "write_volume",
]

# ------------------------------------------------------------------------------------------- registry

REGISTRY: tuple[FileFormat, ...] = (
    pil_format("PNG", (PNG_SUFFIX,)),
    pil_format("JPEG", (".jpg", ".jpeg"), lossy=True),
    pil_format("BMP", (".bmp",)),
    pil_format("TIFF", (".tif", ".tiff")),
    sitk_format("NIfTI", (".nii.gz", ".nii")),
    sitk_format("NRRD", (".nrrd",)),
    sitk_format("MetaImage", (".mha", ".mhd")),
)
"""Every reader-writer, one line each, in order of preference when one stem has several files."""

FORMATS: tuple[FileFormat, ...] = tuple(f for f in REGISTRY if not f.is_3d)
"""The 2D image formats (what the 2D verbs index and read as images and masks), .png first."""

VOLUME_FORMATS: tuple[FileFormat, ...] = tuple(f for f in REGISTRY if f.is_3d)
"""The volume formats (read by :func:`read_volume` with their geometry)."""

SUFFIXES: tuple[str, ...] = tuple(s for f in FORMATS for s in f.suffixes)
"""Every 2D image file ending, in order of preference."""

VOLUME_SUFFIXES: tuple[str, ...] = tuple(s for f in VOLUME_FORMATS for s in f.suffixes)
"""Every volume file ending (NIfTI, NRRD, MetaImage)."""

OUTPUT_2D_SUFFIX: str = PNG_SUFFIX
"""The ending of the 2D files gmseg writes (masks, label maps, prepared images): lossless, exact values."""

_BY_SUFFIX: dict[str, FileFormat] = {s: f for f in FORMATS for s in f.suffixes}
_ANY_BY_SUFFIX: dict[str, FileFormat] = {s: f for f in REGISTRY for s in f.suffixes}

#: Multi-part endings that name splitting knows besides the formats' own: the probability maps
#: ``gmseg predict`` writes for 2D files (``case.prob.npy``).
OTHER_ENDINGS: tuple[str, ...] = (".prob.npy",)

# Longest first, so ".nii.gz" wins over ".gz" and ".prob.npy" over ".npy".
_ENDINGS = tuple(
    sorted({s for s in SUFFIXES + VOLUME_SUFFIXES + OTHER_ENDINGS if s.count(".") > 1}, key=len, reverse=True)
)


def split_name(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(stem, suffix)`` of a file name, with the suffix in the name's own case.

    Known multi-part endings stay whole: ``case.nii.gz`` -> ``("case", ".nii.gz")``, ``case.prob.npy`` ->
    ``("case", ".prob.npy")``; every other name splits at its last dot as :class:`pathlib.Path` does
    (``img.v2.png`` -> ``("img.v2", ".png")``, ``.hidden`` -> ``(".hidden", "")``). Use this instead of
    ``Path.stem`` / ``Path.suffix`` for image and mask files.
    """
    name = Path(path).name
    lower = name.lower()
    for ending in _ENDINGS:
        if lower.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)], name[-len(ending) :]
    p = Path(name)
    return p.stem, p.suffix


def find_format(path: str | os.PathLike[str]) -> FileFormat | None:
    """The format of ``path`` by its ending (any case), or None when no format reads it."""
    return _BY_SUFFIX.get(split_name(path)[1].lower())


def format_for(path: str | os.PathLike[str], suffix: str | None = None) -> FileFormat:
    """The format of ``path`` by its ending (or by ``suffix`` when given); a :class:`DataError` naming the
    file and the supported endings when there is none."""
    suffix = split_name(path)[1] if suffix is None else suffix
    fmt = _BY_SUFFIX.get(suffix.lower())
    if fmt is None and suffix.lower() in _ANY_BY_SUFFIX:
        raise DataError(
            f"a volume where a 2D image is expected: {path}",
            [
                f"{path}: a {_ANY_BY_SUFFIX[suffix.lower()].name} volume; this step reads 2D images "
                f"({', '.join(SUFFIXES)}); point gmseg at the volume dataset (MSD or nnU-Net folder) or the "
                "volume files themselves instead"
            ],
        )
    if fmt is None:
        ending = f"the ending {suffix!r}" if suffix else "a name without an ending"
        raise DataError(
            f"unsupported file type: {path}",
            [
                f"{path}: {ending} is not a supported image format; supported endings: "
                f"{', '.join(SUFFIXES)}; convert the file (e.g. to PNG)"
            ],
        )
    return fmt


def suffix_rank(path: str | os.PathLike[str]) -> int:
    """Position of the file's ending in :data:`SUFFIXES` (lower is preferred); the file must be supported."""
    return SUFFIXES.index(split_name(path)[1].lower())


def _existing(path: str | os.PathLike[str], kind: str) -> tuple[Path, FileFormat]:
    path = Path(path)
    fmt = format_for(path)
    if not path.is_file():
        what = f"{kind} file" if kind else "file"
        raise DataError(f"{what} not found: {path}", [f"{path}: does not exist; check the path"])
    return path, fmt


def read_image(path: str | os.PathLike[str], notes: list[str] | None = None) -> np.ndarray:
    """The image's pixels as an (H, W, 3) uint8 RGB array, by the reader of its ending."""
    path, fmt = _existing(path, "image")
    arr = fmt.read_image(path, notes)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"unexpected image layout in {path}", [f"{path}: array shape {arr.shape}; {FIX_HINT}"])
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_mask_data(path: str | os.PathLike[str]) -> MaskData:
    """A mask file's pixels, by the reader of its ending, before the mask rule is applied."""
    path, fmt = _existing(path, "mask")
    return fmt.read_mask(path)


def read_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) after the format's integrity check, without decoding pixels."""
    path, fmt = _existing(path, "")
    return fmt.read_size(path)


def header_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from the header alone (the fastest check); a bad file raises the library's OSError."""
    return format_for(path).header_size(Path(path))


def write_array(path: str | os.PathLike[str], array: np.ndarray, suffix: str | None = None) -> None:
    """Write an (H, W) or (H, W, 3) uint8 array atomically, in the format of ``suffix`` (default: the
    path's own ending). No half-written files: a temporary name is renamed into place."""
    fmt = format_for(path, suffix)
    if fmt.write is None:
        writable = [s for f in FORMATS if f.write is not None for s in f.suffixes]
        raise DataError(f"cannot write {path}", [f"{path}: {fmt.name} is read-only here; write {writable}"])
    write = fmt.write
    atomic_write(Path(path), lambda handle: write(handle, np.ascontiguousarray(array)))


# -------------------------------------------------------------------------------------------- volumes


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    """True for a visible file name with a volume ending (.nii.gz, .nii, .nrrd, .mha, .mhd), by name only."""
    name = Path(path).name
    return not name.startswith(".") and split_name(name)[1].lower() in VOLUME_SUFFIXES


def output_suffix(path: str | os.PathLike[str]) -> str:
    """The ending of an output made from the input ``path``: a volume's own ending (a prediction for
    ``case.nrrd`` is ``case.nrrd``), NIfTI for a DICOM series folder, :data:`OUTPUT_2D_SUFFIX` for 2D inputs
    (a JPEG's mask must be lossless)."""
    if is_dicom_series(path):
        return SERIES_OUTPUT_SUFFIX
    ending = split_name(path)[1]
    return ending if ending.lower() in VOLUME_SUFFIXES else OUTPUT_2D_SUFFIX


def _any_format(path: Path, suffix: str | None = None) -> FileFormat:
    suffix = split_name(path)[1] if suffix is None else suffix
    fmt = _ANY_BY_SUFFIX.get(suffix.lower())
    if fmt is None:
        ending = f"the ending {suffix!r}" if suffix else "a name without an ending"
        raise DataError(
            f"unsupported file type: {path}",
            [f"{path}: {ending} is not a supported format; supported endings: {', '.join(_ANY_BY_SUFFIX)}"],
        )
    return fmt


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Any supported file as a :class:`Volume`: (Z, Y, X) or (Z, Y, X, C) in the file's own dtype, with the
    geometry a writer needs to put a result back in the same place. 2D files are volumes of depth 1 with
    :data:`PLANAR` geometry and ``is_3d`` False; a folder of DICOM slices is its one series
    (:func:`gmseg.data.formats.dicom.read_dicom_series`). Failures (missing, truncated, 4D, empty, NaN/inf
    voxels) are a :class:`DataError` naming the file."""
    path = Path(path)
    if is_dicom_series(path):
        return read_dicom_series(path)
    fmt = _any_format(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}", [f"{path}: does not exist; check the path"])
    return fmt.read_volume(path)


def write_volume(
    path: str | os.PathLike[str], array: np.ndarray, geometry: Geometry, suffix: str | None = None
) -> Path:
    """Write a (Z, Y, X) array (any numpy dtype; labels as uint8) atomically with ``geometry``, in the format
    of the path's ending (or ``suffix``). 2D formats take Z == 1 only. Returns the path written."""
    path = Path(path)
    fmt = _any_format(path, suffix)
    if fmt.write_volume is None:
        raise DataError(f"cannot write {path}", [f"{path}: {fmt.name} is read-only here"])
    fmt.write_volume(path, np.asarray(array), geometry)
    return path
