"""Reading images and masks in whatever format a dataset ships, and writing the prepared PNGs.

Every reader returns one canonical array (RGB uint8 image, {0,1} uint8 mask) so the rest of the package
never has to care about PIL modes, bit depths or palettes. Failures raise :class:`DataError` naming the
file, because a traceback from deep inside Pillow does not tell a user which of 10,000 files is bad.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from gmseg.errors import DataError
from gmseg.fileio import atomic_write

__all__ = [
    "IMAGE_SUFFIXES",
    "MaskReading",
    "inspect_mask",
    "find_file",
    "index_folder",
    "read_image",
    "read_mask",
    "read_size",
    "write_image_png",
    "write_mask_png",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Recognised file suffixes, in order of preference when one stem has several files (.png first)."""

_FIX_HINT = "check that the file is a complete, valid image (re-export or re-download it, e.g. as PNG)"


def _suffix_rank(path: Path) -> int:
    return IMAGE_SUFFIXES.index(path.suffix.lower())


def is_image_file(path: Path) -> bool:
    """True for a visible file with a recognised image suffix (hidden files such as ._x.png are skipped)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def index_folder(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Map stem -> image file for one folder, preferring .png when a stem has several files.

    One directory listing instead of a stat per name keeps dataset checks linear in the number of files.
    """
    folder = Path(folder)
    index: dict[str, Path] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            if not is_image_file(path) or not entry.is_file():
                continue
            old = index.get(path.stem)
            if old is None or (_suffix_rank(path), path.name) < (_suffix_rank(old), old.name):
                index[path.stem] = path
    return index


def find_file(folder: str | os.PathLike[str], stem: str) -> Path | None:
    """The file ``folder/stem.<suffix>`` for any recognised suffix (any case), preferring .png; else None."""
    folder = Path(folder)
    for suffix in IMAGE_SUFFIXES:
        for variant in (suffix, suffix.upper()):
            candidate = folder / f"{stem}{variant}"
            if candidate.is_file():
                return candidate
    # Mixed-case suffixes (".Png") are rare: only then pay for a directory listing.
    if not folder.is_dir():
        return None
    matches = [p for p in folder.iterdir() if p.stem == stem and is_image_file(p) and p.is_file()]
    return min(matches, key=lambda p: (_suffix_rank(p), p.name)) if matches else None


def _open(path: Path, kind: str) -> Image.Image:
    """Open and fully decode an image so that truncated files fail here, with the path in the message."""
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}", [f"{path}: does not exist; check the path"])
    img = None
    try:
        img = Image.open(path)
        img.load()
        return img
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if img is not None:
            img.close()
        raise DataError(f"cannot read {kind} {path}", [f"{path}: {type(exc).__name__}: {exc}; {_FIX_HINT}"]) from exc


def read_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from the file header, after Pillow's integrity check; no pixel decoding.

    Lets dataset checks cover thousands of files in seconds; truncated or garbage files fail here.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}", [f"{path}: does not exist; check the path"])
    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()
        return int(size[0]), int(size[1])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read {path}", [f"{path}: {type(exc).__name__}: {exc}; {_FIX_HINT}"]) from exc


_BIT_DEPTHS = (8, 10, 12, 14, 16)
LOSSY_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")


def bit_depth(hi: float) -> int:
    """The smallest common sensor bit depth (8, 10, 12, 14, 16) whose range holds ``hi``.

    12-bit data stored in 16-bit PNGs would come out nearly black divided by 257.
    """
    return next(b for b in _BIT_DEPTHS if hi <= 2**b - 1)


def _to_uint8(data: np.ndarray, notes: list[str] | None = None, path: Path | None = None) -> np.ndarray:
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


