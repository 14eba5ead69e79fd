"""The volume reader-writer: NIfTI, NRRD and MetaImage (MHA/MHD) through SimpleITK.

One library for every volume format, nnU-Net's default reader (``SimpleITKIO``), and the geometry kept
exactly as ITK holds it: spacing, origin and the full direction matrix (an oblique scan stays oblique), so
a label volume written back lands voxel for voxel on its input. SimpleITK's array is already (z, y, x);
spacing is reversed into that order and origin/direction are kept in ITK's physical (x, y, z) order, since
only a writer ever uses them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gmseg.data.formats.base import FileFormat, Geometry, Volume
from gmseg.errors import DataError
from gmseg.fileio import honour_umask, temporary_sibling

if TYPE_CHECKING:
    import SimpleITK as sitk

# SimpleITK and nibabel are imported where they are used: together they take half a second, which every
# command (even ``gmseg --help``) would pay for a 2D dataset.

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


def _nifti_data_bytes(path: Path) -> tuple[int, np.dtype, object]:
    """(bytes a complete file holds up to its last voxel, the stored dtype, the data proxy), from the
    header alone."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad header; each is a bad file here
        raise _refuse(path, "cannot read volume", f"{type(exc).__name__}: {exc}; {VOLUME_HINT}") from exc
    header = image.header
    dtype = header.get_data_dtype()
    count = int(np.prod(header.get_data_shape(), dtype=np.int64))
    # image.header is a copy with the offset reset; the data proxy keeps the file's own.
    return int(image.dataobj.offset) + count * dtype.itemsize, dtype, image.dataobj


def _gzip_complete(path: Path, expected: int) -> bool:
    """Does the gzip stream decompress to at least ``expected`` bytes? The trailer's size field answers at
    once for a whole file; only when it disagrees (a cut file, or several gzip members) is it decompressed."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() >= 4:
            handle.seek(-4, os.SEEK_END)
            if struct.unpack("<I", handle.read(4))[0] == expected % 2**32:
                return True
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return total >= expected


def _check_nifti(path: Path) -> None:
    """What ITK's NIfTI reader does not say: a truncated file (it pads the missing voxels with zeros) and
    NaN/inf voxels (it reads them as 0). Checked from the raw file with nibabel, the field's other library."""
    expected, dtype, proxy = _nifti_data_bytes(path)
    if 0 in proxy.shape:
        raise _refuse(path, "empty volume", f"shape {proxy.shape} holds no voxels; {VOLUME_HINT}")
    compressed = path.name.lower().endswith(".gz")
    complete = _gzip_complete(path, expected) if compressed else path.stat().st_size >= expected
    if not complete:
        raise _refuse(
            path,
            "truncated volume",
            f"its header announces {expected} bytes (header and voxels) and the file holds fewer; {VOLUME_HINT}",
        )
    if np.issubdtype(dtype, np.floating):
        _refuse_non_finite(path, np.asanyarray(proxy.get_unscaled()).T)


def _refuse_non_finite(path: Path, array: np.ndarray) -> None:
    """NaN/inf voxels would poison every normalisation statistic downstream: refuse them, saying where."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise _refuse(
            path,
            "non-finite voxels in volume",
            f"{int(bad.sum())} NaN/inf voxel(s), e.g. at (z, y, x) {where[:3]}; replace them (e.g. by the "
            "background value) before using the volume",
        )


def _read_volume(path: Path) -> Volume:
    """A volume file as (Z, Y, X) (or (Z, Y, X, C) for vector pixels) in its own dtype, with its geometry.

    Refused, naming the file: unreadable or truncated files, 4D images (one channel per file is the
    layouts' convention: split them into CASE_0000, CASE_0001 ...), empty volumes and NaN/inf voxels
    (they would poison every normalisation statistic downstream).
    """
    import SimpleITK as sitk

    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti(path)
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
        _refuse_non_finite(path, array)
    return Volume(array, _geometry(image), dim == 3, path)


def _write_volume(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    """Write (Z, Y, X) (or (Z, Y, X, C)) atomically with ``geometry``, compressed, in the path's format.

    ITK picks its writer by the file name's ending, so the file is written under its final name inside a
    hidden temporary folder beside the target and renamed into place (companion files of .mhd too).
    """
    import SimpleITK as sitk

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
