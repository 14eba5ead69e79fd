"""Dataset layout checks (every problem reported at once) and the torch Dataset."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmseg.data.dataset import SegmentationDataset, check_dataset, list_names
from gmseg.data.splits import load_split
from gmseg.data.transforms import RELEASE_AUGMENTATIONS, build_transform
from gmseg.errors import DataError

SHARED = Path(__file__).parents[1] / ".." / "shared"
S = 32


def _pair(
    root: Path,
    name: str,
    size: tuple[int, int] = (S, S),
    img_ext: str = ".png",
    mask_ext: str = ".png",
    mask_size: tuple[int, int] | None = None,
) -> None:
    h, w = size
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "images" / f"{name}{img_ext}")
    mh, mw = mask_size or size
    mask = np.zeros((mh, mw), np.uint8)
    mask[mh // 4 : mh // 2, mw // 4 : mw // 2] = 255
    Image.fromarray(mask).save(root / "masks" / f"{name}{mask_ext}")


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    for name in ("case_b", "case_a", "case_c"):
        _pair(tmp_path / "ds", name)
    return tmp_path / "ds"


def test_list_names_and_clean_check(root: Path) -> None:
    assert list_names(root) == ["case_a", "case_b", "case_c"]
    check_dataset(root)
    check_dataset(root, ["case_a"])


def _problems(root: Path, names: list[str] | None = None) -> str:
    with pytest.raises(DataError) as info:
        check_dataset(root, names)
    return str(info.value)


def test_corrupt_image_is_named(root: Path) -> None:
    bad = root / "images" / "case_a.png"
    bad.write_bytes(b"garbage")
    assert str(bad) in _problems(root)


def test_truncated_mask_is_named(root: Path) -> None:
    bad = root / "masks" / "case_b.png"
    bad.write_bytes(bad.read_bytes()[:40])
    assert str(bad) in _problems(root)


def test_missing_mask_is_named(root: Path) -> None:
    (root / "masks" / "case_b.png").unlink()
    msg = _problems(root)
    assert str(root / "masks" / "case_b") in msg and "mask missing" in msg


def test_missing_image_is_named(root: Path) -> None:
    (root / "images" / "case_c.png").unlink()
    msg = _problems(root)
    assert str(root / "images" / "case_c") in msg and "image missing" in msg


def test_size_mismatch_names_both_files(root: Path) -> None:
    _pair(root, "case_d", size=(S, S), mask_size=(S, S + 4))
    msg = _problems(root)
    assert str(root / "masks" / "case_d.png") in msg and str(root / "images" / "case_d.png") in msg


def test_split_name_without_files_is_named(root: Path) -> None:
    msg = _problems(root, ["case_a", "ghost"])
    assert "ghost" in msg and str(root / "images" / "ghost") in msg


def test_all_problems_reported_at_once(root: Path) -> None:
    (root / "images" / "case_a.png").write_bytes(b"garbage")
    (root / "masks" / "case_b.png").unlink()
    _pair(root, "case_d", mask_size=(S + 1, S))
    with pytest.raises(DataError) as info:
        check_dataset(root, ["case_a", "case_b", "case_c", "case_d", "ghost"])
    assert len(info.value.problems) == 4
    # presence-only check is cheap and ignores contents
    with pytest.raises(DataError) as info:
        check_dataset(root, ["case_a", "case_b", "case_c"], check_sizes=False)
    assert len(info.value.problems) == 1


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="images"):
        list_names(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="masks"):
        check_dataset(tmp_path)


def test_items_without_transform(root: Path) -> None:
    ds = SegmentationDataset(root)
    assert len(ds) == 3 and ds.names == ["case_a", "case_b", "case_c"]
    item = ds[0]
    assert item["name"] == "case_a"
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].shape == (1, S, S) and item["mask"].dtype == torch.float32
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["original_size"].tolist() == [S, S]
    with Image.open(root / "images" / "case_a.png") as img:
        raw = np.asarray(img, dtype=np.float32) / 255.0
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), raw, atol=1e-6)


def test_items_with_transform_and_mixed_formats(tmp_path: Path) -> None:
    _pair(tmp_path, "x", size=(24, 40), img_ext=".jpg", mask_ext=".bmp")
    ds = SegmentationDataset(tmp_path, ["x"], transform=build_transform(16, RELEASE_AUGMENTATIONS, seed=0))
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert item["original_size"].tolist() == [24, 40]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
    assert batch["image"].shape == (1, 3, 16, 16) and batch["name"] == ["x"]


def test_without_masks_and_threshold(tmp_path: Path) -> None:
    _pair(tmp_path, "x")
    (tmp_path / "masks" / "x.png").unlink()
    ds = SegmentationDataset(tmp_path, with_masks=False, transform=build_transform(16))
    assert "mask" not in ds[0] and ds[0]["image"].shape == (3, 16, 16)
    soft = np.zeros((S, S), np.uint8)
    soft[:, :8] = 60
    soft[:, 8:16] = 200
    Image.fromarray(soft).save(tmp_path / "masks" / "x.png")
    assert SegmentationDataset(tmp_path)[0]["mask"].sum().item() == 16 * S
    assert SegmentationDataset(tmp_path, mask_threshold=0.5)[0]["mask"].sum().item() == 8 * S


def test_missing_and_unreadable_files_name_the_file(root: Path) -> None:
    with pytest.raises(DataError, match="ghost"):
        SegmentationDataset(root, ["case_a", "ghost"])
    bad = root / "images" / "case_b.png"
    bad.write_bytes(b"garbage")
    ds = SegmentationDataset(root)
    with pytest.raises(DataError) as info:
        ds[1]
    assert str(bad) in str(info.value)
    _pair(root, "case_d", mask_size=(S, S + 2))
    with pytest.raises(DataError) as info:
        SegmentationDataset(root, ["case_d"])[0]
    assert str(root / "masks" / "case_d.png") in str(info.value)


def test_workers_draw_different_augmentations(tmp_path: Path) -> None:
    # albumentations 2.x keeps its own RNG per Compose: forked workers must be re-seeded or they repeat.
    _pair(tmp_path, "x")
    ds = SegmentationDataset(tmp_path, ["x"] * 8, transform=build_transform(S, RELEASE_AUGMENTATIONS))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)
    torch.manual_seed(0)
    images = [b["image"][0] for b in loader]
    assert any(not torch.equal(images[i], images[i + 1]) for i in range(0, 8, 2))


def test_shared_busi_release_split_resolves() -> None:
    busi = SHARED / "data" / "busi"
    if not (busi / "images").is_dir():
        pytest.skip(f"shared BUSI data not available at {busi}")
    split = load_split(busi / "busi_train_test_names.pkl")
    assert len(split["train"]) == 517 and len(split["test"]) == 130
    names = split["train"] + split["test"]
    assert len(set(names)) == 647
    check_dataset(busi, names)
    item = SegmentationDataset(busi, names[:1], transform=build_transform(64))[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].sum() > 0


def test_shared_kvasir_sample_loads() -> None:
    kvasir = SHARED / "data" / "kvasir-seg-5"
    if not (kvasir / "images").is_dir():
        pytest.skip(f"shared Kvasir-SEG sample not available at {kvasir}")
    check_dataset(kvasir)
    ds = SegmentationDataset(kvasir, transform=build_transform(32))
    assert len(ds) == 5 and all(0 < ds[i]["mask"].mean() < 1 for i in range(len(ds)))
