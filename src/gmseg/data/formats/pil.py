"""The 2D reader-writer: PNG, JPEG, BMP and TIFF through Pillow.

Everything that is Pillow's business stays here: image modes, palettes, 1-bit and 16-bit data, alpha,
EXIF orientation, multi-page files and the bit depth a file declares. What leaves this module is numpy
arrays (:class:`~gmseg.data.formats.base.MaskData`, RGB uint8, a :class:`~gmseg.data.formats.base.Volume`
of depth 1).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from gmseg.data.formats.base import FIX_HINT, PLANAR, FileFormat, Geometry, MaskData, Volume, to_uint8
from gmseg.errors import DataError
from gmseg.fileio import atomic_write

__all__ = ["PNG_SUFFIX", "pil_format"]

PNG_SUFFIX = ".png"
"""PNG's ending: the lossless 2D format gmseg writes its masks, label maps and prepared images in."""

_PIL_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_ORIENTATION = 0x0112  # the EXIF tag that says how a camera held the picture
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height
_UPRIGHT = {  # EXIF orientation -> the transpose that shows the image as a camera app does
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = as stored), read from the header only: a PNG's EXIF counts when it comes
    before the pixel data, so that header checks (sizes) and decoding agree without decoding."""
    if img.format == "TIFF":  # Pillow's TIFF decoder applies the orientation tag itself on load
        return 1
    try:
        if img.format == "PNG":  # Pillow's getexif() would decode a PNG to look past its pixel data
            exif = Image.Exif()
            raw = img.info.get("exif")
            if raw:
                exif.load(raw)
            value = exif.get(_ORIENTATION, 1)
        else:
            value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block must not make a readable image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _refuse_pages(img: Image.Image, path: Path) -> None:
    """A multi-page TIFF is a stack (a volume, or several images): reading page 1 would drop the rest unseen."""
    pages = getattr(img, "n_frames", 1)
    if pages > 1:
        raise DataError(
            f"multi-page image {path} ({pages} pages)",
            [
                f"{path}: holds {pages} pages and gmseg reads one image per file; save each page as its own "
                "file, or a stack as a volume (e.g. NIfTI .nii.gz)"
            ],
        )


def _pil_open(path: Path, kind: str) -> Image.Image:
    """Open and fully decode an image, upright by its EXIF orientation, so that truncated files fail
    here with the path in the message and a phone photo is read as it is displayed."""
    img = None
    try:
        img = Image.open(path)
        _refuse_pages(img, path)
        orientation = _orientation(img)
        img.load()
        if orientation != 1:
            upright = img.transpose(_UPRIGHT[orientation])
            img.close()
            img = upright
        return img
    except _PIL_ERRORS as exc:
        if img is not None:
            img.close()
        raise DataError(f"cannot read {kind} {path}", [f"{path}: {type(exc).__name__}: {exc}; {FIX_HINT}"]) from exc
    except DataError:
        if img is not None:
            img.close()
        raise


def _png_significant_bits(path: Path) -> int | None:
    """The bits a PNG's sBIT chunk declares significant (12 for 12-bit data stored in 16 bits), if any."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                head = handle.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    return None  # sBIT must precede the image data
                body = handle.read(length)
                handle.seek(4, 1)  # CRC
                if kind == b"sBIT" and body:
                    return max(body)
    except OSError:
        return None


def declared_depth(img: Image.Image, path: Path) -> int | None:
    """The bit depth the file declares for its samples: PNG sBIT, TIFF BitsPerSample, else None (the
    container's dtype then decides). Never the image's own maximum."""
    if img.format == "PNG":
        bits = _png_significant_bits(path)
        return bits if bits and 8 <= bits <= 16 else None
    if img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        bits = tags.get(258)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        return int(bits) if isinstance(bits, int) and 8 <= bits <= 16 else None
    return None


