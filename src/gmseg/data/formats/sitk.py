"""The volume reader-writer: NIfTI, NRRD and MetaImage (MHA/MHD) through SimpleITK.

One library for every volume format, nnU-Net's default reader (``SimpleITKIO``), and the geometry kept
exactly as ITK holds it: spacing, origin and the full direction matrix (an oblique scan stays oblique), so
a label volume written back lands voxel for voxel on its input. SimpleITK's array is already (z, y, x);
spacing is reversed into that order and origin/direction are kept in ITK's physical (x, y, z) order, since
only a writer ever uses them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from gmseg.data.formats.base import FileFormat, Geometry, Volume
from gmseg.errors import DataError
from gmseg.fileio import honour_umask, temporary_sibling

__all__ = ["sitk_format"]

VOLUME_HINT = "re-export or re-download the volume (a complete .nii.gz, .nrrd or .mha file)"


def _geometry(image: sitk.Image) -> Geometry:
    """ITK's (x, y[, z]) geometry as the contract's: spacing in array order, a 2D image embedded in 3D."""
    dim = image.GetDimension()
    spacing = tuple(image.GetSpacing())[::-1]
    origin = tuple(image.GetOrigin())
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    if dim == 2:
        spacing = (1.0,) + spacing
        origin = origin + (0.0,)
        embedded = np.eye(3)
        embedded[:2, :2] = direction
        direction = embedded
    return Geometry(spacing, origin, tuple(direction.ravel()))


def _refuse(path: Path, summary: str, problem: str) -> DataError:
    return DataError(f"{summary}: {path}", [f"{path}: {problem}"])


def _read_volume(path: Path) -> Volume:
    """A volume file as (Z, Y, X) (or (Z, Y, X, C) for vector pixels) in its own dtype, with its geometry.

    Refused, naming the file: unreadable or truncated files, 4D images (one channel per file is the
    layouts' convention: split them into CASE_0000, CASE_0001 ...), empty volumes and NaN/inf voxels
    (they would poison every normalisation statistic downstream).
    """
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line for line in first if "rror" in line or "annot" in line), first[-1] if first else "")
        problem = f"{detail.strip()[:200]} (truncated or not a volume?); {VOLUME_HINT}"
        raise _refuse(path, "cannot read volume", problem) from exc
    dim = image.GetDimension()
    if dim not in (2, 3):
        raise _refuse(
            path,
            f"{dim}D image where a 3D one is expected",
            f"size {image.GetSize()}: gmseg reads one 3D volume per file; store each channel or time point as "
            "its own file (nnU-Net: CASE_0000, CASE_0001 ...)",
        )
    array = sitk.GetArrayFromImage(image)
    if dim == 2:
        array = array[None]
    if array.size == 0:
        raise _refuse(path, "empty volume", f"size {image.GetSize()} holds no voxels; {VOLUME_HINT}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise _refuse(
                path,
                "non-finite voxels in volume",
                f"{int(bad.sum())} NaN/inf voxel(s), e.g. at (z, y, x) {where[:3]}; replace them (e.g. by the "
                "background value) before using the volume",
            )
    return Volume(array, _geometry(image), dim == 3, path)


def _write_volume(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    """Write (Z, Y, X) (or (Z, Y, X, C)) atomically with ``geometry``, compressed, in the path's format.

    ITK picks its writer by the file name's ending, so the file is written under its final name inside a
    hidden temporary folder beside the target and renamed into place (companion files of .mhd too).
    """
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{path}: a volume array is (Z, Y, X) or (Z, Y, X, C), got shape {arr.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=arr.ndim == 4)
    image.SetSpacing(tuple(float(s) for s in geometry.spacing[::-1]))
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(path)  # a folder: PID-named, so a dead writer's leftover is cleaned
    try:
        temp.mkdir()
        sitk.WriteImage(image, str(temp / path.name), useCompression=True)
        written = sorted(temp.iterdir(), key=lambda p: p.name == path.name)  # the header file last
        for part in written:
            honour_umask(part)
            os.replace(part, path.parent / part.name)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def sitk_format(name: str, suffixes: tuple[str, ...]) -> FileFormat:
    """The registry entry of one SimpleITK volume format."""
    return FileFormat(name, suffixes, read_volume=_read_volume, write_volume=_write_volume, is_3d=True)
