"""DICOM series: a folder of 2D ``.dcm`` slices read as one volume through SimpleITK's ``ImageSeriesReader``.

A scanner exports one file per slice; GDCM (inside SimpleITK) groups a folder's files by their Series
Instance UID and sorts them along the slice normal by Image Position (Patient), so the volume's spacing,
origin and direction come from the headers, as ITK would write them to NIfTI. One series per folder is
read: a folder holding several is refused naming their UIDs (a silent pick of one would score the wrong
scan). Predictions of a series are written as NIfTI (:data:`SERIES_OUTPUT_SUFFIX`): gmseg writes label
volumes, not DICOM-SEG objects, and NIfTI keeps the series' geometry voxel for voxel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmseg.data.formats.base import Volume
from gmseg.errors import DataError

__all__ = ["DICOM_SUFFIX", "SERIES_OUTPUT_SUFFIX", "is_dicom_series", "read_dicom_series"]

DICOM_SUFFIX = ".dcm"
#: the ending of what is written for a DICOM series (its label volume): NIfTI, with the series' geometry
SERIES_OUTPUT_SUFFIX = ".nii.gz"
SERIES_HINT = "export the series again (one folder per series, every slice's .dcm file complete)"


def _slice_files(folder: Path) -> list[Path]:
    """The visible ``.dcm`` files directly in ``folder`` (the macOS ``._x.dcm`` companions left out)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() == DICOM_SUFFIX
    )


def is_dicom_series(path: str | Path) -> bool:
    """A folder holding ``.dcm`` slice files (by name only; :func:`read_dicom_series` checks the headers)."""
    path = Path(path)
    return path.is_dir() and bool(_slice_files(path))


def _series_files(folder: Path) -> list[str]:
    """The one series' files in slice order, as GDCM sorts them; a DataError for none or several series."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader
    ids = reader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        found = len(_slice_files(folder))
        raise DataError(
            f"no DICOM series in {folder}",
            [f"{folder}: {found} .dcm file(s) but no readable DICOM image series among them; {SERIES_HINT}"],
        )
    if len(ids) > 1:
        raise DataError(
            f"{len(ids)} DICOM series in one folder: {folder}",
            [f"{folder}: series {', '.join(ids)}; move each series into its own folder and give one folder per volume"],
        )
    return list(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def read_dicom_series(folder: str | Path) -> Volume:
    """The folder's one DICOM series as a (Z, Y, X) :class:`Volume` in its stored dtype, with the geometry
    GDCM derives from the headers. Refused, naming the folder: no series, several series, unreadable slices,
    an empty or non-finite volume."""
    import SimpleITK as sitk

    from gmseg.data.formats.sitk import _geometry, _refuse_non_finite  # the volume formats' own rules

    folder = Path(folder)
    files = _series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = next((line for line in lines if "rror" in line), lines[-1] if lines else "")
        raise DataError(
            f"cannot read DICOM series {folder}", [f"{folder}: {detail.strip()[:200]}; {SERIES_HINT}"]
        ) from exc
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        array = array[None]
    if array.size == 0:
        raise DataError(f"empty DICOM series {folder}", [f"{folder}: size {image.GetSize()}; {SERIES_HINT}"])
    if np.issubdtype(array.dtype, np.floating):
        _refuse_non_finite(folder, array)
    return Volume(array, _geometry(image), True, folder)