def _read_image(path: Path, notes: list[str] | None = None) -> np.ndarray:
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
            gray = to_uint8(np.asarray(img), notes, path, declared_depth(img, path))
            arr = np.repeat(gray[..., None], 3, axis=2)
        else:  # CMYK, YCbCr, LAB, HSV ...
            arr = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot convert image {path} (mode {mode}) to RGB", [f"{path}: {exc}; {FIX_HINT}"]) from exc
    finally:
        img.close()
    return arr


def _mask_data(img: Image.Image) -> MaskData:
    mode = img.mode
    if mode == "1":
        return MaskData(np.asarray(img).astype(np.uint8), 1.0, None, mode)
    if mode in ("P", "PA"):
        # Palette indices are arbitrary (an adaptive palette may give white index 0): judge the colours;
        # a palette label map's class values are its indices, handed up beside them.
        indices = np.asarray(img)
        rgba = np.asarray(img.convert("RGBA"))
        return MaskData(rgba[..., :3], 255.0, rgba[..., 3], mode, indices[..., 0] if indices.ndim == 3 else indices)
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


def _read_mask(path: Path) -> MaskData:
    img = _pil_open(path, "mask")
    try:
        return _mask_data(img)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read mask {path}", [f"{path}: {exc}; {FIX_HINT}"]) from exc
    finally:
        img.close()


def _upright_size(img: Image.Image) -> tuple[int, int]:
    width, height = img.size
    return (height, width) if _orientation(img) in _TRANSPOSED else (width, height)


def _read_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            _refuse_pages(img, path)
            size = _upright_size(img)
            img.verify()
        return int(size[0]), int(size[1])
    except _PIL_ERRORS as exc:
        raise DataError(f"cannot read {path}", [f"{path}: {type(exc).__name__}: {exc}; {FIX_HINT}"]) from exc


def _header_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return _upright_size(img)


def _read_volume(path: Path) -> Volume:
    """The file's own pixels as a volume of depth 1: (1, H, W) or (1, H, W, C), palette files as indices."""
    img = _pil_open(path, "image")
    try:
        arr = np.asarray(img)
    finally:
        img.close()
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.size == 0:
        raise DataError(f"empty image {path}", [f"{path}: holds no pixels (shape {arr.shape}); {FIX_HINT}"])
    return Volume(arr[None], PLANAR, False, path)


def _writer(pil_format: str) -> Callable[[BinaryIO, np.ndarray], None]:
    def write(handle: BinaryIO, array: np.ndarray) -> None:
        Image.fromarray(array).save(handle, format=pil_format)

    return write


def _volume_writer(pil_format: str) -> Callable[[Path, np.ndarray, Geometry], None]:
    def write_volume(path: Path, array: np.ndarray, geometry: Geometry) -> None:
        arr = np.asarray(array)
        if arr.ndim not in (3, 4) or arr.shape[0] != 1 or (arr.ndim == 4 and arr.shape[3] not in (3, 4)):
            raise ValueError(
                f"{path}: a {pil_format} file holds one plane, (1, H, W) or (1, H, W, 3); got an array of shape "
                f"{arr.shape} (write volumes as .nii.gz, .nrrd or .mha)"
            )
        arr = arr[0]
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8)
        if arr.dtype != np.uint8 and not (arr.dtype == np.uint16 and arr.ndim == 2 and pil_format in ("PNG", "TIFF")):
            raise ValueError(f"{path}: {pil_format} holds uint8 (or 16-bit gray) pixels, got dtype {arr.dtype}")
        atomic_write(path, lambda handle: Image.fromarray(np.ascontiguousarray(arr)).save(handle, format=pil_format))

    return write_volume


def pil_format(name: str, suffixes: tuple[str, ...], lossy: bool = False) -> FileFormat:
    """The registry entry of one Pillow format."""
    return FileFormat(
        name,
        suffixes,
        read_image=_read_image,
        read_mask=_read_mask,
        read_size=_read_size,
        header_size=_header_size,
        write=_writer(name),
        lossy=lossy,
        read_volume=_read_volume,
        write_volume=_volume_writer(name),
    )