def read_image(path: str | os.PathLike[str], notes: list[str] | None = None) -> np.ndarray:
    """Read any supported image as an (H, W, 3) uint8 RGB array.

    Gray, palette, LA/RGBA (alpha dropped, not composited: alpha carries no anatomy), CMYK/YCbCr, 16-bit
    and float images all end as RGB, because the autoencoder takes 3-channel input. How high-bit-depth
    data was scaled is appended to ``notes``.
    """
    path = Path(path)
    img = _open(path, "image")
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
            gray = _to_uint8(np.asarray(img), notes, path)
            arr = np.repeat(gray[..., None], 3, axis=2)
        else:  # CMYK, YCbCr, LAB, HSV ...
            arr = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot convert image {path} (mode {mode}) to RGB", [f"{path}: {exc}; {_FIX_HINT}"]) from exc
    finally:
        img.close()
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"unexpected image layout in {path}", [f"{path}: array shape {arr.shape}; {_FIX_HINT}"])
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _mask_data(img: Image.Image) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Mask pixel data (H, W) or (H, W, C) without alpha, its dtype's full-scale value, and the alpha
    channel (None when there is none)."""
    mode = img.mode
    if mode == "1":
        return np.asarray(img).astype(np.uint8), 1.0, None
    if mode in ("P", "PA"):
        # Palette indices are arbitrary (an adaptive palette may give white index 0): judge the colours.
        rgba = np.asarray(img.convert("RGBA"))
        return rgba[..., :3], 255.0, rgba[..., 3]
    if mode in ("LA", "La"):
        la = np.asarray(img)
        return la[..., 0], 255.0, la[..., 1]
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(img)
        return rgba[..., :3], 255.0, rgba[..., 3]
    if mode in ("L", "RGB"):
        return np.asarray(img), 255.0, None
    if mode.startswith("I;16"):
        return np.asarray(img), 65535.0, None
    if mode == "I":
        data = np.asarray(img)
        in_16 = data.size == 0 or (data.min() >= 0 and data.max() <= 65535)
        return data, 65535.0 if in_16 else float(np.iinfo(np.int32).max), None
    if mode == "F":
        data = np.asarray(img)
        hi = float(data.max()) if data.size else 1.0
        return data, 1.0 if hi <= 1.0 else (255.0 if hi <= 255.0 else 65535.0), None
    return np.asarray(img.convert("RGB")), 255.0, None


SOFT_LEVELS = 16
"""A mask with more distinct non-zero values than this looks soft (resized, blurred, a probability map)."""


@dataclass
class MaskReading:
    """A mask read by the one rule, with what a folder check needs: how the file encodes it."""

    mask: np.ndarray  # (H, W) uint8 in {0, 1}
    encoding: str  # e.g. "L 0/255", "RGB colour", "1-bit", "L 0/1"
    levels: int  # distinct non-zero values (1 for a clean binary mask)

    @property
    def soft(self) -> bool:
        return self.levels > SOFT_LEVELS


def default_mask_threshold(path: Path) -> float | None:
    """JPEG masks carry compression noise around edges: count only pixels above half scale."""
    return 0.5 if path.suffix.lower() in LOSSY_SUFFIXES else None


def _encoding(mode: str, data: np.ndarray, full_scale: float) -> tuple[str, int]:
    if data.ndim == 3:
        values = np.unique(data.reshape(-1, data.shape[-1]), axis=0)
        nonzero = values[np.any(values != 0, axis=1)]
    else:
        values = np.unique(data)
        nonzero = values[values != 0]
    if data.ndim == 3 and mode in ("RGB", "RGBA", "RGBa", "P", "PA"):
        if len(nonzero) and all(v[0] == v[1] == v[2] for v in nonzero):
            return _encoding("L", data[..., 0], full_scale)
        return f"{mode} colour", len(nonzero)
    if len(nonzero) == 1 and float(np.ravel(nonzero[0])[0]) == full_scale:
        return "binary", 1  # 0 and full scale: 1-bit, 8-bit 0/255 and 16-bit 0/65535 alike
    if len(nonzero) == 1:
        return f"{mode} 0/{np.ravel(nonzero[0])[0]:g}", 1
    if not len(nonzero):
        return f"{mode} empty", 0
    return (f"{mode} labels" if len(nonzero) <= SOFT_LEVELS else f"{mode} soft"), len(nonzero)


def inspect_mask(path: str | os.PathLike[str], threshold: float | None = None) -> MaskReading:
    """Read a mask by the one rule every verb uses (prepare, training, evaluation, reports).

    The rule: any non-zero pixel (any channel, for colour masks) is foreground, which is right for 0/1,
    0/255, coloured and instance-label masks. Lossy files (JPEG) are thresholded at half of full scale,
    so compression noise at edges is not lesion; ``threshold`` (a fraction of full scale) overrides that,
    e.g. for soft masks: foreground is then ``value > threshold * full scale``. Alpha is ignored, except
    when the colour channels are all background and alpha varies: some annotation tools draw the mask
    only into the alpha channel.
    """
    path = Path(path)
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"mask threshold must lie in [0, 1], got {threshold}")
    img = _open(path, "mask")
    mode = img.mode
    try:
        data, full_scale, alpha = _mask_data(img)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read mask {path}", [f"{path}: {exc}; {_FIX_HINT}"]) from exc
    finally:
        img.close()
    if threshold is None:
        threshold = default_mask_threshold(path)
    fraction = 0.0 if threshold is None else float(threshold)
    fg = data > fraction * full_scale
    if fg.ndim == 3:
        fg = fg.any(axis=2)
    if path.suffix.lower() in LOSSY_SUFFIXES:
        encoding, levels = "lossy", 1  # compression noise is expected; the threshold handles it
    else:
        encoding, levels = _encoding(mode, data, full_scale)
    if alpha is not None and not fg.any() and alpha.size and alpha.min() != alpha.max():
        fg = alpha > fraction * 255.0
        encoding, levels = f"{mode} alpha", len(np.unique(alpha[alpha > 0]))
    return MaskReading(fg.astype(np.uint8), encoding, levels)


def read_mask(path: str | os.PathLike[str], threshold: float | None = None) -> np.ndarray:
    """An (H, W) uint8 mask in {0, 1} by the rule of :func:`inspect_mask`."""
    return inspect_mask(path, threshold).mask


def odd_encodings(readings: dict[str, str]) -> list[str]:
    """Files whose encoding differs from the folder's most common one, e.g. one 0/100 mask among 0/255.

    ``readings`` maps file -> encoding; empty masks carry no encoding and are not compared.
    """
    from collections import Counter

    counts = Counter(e for e in readings.values() if not e.endswith(" empty"))
    if len(counts) < 2:
        return []
    usual = counts.most_common(1)[0][0]
    return [
        f"{f}: encoded as {e!r}, unlike the folder's usual {usual!r}"
        for f, e in readings.items()
        if e != usual and not e.endswith(" empty")
    ]


def _atomic_save(img: Image.Image, path: Path) -> None:
    """Save as PNG atomically: no half-written files."""
    atomic_write(path, lambda handle: img.save(handle, format="PNG"))


def write_mask_png(path: str | os.PathLike[str], mask01: np.ndarray) -> None:
    """Write a binary mask as a 0/255 8-bit grayscale PNG, atomically.

    0/255 (not 0/1) so the file is viewable and matches what the release's loader expects.
    Only {0, 1} or boolean input is accepted: a probability map must be thresholded by the caller.
    """
    arr = np.asarray(mask01)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype != np.bool_ and arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("mask values must be 0/1 (threshold probabilities before writing)")
    _atomic_save(Image.fromarray((arr > 0).astype(np.uint8) * 255), Path(path))


def write_image_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB array as a PNG, atomically."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {arr.shape} dtype {arr.dtype}")
    _atomic_save(Image.fromarray(np.ascontiguousarray(arr)), Path(path))
