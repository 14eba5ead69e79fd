"""Tests for the synthetic ultrasound generator behind ``gmseg demo``.

They pin what the demo relies on: reproducibility from a seed, the on-disk layout real datasets use,
and a lesion that is present, bounded in size, exactly masked and darker than its surroundings (so a
small model can learn it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from gmseg.errors import ConfigError
from gmseg.synthetic import make_synthetic_dataset, synthetic_pair


@pytest.fixture(scope="module")
def samples() -> list[tuple[np.ndarray, np.ndarray]]:
    """50 pairs shared by the statistical tests, generated once to keep the suite fast."""
    rng = np.random.default_rng(2024)
    return [synthetic_pair(rng) for _ in range(50)]


def test_same_seed_gives_identical_arrays() -> None:
    img_a, mask_a = synthetic_pair(np.random.default_rng(5), size=96)
    img_b, mask_b = synthetic_pair(np.random.default_rng(5), size=96)
    assert np.array_equal(img_a, img_b)
    assert np.array_equal(mask_a, mask_b)


def test_different_seed_gives_different_arrays() -> None:
    img_a, mask_a = synthetic_pair(np.random.default_rng(5), size=96)
    img_b, mask_b = synthetic_pair(np.random.default_rng(6), size=96)
    assert not np.array_equal(img_a, img_b)
    assert not np.array_equal(mask_a, mask_b)


@pytest.mark.parametrize("size", [64, 224])
def test_shapes_dtypes_and_values(size: int) -> None:
    image, mask = synthetic_pair(np.random.default_rng(0), size=size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    # Grey replicated into RGB, and the full 8-bit range is actually used (not a washed-out image).
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    assert image.min() < 30 and image.max() > 220


def test_lesion_fraction_in_range_and_inside_image(samples: list[tuple[np.ndarray, np.ndarray]]) -> None:
    for _, mask in samples:
        assert 0.03 <= mask.mean() <= 0.25
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any(), "lesion must not touch the image border"
        assert ndi.label(mask)[1] == 1, "exactly one connected lesion"


def test_lesion_darker_than_surrounding_ring(samples: list[tuple[np.ndarray, np.ndarray]]) -> None:
    diffs = []
    for image, mask in samples:
        grey = image[..., 0].astype(np.float64)
        lesion = mask.astype(bool)
        ring = ndi.binary_dilation(lesion, iterations=8) & ~ndi.binary_dilation(lesion, iterations=2)
        diffs.append(grey[ring].mean() - grey[lesion].mean())
        # Speckle inside the lesion too: it is textured, not a flat dark blob.
        assert grey[ndi.binary_erosion(lesion, iterations=2)].std() > 5.0
    diffs_arr = np.array(diffs)
    assert (diffs_arr > 0).all()
    # Moderate contrast: clearly darker on average, but far from black-on-white.
    assert 15.0 < diffs_arr.mean() < 90.0


def test_generation_is_fast_enough() -> None:
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for _ in range(20):
        synthetic_pair(rng)
    # Budget is 100 images in < 2 s; allow generous slack for a loaded shared CI machine.
    assert time.perf_counter() - start < 2.0


def test_rejects_bad_size() -> None:
    with pytest.raises(ConfigError):
        synthetic_pair(np.random.default_rng(0), size=8)


def test_make_synthetic_dataset_layout(tmp_path: Path) -> None:
    out = make_synthetic_dataset(tmp_path / "ds", n_train=4, n_test=2, size=64, seed=3)
    assert out == tmp_path / "ds"
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert set(split) == {"train", "test"}
    assert len(split["train"]) == 4 and len(split["test"]) == 2
    assert not set(split["train"]) & set(split["test"])
    names = split["train"] + split["test"]
    assert all("." not in n for n in names)
    for name in names:
        with Image.open(out / "images" / f"{name}.png") as im:
            assert im.mode == "RGB" and im.size == (64, 64)
        with Image.open(out / "masks" / f"{name}.png") as m:
            assert m.mode == "L" and m.size == (64, 64)
            assert set(np.unique(np.asarray(m)).tolist()) == {0, 255}
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(names)
    assert sorted(p.stem for p in (out / "masks").iterdir()) == sorted(names)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "no temp files left behind"


def test_make_synthetic_dataset_is_deterministic_and_overwrites(tmp_path: Path) -> None:
    a = make_synthetic_dataset(tmp_path / "a", n_train=2, n_test=1, size=48, seed=7)
    b = make_synthetic_dataset(tmp_path / "b", n_train=2, n_test=1, size=48, seed=7)
    first = (a / "images" / "case_000.png").read_bytes()
    assert first == (b / "images" / "case_000.png").read_bytes()
    # A case's content depends on the seed and its index only, not on the dataset's size.
    c = make_synthetic_dataset(tmp_path / "c", n_train=5, n_test=0, size=48, seed=7)
    assert (c / "images" / "case_001.png").read_bytes() == (a / "images" / "case_001.png").read_bytes()
    # Regenerating with another seed into the same folder replaces files in place.
    make_synthetic_dataset(a, n_train=2, n_test=1, size=48, seed=8)
    assert (a / "images" / "case_000.png").read_bytes() != first
    assert json.loads((a / "split.json").read_text(encoding="utf-8"))["test"] == ["case_002"]


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_test": -1}, {"size": 16}, {"n_train": 2.5}])
def test_make_synthetic_dataset_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        make_synthetic_dataset(tmp_path / "bad", **kwargs)
