"""Image and mask files, chosen by file ending: one registry of readers and writers.

Every verb that touches an image or mask file (prepare, the dataset, predict, evaluate, reports) comes
through here, so a file format is supported everywhere or nowhere. A :class:`FileFormat` turns a file into
plain numpy arrays (and an array back into a file); everything above it (the mask rule, the dataset, the
metrics) sees arrays only, never a library's image object. Adding a format is one reader module (or a few
functions) and one line in :data:`FORMATS`; e.g. NIfTI::

    FileFormat("NIfTI", (".nii.gz", ".nii"), read_nifti_image, read_nifti_mask, nifti_size, nifti_size),

File names are split by :func:`split_name`, which knows multi-part endings (``case.nii.gz`` is the stem
``case``, not ``case.nii``), instead of :attr:`pathlib.Path.stem` / :attr:`~pathlib.Path.suffix`.

Reading failures raise :class:`~gmseg.errors.DataError` naming the file, because a traceback from deep
inside an image library does not tell a user which of 10,000 files is bad.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from gmseg.errors import DataError
from gmseg.fileio import atomic_write

__all__ = [
    "FORMATS",
    "FileFormat",
    "MaskData",
    "SUFFIXES",
    "find_format",
    "format_for",
    "header_size",
    "read_image",
    "read_mask_data",
    "read_size",
    "split_name",
    "suffix_rank",
    "write_array",
]

FIX_HINT = "check that the file is a complete, valid image (re-export or re-download it, e.g. as PNG)"


@dataclass(frozen=True)
class MaskData:
    """A mask file's pixels before the mask rule (:func:`gmseg.data.io.inspect_mask`) is applied."""

    data: np.ndarray  # (H, W) or (H, W, C), without alpha
    full_scale: float  # the value of "fully on" in the data's dtype: 1.0, 255.0, 65535.0 ...
    alpha: np.ndarray | None  # (H, W) alpha channel, None when the file has none
    mode: str  # the pixel layout, in PIL's names ("L", "RGB", "P", "I;16", "1", ...), for reports


@dataclass(frozen=True)
class FileFormat:
    """One file format: its endings and the functions that read and write it.

    ``read_image(path, notes)`` returns an (H, W, 3) uint8 RGB array (how high-bit-depth data was scaled
    is appended to ``notes``); ``read_mask(path)`` the :class:`MaskData`; ``read_size(path)`` the
    (width, height) after an integrity check without decoding pixels; ``header_size(path)`` the
    (width, height) from the header alone, raising the library's own OSError on a bad file; ``write``
    (None: read-only) writes an (H, W) or (H, W, 3) uint8 array into an open binary handle.
    ``lossy``: compression noise is expected (masks are then thresholded at half scale).
    """

    name: str
    suffixes: tuple[str, ...]  # lower case, with the dot, multi-part allowed (".nii.gz")
    read_image: Callable[[Path, list[str] | None], np.ndarray]
    read_mask: Callable[[Path], MaskData]
    read_size: Callable[[Path], tuple[int, int]]
    header_size: Callable[[Path], tuple[int, int]]
    write: Callable[[BinaryIO, np.ndarray], None] | None = None
    lossy: bool = False


# ----------------------------------------------------------------------------------------- pixel data

_BIT_DEPTHS = (8, 10, 12, 14, 16)


def bit_depth(hi: float) -> int:
    """The smallest common sensor bit depth (8, 10, 12, 14, 16) whose range holds ``hi``.

    12-bit data stored in 16-bit PNGs would come out nearly black divided by 257.
    """
    return next(b for b in _BIT_DEPTHS if hi <= 2**b - 1)


