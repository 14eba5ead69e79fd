"""Reading images and masks in whatever format a dataset ships, and writing the prepared PNGs.

Every reader returns one canonical array (RGB uint8 image, {0,1} uint8 mask) so the rest of the package
never has to care about file formats, modes, bit depths or palettes. Which reader reads a file is decided
by its ending, in :mod:`gmseg.data.readers` (the one registry of formats); this module holds what is the
same for every format: folder indexing by stem, and the one mask rule (:func:`inspect_mask`). Failures
raise :class:`DataError` naming the file, because a traceback from deep inside an image library does not
tell a user which of 10,000 files is bad.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmseg.data import readers
from gmseg.data.readers import bit_depth, split_name, suffix_rank
from gmseg.errors import DataError
from gmseg.fileio import atomic_write
from gmseg.labels import LabelSet

__all__ = [
    "IMAGE_SUFFIXES",
    "MaskReading",
    "inspect_mask",
    "find_file",
    "index_folder",
    "read_image",
    "read_label_map",
    "read_mask",
    "read_size",
    "split_name",
    "write_image_png",
    "write_label_map_png",
    "write_mask_png",
]

IMAGE_SUFFIXES: tuple[str, ...] = readers.SUFFIXES
"""Recognised file suffixes, in order of preference when one stem has several files (.png first)."""

LOSSY_SUFFIXES: tuple[str, ...] = tuple(s for f in readers.FORMATS if f.lossy for s in f.suffixes)

__all__ += ["bit_depth"]  # re-exported: it used to live here


def is_image_file(path: Path) -> bool:
    """True for a visible file with a recognised image suffix (hidden files such as ._x.png are skipped)."""
    return readers.find_format(path) is not None and not Path(path).name.startswith(".")


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
            stem = split_name(path)[0]
            old = index.get(stem)
            if old is None or (suffix_rank(path), path.name) < (suffix_rank(old), old.name):
                index[stem] = path
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
    matches = [p for p in folder.iterdir() if split_name(p)[0] == stem and is_image_file(p) and p.is_file()]
    return min(matches, key=lambda p: (suffix_rank(p), p.name)) if matches else None


def read_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) from the file header, after the format's integrity check; no pixel decoding.

    Lets dataset checks cover thousands of files in seconds; truncated or garbage files fail here.
    """
    return readers.read_size(path)


def read_image(path: str | os.PathLike[str], notes: list[str] | None = None) -> np.ndarray:
    """Read any supported image as an (H, W, 3) uint8 RGB array.

    Gray, palette, LA/RGBA (alpha dropped, not composited: alpha carries no anatomy), CMYK/YCbCr, 16-bit
    and float images all end as RGB, because the autoencoder takes 3-channel input. How high-bit-depth
    data was scaled (:func:`bit_depth`) is appended to ``notes``.
    """
    return readers.read_image(path, notes)


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


def _lossy(path: Path) -> bool:
    fmt = readers.find_format(path)
    return fmt is not None and fmt.lossy


def default_mask_threshold(path: Path) -> float | None:
    """JPEG masks carry compression noise around edges: count only pixels above half scale."""
    return 0.5 if _lossy(Path(path)) else None


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
    raw = readers.read_mask_data(path)
    data, full_scale, alpha, mode = raw.data, raw.full_scale, raw.alpha, raw.mode
    if threshold is None:
        threshold = default_mask_threshold(path)
    fraction = 0.0 if threshold is None else float(threshold)
    fg = data > fraction * full_scale
    if fg.ndim == 3:
        fg = fg.any(axis=2)
    if _lossy(path):
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


# ------------------------------------------------------------------------------ multi-class label maps


def _label_map_error(path: Path, problem: str, labels: LabelSet) -> DataError:
    """A label map that cannot be read exactly, with the fix: a lossless PNG of the declared class values."""
    declared = ", ".join(f"{n}={v}" for n, v in zip(labels.names, labels.values))
    return DataError(
        f"cannot read label map {path}",
        [
            f"{path}: {problem}; save label maps as PNG (8-bit grayscale or palette) with values "
            f"0..{labels.num_classes - 1}, one per class ({declared})"
        ],
    )


