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

__all__ = [
    "AUGMENTATIONS",
    "CLASS_INDEX_MASK",
    "RELEASE_AUGMENTATIONS",
    "INTENSITIES",
    "FinalizeTargets",
    "ScaleToUnit",
    "StandardizeIntensity",
    "build_transform",
    "class_index_inputs",
]

#: The release's augmentations, in its order (the default of ``data.augmentations``).
RELEASE_AUGMENTATIONS = ["hflip", "vflip", "rot90", "color_jitter", "shift_scale_rotate"]
#: Beyond the release, for scanner shifts (ultrasound gain and speckle): gamma, speckle. Never on by default.
AUGMENTATIONS = [*RELEASE_AUGMENTATIONS, "gamma", "speckle"]
#: Intensity standardisation before everything else, in training and at inference (the model records it):
#: none (the release), equalize (global histogram equalisation), clahe (contrast-limited, per tile).
INTENSITIES = ["none", "equalize", "clahe"]


class ScaleToUnit(A.ImageOnlyTransform):
    """Divide the image by ``max_value`` whatever its dtype (the albumentations 1.x ``ToFloat`` semantics)."""

    def __init__(self, max_value: float = 255.0, p: float = 1.0):
        super().__init__(p=p)
        self.max_value = float(max_value)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return (img.astype(np.float32) / np.float32(self.max_value)).astype(np.float32, copy=False)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_value",)


class StandardizeIntensity(A.ImageOnlyTransform):
    """Histogram standardisation of a 0..255 image (uint8 or float), so that scanners' gains look alike.

    ``equalize``: albumentations' global histogram equalisation of the luminance (colours keep their hue);
    ``clahe``: its contrast-limited adaptive equalisation (8 x 8 tiles, clip limit 2), the usual choice for
    ultrasound. Both work on uint8, so the input is rounded first; the output is float32 0..255. A gray
    image stored as RGB is standardised as one gray channel.
    """

    def __init__(self, method: str = "clahe", p: float = 1.0):
        super().__init__(p=p)
        if method not in INTENSITIES or method == "none":
            raise ConfigError(f"intensity standardisation must be one of {INTENSITIES[1:]}, got {method!r}")
        self.method = method
        self.inner = (
            A.Equalize(mode="cv", by_channels=False, p=1.0)
            if method == "equalize"
            else A.CLAHE(clip_limit=(2.0, 2.0), tile_grid_size=(8, 8), p=1.0)
        )

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if pixels.ndim == 3 and (pixels == pixels[..., :1]).all():  # gray stored as RGB: stay exactly gray
            gray = self.inner(image=np.ascontiguousarray(pixels[..., 0]))["image"]
            return np.repeat(gray[..., None], pixels.shape[2], axis=2).astype(np.float32)
        return self.inner(image=pixels)["image"].astype(np.float32)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("method",)


CLASS_INDEX_MASK = "class_index_mask"
"""Call a pipeline with this key set to True when its mask is a multi-class map of class indices
(0..K-1): :class:`FinalizeTargets` then keeps the indices instead of binarising. Binary calls leave it out."""


class FinalizeTargets(A.DualTransform):
    """Clip the image to [0, 1] float32 and turn the mask into a (H, W, 1) float32 {0, 1} array.

    Colour jitter can push float pixels slightly outside [0, 1]; the autoencoder expects that range.
    The channel axis makes ``ToTensorV2(transpose_mask=True)`` produce the (1, H, W) mask tensor.
    A call with ``class_index_mask=True`` (:data:`CLASS_INDEX_MASK`) keeps a multi-class mask's class
    indices as they are (float32), since binarising them would merge every class into one.
    """

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Whether this call's mask holds class indices: the caller says so, per call, in the data."""
        return {"class_indices": bool(data.get(CLASS_INDEX_MASK, False))}

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)

    def apply_to_mask(self, mask: np.ndarray, class_indices: bool = False, **params: Any) -> np.ndarray:
        target = mask.astype(np.float32) if class_indices else (mask > 0).astype(np.float32)
        return target[..., None] if target.ndim == 2 else target

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


def _has_finalize(transform: Any) -> bool:
    """True when an albumentations pipeline (nested ones included) holds a :class:`FinalizeTargets` step."""
    if isinstance(transform, FinalizeTargets):
        return True
    return isinstance(transform, A.BaseCompose) and any(_has_finalize(t) for t in transform.transforms)


def class_index_inputs(transform: Any) -> dict[str, bool]:
    """The extra call argument that tells ``transform`` its mask holds class indices (empty when it has no
    :class:`FinalizeTargets`: other callables never see an argument they do not know)."""
    return {CLASS_INDEX_MASK: True} if _has_finalize(transform) else {}


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
    if name == "gamma":  # another scanner's gain curve: intensity**gamma, gamma in [0.7, 1.5]
        return A.RandomGamma(gamma_limit=(70, 150), p=0.5)
    if name == "speckle":  # multiplicative per-pixel noise, the texture of ultrasound speckle
        return A.MultiplicativeNoise(multiplier=(0.85, 1.15), per_channel=False, elementwise=True, p=0.3)
    raise AssertionError(name)  # unreachable: names are validated first


def build_transform(
    image_size: int, augmentations: list[str] | None = None, *, intensity: str = "none", seed: int | None = None
) -> A.Compose:
    """The training (``augmentations`` given) or evaluation (None / []) pipeline.

    Input: image (H, W, 3) float32 in 0..255 (uint8 also works), mask (H, W) uint8 {0, 1}.
    Output: image float32 tensor (3, S, S) in [0, 1], mask float32 tensor (1, S, S) in {0, 1}.
    Multi-class: a mask of class indices 0..K-1 (uint8) called with :func:`class_index_inputs` comes out
    as the same indices (every mask step is nearest-neighbour, so no new value appears).
    Augmentations run in the release's order whatever order they are listed in (gamma and speckle,
    which the release lacks, after its own). ``intensity`` (:data:`INTENSITIES`) standardises the image's
    histogram before anything else, in training and evaluation alike. ``seed`` fixes the
    random stream (albumentations 2.x ignores global seeds).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    requested = list(augmentations or [])
    unknown = [a for a in requested if a not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; valid names: {AUGMENTATIONS}")
    if intensity not in INTENSITIES:
        raise ConfigError(f"unknown intensity standardisation {intensity!r}; valid names: {INTENSITIES}")
    steps: list[A.BasicTransform] = [] if intensity == "none" else [StandardizeIntensity(intensity)]
    steps.append(ScaleToUnit(max_value=255.0))
    steps += [_augmentation(name) for name in AUGMENTATIONS if name in requested]
    steps += [
        A.Resize(
            int(image_size), int(image_size), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
        ),
        FinalizeTargets(),
        ToTensorV2(transpose_mask=True),
    ]
    return A.Compose(steps, seed=seed)