def to_uint8(data: np.ndarray, notes: list[str] | None = None, path: Path | None = None) -> np.ndarray:
    """Scale high-bit-depth or float pixel data to uint8.

    Integer data up to 16 bits is divided by the full scale of its bit depth (:func:`bit_depth`: 4095 for
    12-bit data stored in 16 bits), so a raw intensity means the same within one depth; what was done is
    appended to ``notes``. Float data in [0, 1] is multiplied by 255; anything else is min-max scaled
    because there is no defined full range to divide by.
    """
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255
    x = data.astype(np.float64)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if np.issubdtype(data.dtype, np.integer) and lo >= 0 and hi <= 65535:
        depth = max(bit_depth(hi), 8)
        scaled = x / ((2**depth - 1) / 255.0)
        if notes is not None:
            notes.append(
                f"{path}: {data.dtype} pixels up to {int(hi)} read as {depth}-bit data "
                f"(divided by {(2**depth - 1) / 255.0:.4g})"
            )
    elif np.issubdtype(data.dtype, np.floating) and lo >= 0 and hi <= 1.0:
        scaled = x * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = x
    else:
        scaled = (x - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(x)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- PIL: PNG, JPEG, BMP, TIFF

_PIL_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _pil_open(path: Path, kind: str) -> Image.Image:
    """Open and fully decode an image so that truncated files fail here, with the path in the message."""
    img = None
    try:
        img = Image.open(path)
        img.load()
        return img
    except _PIL_ERRORS as exc:
        if img is not None:
            img.close()
        raise DataError(f"cannot read {kind} {path}", [f"{path}: {type(exc).__name__}: {exc}; {FIX_HINT}"]) from exc


def _pil_read_image(path: Path, notes: list[str] | None = None) -> np.ndarray:
    """Gray, palette, LA/RGBA (alpha dropped, not composited: alpha carries no anatomy), CMYK/YCbCr,
    16-bit and float images, all as (H, W, 3) uint8 RGB."""
    img = _pil_open(path, "image")
    mode = img.mode
    try:
        if mode in ("RGB", "L"):
            arr = np.asarray(img.convert("RGB"))
        elif mode == "1":
            arr = np.asarray(img.convert("L").convert("RGB"))
        elif mode in ("RGBA", "RGBX", "RGBa"):
            arr = np.asarray(img)[..., :3]
        elif mode in ("LA", "La"):
            arr = np.repeat(np.asarray(img)[..., :1], 3, axis=2)
        elif mode in ("P", "PA"):
            arr = np.asarray(img.convert("RGBA"))[..., :3]
        elif mode.startswith("I") or mode == "F":
            gray = to_uint8(np.asarray(img), notes, path)
            arr = np.repeat(gray[..., None], 3, axis=2)
        else:  # CMYK, YCbCr, LAB, HSV ...
            arr = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot convert image {path} (mode {mode}) to RGB", [f"{path}: {exc}; {FIX_HINT}"]) from exc
    finally:
        img.close()
    return arr


def _pil_mask_data(img: Image.Image) -> MaskData:
    mode = img.mode
    if mode == "1":
        return MaskData(np.asarray(img).astype(np.uint8), 1.0, None, mode)
    if mode in ("P", "PA"):
        # Palette indices are arbitrary (an adaptive palette may give white index 0): judge the colours.
        rgba = np.asarray(img.convert("RGBA"))
        return MaskData(rgba[..., :3], 255.0, rgba[..., 3], mode)
    if mode in ("LA", "La"):
        la = np.asarray(img)
        return MaskData(la[..., 0], 255.0, la[..., 1], mode)
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(img)
        return MaskData(rgba[..., :3], 255.0, rgba[..., 3], mode)
    if mode in ("L", "RGB"):
        return MaskData(np.asarray(img), 255.0, None, mode)
    if mode.startswith("I;16"):
        return MaskData(np.asarray(img), 65535.0, None, mode)
    if mode == "I":
        data = np.asarray(img)
        in_16 = data.size == 0 or (data.min() >= 0 and data.max() <= 65535)
        return MaskData(data, 65535.0 if in_16 else float(np.iinfo(np.int32).max), None, mode)
    if mode == "F":
        data = np.asarray(img)
        hi = float(data.max()) if data.size else 1.0
        return MaskData(data, 1.0 if hi <= 1.0 else (255.0 if hi <= 255.0 else 65535.0), None, mode)
    return MaskData(np.asarray(img.convert("RGB")), 255.0, None, mode)


def _pil_read_mask(path: Path) -> MaskData:
    img = _pil_open(path, "mask")
    try:
        return _pil_mask_data(img)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read mask {path}", [f"{path}: {exc}; {FIX_HINT}"]) from exc
    finally:
        img.close()


def _pil_read_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()
        return int(size[0]), int(size[1])
    except _PIL_ERRORS as exc:
        raise DataError(f"cannot read {path}", [f"{path}: {type(exc).__name__}: {exc}; {FIX_HINT}"]) from exc


def _pil_header_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _pil_writer(pil_format: str) -> Callable[[BinaryIO, np.ndarray], None]:
    def write(handle: BinaryIO, array: np.ndarray) -> None:
        Image.fromarray(array).save(handle, format=pil_format)

    return write


def _pil_format(name: str, suffixes: tuple[str, ...], lossy: bool = False) -> FileFormat:
    return FileFormat(
        name, suffixes, _pil_read_image, _pil_read_mask, _pil_read_size, _pil_header_size, _pil_writer(name), lossy
    )


# ------------------------------------------------------------------------------------------- registry

FORMATS: tuple[FileFormat, ...] = (
    _pil_format("PNG", (".png",)),
    _pil_format("JPEG", (".jpg", ".jpeg"), lossy=True),
    _pil_format("BMP", (".bmp",)),
    _pil_format("TIFF", (".tif", ".tiff")),
)
"""Every supported format, in order of preference when one stem has several files (.png first)."""

SUFFIXES: tuple[str, ...] = tuple(s for f in FORMATS for s in f.suffixes)
"""Every supported file ending, in order of preference."""

_BY_SUFFIX: dict[str, FileFormat] = {s: f for f in FORMATS for s in f.suffixes}

#: Multi-part endings that name splitting knows besides the formats' own: NIfTI (not readable yet, but
#: ``case.nii.gz`` is named ``case``) and the probability maps ``gmseg predict`` writes (``case.prob.npy``).
OTHER_ENDINGS: tuple[str, ...] = (".nii.gz", ".prob.npy")

# Longest first, so ".nii.gz" wins over ".gz" and ".prob.npy" over ".npy".
_ENDINGS = tuple(sorted({s for s in SUFFIXES + OTHER_ENDINGS if s.count(".") > 1}, key=len, reverse=True))


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
