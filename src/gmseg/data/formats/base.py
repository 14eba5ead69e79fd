"""What every reader-writer shares: the arrays and properties it hands up, and the pixel-scaling rule.

A reader-writer (nnU-Net's ``nnunetv2/imageio`` idea) is one module per format family that reads a file
into a plain array plus the properties its writer needs to put an array back exactly where the input
was (:class:`Geometry`). Nothing above the reader-writers sees a library's image object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "FIX_HINT",
    "FileFormat",
    "Geometry",
    "IDENTITY",
    "MaskData",
    "PLANAR",
    "Volume",
    "bit_depth",
    "to_uint8",
]

FIX_HINT = "check that the file is a complete, valid image (re-export or re-download it, e.g. as PNG)"

IDENTITY: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Geometry:
    """Where voxels sit in the world, kept so a written volume lands exactly where its input was.

    ``spacing`` is in the array's own axis order (z, y, x), because that is how code above indexes the
    array; ``origin`` and ``direction`` stay in SimpleITK's physical (x, y, z) convention, because they
    are only ever handed back to a writer.
    """

    spacing: tuple[float, float, float]  # mm per voxel along the ARRAY axes (z, y, x): numpy order
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # physical origin, SimpleITK (x, y, z) order
    direction: tuple[float, ...] = IDENTITY  # 9 floats, SimpleITK's row-major 3x3 direction cosines

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = tuple(float(d) for d in self.direction)
        if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
            raise ValueError(
                f"a geometry needs 3 spacings, 3 origin coordinates and 9 direction cosines, got "
                f"{len(spacing)}, {len(origin)} and {len(direction)}"
            )
        if not all(np.isfinite(spacing + origin + direction)) or min(spacing) <= 0:
            raise ValueError(f"a geometry needs finite values and positive spacings, got {spacing} {origin}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    def close_to(self, other: Geometry, tolerance: float = 1e-4) -> bool:
        """Same grid up to float noise (nnU-Net's check allows the same slack between image and label)."""
        mine = np.array(self.spacing + self.origin + self.direction)
        theirs = np.array(other.spacing + other.origin + other.direction)
        return bool(np.allclose(mine, theirs, rtol=tolerance, atol=tolerance))

    def describe(self) -> str:
        """One line for an error message: spacing (z, y, x), origin and direction, rounded."""

        def fmt(values: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"

        return f"spacing {fmt(self.spacing)} origin {fmt(self.origin)} direction {fmt(self.direction)}"


PLANAR = Geometry((1.0, 1.0, 1.0))
"""The geometry of a 2D file read as a volume of depth 1: unit pixels at the origin, no rotation."""


@dataclass(frozen=True)
class Volume:
    """A file's voxels as an array with a depth axis, plus where they sit (:class:`Geometry`)."""

    array: np.ndarray  # (Z, Y, X) one channel, or (Z, Y, X, C) for RGB / several channels; the file's own dtype
    geometry: Geometry
    is_3d: bool  # False: a 2D file read as a volume of depth 1
    path: Path


@dataclass(frozen=True)
class MaskData:
    """A mask file's pixels before the mask rule (:func:`gmseg.data.io.inspect_mask`) is applied."""

    data: np.ndarray  # (H, W) or (H, W, C), without alpha
    full_scale: float  # the value of "fully on" in the data's dtype: 1.0, 255.0, 65535.0 ...
    alpha: np.ndarray | None  # (H, W) alpha channel, None when the file has none
    mode: str  # the pixel layout, in PIL's names ("L", "RGB", "P", "I;16", "1", ...), for reports
    indices: np.ndarray | None = None  # a palette file's indices (the class values of a palette label map)


@dataclass(frozen=True)
class FileFormat:
    """One file format: its endings and the functions that read and write it.

    2D formats (``is_3d`` False) read images and masks for the 2D verbs: ``read_image(path, notes)`` an
    (H, W, 3) uint8 RGB array (how high-bit-depth data was scaled is appended to ``notes``);
    ``read_mask(path)`` the :class:`MaskData`; ``read_size(path)`` the (width, height) after an integrity
    check without decoding pixels; ``header_size(path)`` the (width, height) from the header alone,
    raising the library's own OSError on a bad file; ``write`` (None: read-only) an (H, W) or (H, W, 3)
    uint8 array into an open binary handle. Every format reads and writes volumes: ``read_volume(path)``
    gives a :class:`Volume` (2D files: depth 1), ``write_volume(path, array, geometry)`` writes one
    atomically. ``lossy``: compression noise is expected (masks are then thresholded at half scale).
    """

    name: str
    suffixes: tuple[str, ...]  # lower case, with the dot, multi-part allowed (".nii.gz")
    read_image: Callable[[Path, list[str] | None], np.ndarray] | None = None
    read_mask: Callable[[Path], MaskData] | None = None
    read_size: Callable[[Path], tuple[int, int]] | None = None
    header_size: Callable[[Path], tuple[int, int]] | None = None
    write: Callable[[BinaryIO, np.ndarray], None] | None = None
    lossy: bool = False
    read_volume: Callable[[Path], Volume] | None = None
    write_volume: Callable[[Path, np.ndarray, Geometry], None] | None = None
    is_3d: bool = False


# ----------------------------------------------------------------------------------------- pixel data

_BIT_DEPTHS = (8, 10, 12, 14, 16)


def bit_depth(hi: float) -> int:
    """The smallest common sensor bit depth (8, 10, 12, 14, 16) whose range holds ``hi``."""
    return next(b for b in _BIT_DEPTHS if hi <= 2**b - 1)


def to_uint8(
    data: np.ndarray, notes: list[str] | None = None, path: Path | None = None, depth: int | None = None
) -> np.ndarray:
    """Scale high-bit-depth or float pixel data to uint8.

    Integer data is divided by the full scale of ``depth``, the bit depth the *file declares* (a PNG's
    sBIT chunk, else its container: 16 for a 16-bit PNG), so a raw intensity means the same in every
    file of a dataset and at prediction: the image's own maximum never decides, since one hot pixel would
    then change every other pixel's brightness. Values above the declared range are clipped. Without a
    declared depth the container's dtype decides. What was done is appended to ``notes``. Float data in
    [0, 1] is multiplied by 255; other floats are min-max scaled (no defined full range to divide by).
    """
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255
    x = data.astype(np.float64)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if np.issubdtype(data.dtype, np.integer) and lo >= 0 and (depth is not None or hi <= 65535):
        if depth is None:
            depth = 16 if data.dtype.itemsize >= 2 else 8
        scale = (2**depth - 1) / 255.0
        scaled = x / scale
        if notes is not None:
            clipped = f", {int((x > 2**depth - 1).sum())} pixel(s) above it clipped" if hi > 2**depth - 1 else ""
            narrow = bit_depth(min(hi, 65535.0))
            hint = (
                f"; the values fit {narrow} bits: if the data is {narrow}-bit, declare it in the file "
                "(PNG sBIT chunk) so it is not read dark"
                if narrow < depth
                else ""
            )
            notes.append(
                f"{path}: {data.dtype} pixels (up to {int(hi)}) read as declared {depth}-bit data "
                f"(divided by {scale:.4g}{clipped}){hint}"
            )
    elif np.issubdtype(data.dtype, np.floating) and lo >= 0 and hi <= 1.0:
        scaled = x * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = x
    else:
        scaled = (x - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(x)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
