"""Augmentation and resizing, reproducing the release's albumentations pipeline on albumentations 2.x.

The release (albumentations 1.x) used ToFloat(255), flips, RandomRotate90, ColorJitter,
ShiftScaleRotate and Resize. Two 2.x changes would silently alter it, so this module compensates:

* ``A.ToFloat`` returns float32 input unchanged in 2.x; the release fed float32 0..255 arrays, which 1.x
  divided by 255. :class:`ScaleToUnit` always divides, as 1.x did.
* ``A.ShiftScaleRotate`` is deprecated (warns) and its default border changed from
  ``BORDER_REFLECT_101`` to ``BORDER_CONSTANT``. The equivalent ``A.Affine`` is used with the 1.x border.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from gmseg.errors import ConfigError

__all__ = ["RELEASE_AUGMENTATIONS", "FinalizeTargets", "ScaleToUnit", "build_transform"]

RELEASE_AUGMENTATIONS: list[str] = ["hflip", "vflip", "rot90", "color_jitter", "shift_scale_rotate"]


class ScaleToUnit(A.ImageOnlyTransform):
    """Divide the image by ``max_value`` whatever its dtype (the albumentations 1.x ``ToFloat`` semantics)."""

    def __init__(self, max_value: float = 255.0, p: float = 1.0):
        super().__init__(p=p)
        self.max_value = float(max_value)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return (img.astype(np.float32) / np.float32(self.max_value)).astype(np.float32, copy=False)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_value",)


class FinalizeTargets(A.DualTransform):
    """Clip the image to [0, 1] float32 and turn the mask into a (H, W, 1) float32 {0, 1} array.

    Colour jitter can push float pixels slightly outside [0, 1]; the autoencoder expects that range.
    The channel axis makes ``ToTensorV2(transpose_mask=True)`` produce the (1, H, W) mask tensor.
    """

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        binary = (mask > 0).astype(np.float32)
        return binary[..., None] if binary.ndim == 2 else binary

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


def _augmentation(name: str) -> A.BasicTransform:
    if name == "hflip":
        return A.HorizontalFlip(p=0.5)
    if name == "vflip":
        return A.VerticalFlip(p=0.5)
    if name == "rot90":
        return A.RandomRotate90(p=0.5)
    if name == "color_jitter":
        return A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.2)
    if name == "shift_scale_rotate":
        # = 1.x ShiftScaleRotate(shift_limit=0.15, scale_limit=0.1, rotate_limit=20, p=0.4): independent
        # x/y shifts in +-15 %, scale 1 +- 0.1, rotation +-20 deg, reflect-101 border (the 1.x default),
        # nearest-neighbour for the mask so it stays binary.
        return A.Affine(
            translate_percent={"x": (-0.15, 0.15), "y": (-0.15, 0.15)},
            scale=(0.9, 1.1),
            rotate=(-20, 20),
            shear=(0, 0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_REFLECT_101,
            p=0.4,
        )
    raise AssertionError(name)  # unreachable: names are validated first


def build_transform(image_size: int, augmentations: list[str] | None = None, *, seed: int | None = None) -> A.Compose:
    """The training (``augmentations`` given) or evaluation (None / []) pipeline.

    Input: image (H, W, 3) float32 in 0..255 (uint8 also works), mask (H, W) uint8 {0, 1}.
    Output: image float32 tensor (3, S, S) in [0, 1], mask float32 tensor (1, S, S) in {0, 1}.
    Augmentations run in the release's order whatever order they are listed in. ``seed`` fixes the
    random stream (albumentations 2.x ignores global seeds).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    requested = list(augmentations or [])
    unknown = [a for a in requested if a not in RELEASE_AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; valid names: {RELEASE_AUGMENTATIONS}")
    steps: list[A.BasicTransform] = [ScaleToUnit(max_value=255.0)]
    steps += [_augmentation(name) for name in RELEASE_AUGMENTATIONS if name in requested]
    steps += [
        A.Resize(
            int(image_size), int(image_size), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
        ),
        FinalizeTargets(),
        ToTensorV2(transpose_mask=True),
    ]
    return A.Compose(steps, seed=seed)
