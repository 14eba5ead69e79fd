"""The release augmentation pipeline on albumentations 2.x: parameters, ranges, image/mask alignment."""

from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from gmseg.data.transforms import RELEASE_AUGMENTATIONS, build_transform
from gmseg.errors import ConfigError


def _scene(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Dark image with a bright off-centre rectangle drawn identically in the mask (asymmetric on purpose,
    so a flip or rotation applied to one target only would show)."""
    image = np.full((h, w, 3), 20.0, dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.uint8)
    image[8:26, 10:40] = 235.0
    mask[8:26, 10:40] = 1
    return image, mask


def test_release_pipeline_matches_release_parameters() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warnings (ShiftScaleRotate, always_apply)
        t = build_transform(224, RELEASE_AUGMENTATIONS)
    steps = list(t.transforms)
    names = [type(s).__name__ for s in steps]
    assert names == [
        "ScaleToUnit",
        "HorizontalFlip",
        "VerticalFlip",
        "RandomRotate90",
        "ColorJitter",
        "Affine",
        "Resize",
        "FinalizeTargets",
        "ToTensorV2",
    ]
    assert [s.p for s in steps[1:6]] == [0.5, 0.5, 0.5, 0.2, 0.4]
    jitter, affine, resize = steps[4], steps[5], steps[6]
    assert jitter.brightness == pytest.approx((0.9, 1.1)) and jitter.hue == pytest.approx((-0.1, 0.1))
    assert affine.border_mode == cv2.BORDER_REFLECT_101  # albumentations 1.x ShiftScaleRotate default
    assert affine.mask_interpolation == cv2.INTER_NEAREST
    assert tuple(affine.rotate) == (-20, 20) and tuple(affine.scale["x"]) == pytest.approx((0.9, 1.1))
    assert tuple(affine.translate_percent["x"]) == (-0.15, 0.15)
    assert (resize.height, resize.width) == (224, 224)


def test_eval_pipeline_only_scales_and_resizes() -> None:
    image, mask = _scene()
    for augs in (None, []):
        out = build_transform(32, augs)(image=image, mask=mask)
        assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (1, 32, 32) and out["mask"].dtype == torch.float32
        expected = cv2.resize(image / 255.0, (32, 32), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)
        assert set(out["mask"].unique().tolist()) == {0.0, 1.0}
    # uint8 input is scaled the same way (albumentations 2.x ToFloat would not scale float input)
    out8 = build_transform(32)(image=image.astype(np.uint8), mask=mask)
    assert 0.9 < float(out8["image"].max()) <= 1.0


def test_unknown_augmentation_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_transform(64, ["hflip", "elastic"])
    assert "elastic" in str(info.value)
    for name in RELEASE_AUGMENTATIONS:
        assert name in str(info.value)
    with pytest.raises(ConfigError):
        build_transform(0)


def test_output_ranges_with_strong_colour() -> None:
    image = np.full((32, 32, 3), 255.0, dtype=np.float32)
    image[:, :16, 0] = 0.0
    t = build_transform(32, RELEASE_AUGMENTATIONS, seed=0)
    for _ in range(60):
        out = t(image=image, mask=np.ones((32, 32), np.uint8))
        assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
        assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}


def test_seeded_pipeline_is_reproducible() -> None:
    image, mask = _scene()
    t1 = build_transform(32, RELEASE_AUGMENTATIONS, seed=5)
    t2 = build_transform(32, RELEASE_AUGMENTATIONS, seed=5)
    for _ in range(5):
        a, b = t1(image=image, mask=mask), t2(image=image, mask=mask)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_augmentation_keeps_image_and_mask_aligned() -> None:
    image, mask = _scene()
    ious = []
    varied = set()
    for seed in range(40):
        t = build_transform(64, RELEASE_AUGMENTATIONS, seed=seed)
        out = t(image=image, mask=mask)
        bright = out["image"].mean(dim=0) > 0.5
        target = out["mask"][0] > 0.5
        inter = (bright & target).sum().item()
        union = (bright | target).sum().item()
        ious.append(inter / union)
        varied.add(tuple(target.nonzero().float().mean(0).round().tolist()))
    assert min(ious) > 0.9, ious
    assert len(varied) > 5  # the pipeline really moved things around


def test_compose_type() -> None:
    assert isinstance(build_transform(16), A.Compose)