def _gray_values(path: Path, raw: readers.MaskData, labels: LabelSet) -> np.ndarray:
    """One integer value per pixel from gray, 1-bit, 16-bit, float or equal-channel RGB mask data."""
    data = raw.data
    if data.ndim == 3:
        if data.shape[2] > 1 and not (data == data[..., :1]).all():
            differ = data[np.any(data != data[..., :1], axis=2)][0]
            raise _label_map_error(
                path,
                f"{raw.mode} colour mask (e.g. colour {tuple(int(c) for c in differ)}): colours are no class values",
                labels,
            )
        data = data[..., 0]
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.rint(data)):
        raise _label_map_error(path, f"{raw.mode} mask with fractional values (a probability map?)", labels)
    if data.size and (data.min() < 0 or data.max() > 255):
        raise _label_map_error(path, f"{raw.mode} values {data.min():g}..{data.max():g} exceed 0..255", labels)
    return data.astype(np.uint8)


def read_label_map(path: str | os.PathLike[str], labels: LabelSet) -> np.ndarray:
    """An (H, W) uint8 map of class values, exactly as the file stores them (no threshold, no binarising).

    For a multi-class label set (binary masks are read by :func:`read_mask`). Read: 8-bit/16-bit/1-bit
    gray (TIFF too), palette PNGs (the palette *index* is the value, whatever its colour) and RGB whose
    three channels are equal. Refused, naming the file: colour masks, lossy (JPEG) files, and any value that
    is not a declared class (:meth:`gmseg.labels.LabelSet.check_values`).
    """
    path = Path(path)
    if _lossy(path):
        raise _label_map_error(path, "a lossy (JPEG) file: compression changes class values along every edge", labels)
    raw = readers.read_mask_data(path)
    # In a palette label map the index is the class value, whatever its colour.
    values = raw.indices if raw.indices is not None else _gray_values(path, raw, labels)
    labels.check_values(values, path)
    return np.ascontiguousarray(values, dtype=np.uint8)


def write_label_map_png(path: str | os.PathLike[str], values: np.ndarray, labels: LabelSet) -> None:
    """Write class values as a palette PNG, atomically: exact values, and viewable in each class's colour.

    Palette index = class value, its colour = the class's :attr:`~gmseg.labels.LabelSet.colours` entry
    (other entries black). Every value must be a declared class of ``labels``.
    """
    from PIL import Image

    arr = _plane(values)
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"label map values must be integers (class values), got dtype {arr.dtype}")
    if max(labels.values) > 255:
        raise ValueError(f"a palette PNG holds values 0..255; labels {labels.to_labels()} do not fit")
    labels.check_values(arr, path)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[list(labels.values)] = labels.colours
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    img.putpalette(palette.ravel().tolist())
    atomic_write(Path(path), lambda handle: img.save(handle, format="PNG"))


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


def _plane(mask: np.ndarray) -> np.ndarray:
    """(H, W) from (H, W), (1, H, W) or (H, W, 1): writers accept a model's or a transform's layout."""
    arr = np.asarray(mask)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {arr.shape}")
    return arr


def write_mask_png(path: str | os.PathLike[str], mask01: np.ndarray) -> None:
    """Write a binary mask as a 0/255 8-bit grayscale PNG, atomically.

    0/255 (not 0/1) so the file is viewable and matches what the release's loader expects.
    Only {0, 1} or boolean input is accepted: a probability map must be thresholded by the caller.
    """
    arr = _plane(mask01)
    if arr.dtype != np.bool_ and arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("mask values must be 0/1 (threshold probabilities before writing)")
    readers.write_array(path, (arr > 0).astype(np.uint8) * 255, suffix=readers.OUTPUT_2D_SUFFIX)


def write_image_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB array as a PNG, atomically."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {arr.shape} dtype {arr.dtype}")
    readers.write_array(path, arr, suffix=readers.OUTPUT_2D_SUFFIX)
