"""Resizing masks and pictures for scoring and reports, with the resampling the GMS release used (PIL).

Training and inference resize through :mod:`gmseg.data.transforms` (albumentations/OpenCV); this is only
for arrays already read from files: scoring at a fixed size (the release's ``valid.py`` resizes both masks
with PIL NEAREST, which OpenCV's nearest does not reproduce pixel for pixel) and shrinking report panels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["resize_image", "resize_label_map", "resize_mask"]


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A binary (H, W) mask (bool or 0/1) resized to ``size`` = (width, height), nearest neighbour, as bool."""
    img8 = Image.fromarray(np.asarray(mask).astype(bool).astype(np.uint8) * np.uint8(255))
    return np.asarray(img8.resize(size, Image.NEAREST)) > 0


def resize_label_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W) map of class values resized to ``size`` = (width, height), nearest neighbour: no value
    is invented between two classes."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8)).resize(size, Image.NEAREST))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 picture resized to ``size`` = (width, height), bilinear."""
    return np.asarray(Image.fromarray(np.asarray(image)).resize(size, Image.BILINEAR))
