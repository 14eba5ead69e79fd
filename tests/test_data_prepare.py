"""Converters for the five paper datasets and for user folders, on tiny synthetic raw layouts that use
each dataset's real file-naming scheme."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import need
from gmseg.data.dataset import check_dataset
from gmseg.data.io import read_mask
from gmseg.data.prepare import PrepareReport, prepare_dataset, prepare_folders
from gmseg.data.splits import load_split
from gmseg.errors import ConfigError, DataError

SHARED = Path(__file__).parents[1] / ".." / "shared"
S = 32


def _image(path: Path, size: tuple[int, int] = (S, S), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _mask(
    path: Path, box: tuple[int, int, int, int] = (4, 12, 4, 12), value: int = 255, size: tuple[int, int] = (S, S)
) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(size, np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = value
    Image.fromarray(m).save(path)
    return (m > 0).astype(np.uint8)


def _names(out: Path, sub: str = "images") -> list[str]:
    return sorted(p.stem for p in (out / sub).iterdir())


def _check_output(out: Path, report: PrepareReport, names: list[str]) -> None:
    assert report.n_pairs == len(names)
    assert _names(out) == sorted(names) and _names(out, "masks") == sorted(names)
    for name in names:
        image_path, mask_path = out / "images" / f"{name}.png", out / "masks" / f"{name}.png"
        with Image.open(image_path) as img, Image.open(mask_path) as msk:
            assert img.mode == "RGB" and msk.mode == "L" and img.size == msk.size
            assert set(np.unique(np.asarray(msk)).tolist()) <= {0, 255}
    split = json.loads((out / "split.json").read_text())
    assert sorted(sum(split.values(), [])) == sorted(names)
    assert report.split_counts == {k: len(v) for k, v in split.items()}
    check_dataset(out)
    assert not [p for p in out.rglob("*.tmp")]
    assert report.summary().startswith(f"prepared {len(names)}")


def test_busi_kaggle_layout_or_merges_extra_masks(tmp_path: Path) -> None:
    raw = tmp_path / "archive" / "Dataset_BUSI_with_GT"
    _image(raw / "benign" / "benign (1).png")
    _mask(raw / "benign" / "benign (1)_mask.png")
    _image(raw / "benign" / "benign (2).png")
    first = _mask(raw / "benign" / "benign (2)_mask.png", (2, 8, 2, 8))
    second = _mask(raw / "benign" / "benign (2)_mask_1.png", (20, 30, 20, 30))
    _image(raw / "benign" / "benign (3).png")  # no mask: reported, not converted
    _image(raw / "malignant" / "malignant (10).png")
    _mask(raw / "malignant" / "malignant (10)_mask.png")
    _image(raw / "normal" / "normal (1).png")  # normal class: excluded like the paper
    _mask(raw / "normal" / "normal (1)_mask.png", value=0)

    out = tmp_path / "busi"
    report = prepare_dataset("busi", tmp_path / "archive", out, test_fraction=0.34, seed=1)
    _check_output(out, report, ["benign_1", "benign_2", "malignant_10"])
    np.testing.assert_array_equal(read_mask(out / "masks" / "benign_2.png"), first | second)
    assert any("benign (3).png" in u for u in report.unmatched)
    assert report.split_counts == {"train": 2, "test": 1}

    # raw pointing directly at the folder holding the class folders works as well
    report2 = prepare_dataset("BUSI", raw, tmp_path / "busi2")
    assert report2.n_pairs == 3


def test_glas_instance_labels_become_binary(tmp_path: Path) -> None:
    raw = tmp_path / "Warwick QU Dataset (Released 2016_07_08)"
    raw.mkdir()
    (raw / "Grade.csv").write_text("name, patient ID, grade\n")
    labels = np.zeros((S, S), np.uint8)
    labels[2:8, 2:8] = 1
    labels[10:20, 12:30] = 2
    labels[25:30, 1:5] = 17
    for name in ("train_1", "testA_1", "testB_1"):
        _image(raw / f"{name}.bmp")
        Image.fromarray(labels).save(raw / f"{name}_anno.bmp")
    _image(raw / "train_2.bmp")  # no annotation
    out = tmp_path / "glas"
    report = prepare_dataset("glas", raw, out)
    _check_output(out, report, ["testA_1", "testB_1", "train_1"])
    np.testing.assert_array_equal(read_mask(out / "masks" / "train_1.png"), (labels > 0).astype(np.uint8))
    assert any("train_2.bmp" in u for u in report.unmatched)


def test_ham10000_dataverse_and_isic2018_layouts(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _image(raw / "HAM10000_images_part_1" / "ISIC_0024306.jpg")
    _image(raw / "HAM10000_images_part_2" / "ISIC_0032220.jpg")
    _mask(raw / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0024306_segmentation.png")
    _mask(raw / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0032220_segmentation.png")
    _image(raw / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg")
    (raw / "ISIC2018_Task1-2_Training_Input" / "ATTRIBUTION.txt").write_text("x")
    _mask(raw / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png")
    _image(raw / "HAM10000_images_part_2" / "ISIC_0099999.jpg")  # no segmentation
    _image(raw / "ham10000_images_part_1" / "ISIC_0024306.jpg")  # Kaggle ships identical copies
    out = tmp_path / "ham"
    report = prepare_dataset("ham10000", raw, out)
    _check_output(out, report, ["ISIC_0000000", "ISIC_0024306", "ISIC_0032220"])
    assert any("ISIC_0099999" in u for u in report.unmatched)
    assert len(report.unmatched) == 1


def test_kvasir_instrument_layout_and_output_inside_raw(tmp_path: Path) -> None:
    raw = tmp_path / "kvasir-instrument"
    ids = ["ckcu8ty6z00003b5yzfaezbs5", "ckd4kgex0000h3b5yhpwjd11l"]
    for i, name in enumerate(ids):
        _image(raw / "images" / f"{name}.jpg", seed=i)
        _mask(raw / "masks" / f"{name}.png")
    _image(raw / "images" / "ckcxxxxxxxxxxxxxxxxxxxxxx.jpg")
    out = raw / "prepared"  # output below raw must not be picked up on a re-run
    report = prepare_dataset("kvasir-instrument", tmp_path, out)
    _check_output(out, report, ids)
    with pytest.raises(ConfigError, match="not empty"):  # a re-run never mixes into an existing dataset
        prepare_dataset("kvasir-instrument", tmp_path, out)
    report = prepare_dataset("kvasir-instrument", tmp_path, out, overwrite=True)
    _check_output(out, report, ids)
    assert not any("duplicate" in u for u in report.unmatched)


def test_bus_udiat_layout(tmp_path: Path) -> None:
    raw = tmp_path / "BUS_Dataset_B"
    for name in ("000001", "000002", "000295"):
        _image(raw / "original" / f"{name}.png")
        _mask(raw / "GT" / f"{name}.png")
    out = tmp_path / "bus"
    report = prepare_dataset("bus", tmp_path, out)
    _check_output(out, report, ["000001", "000002", "000295"])


def test_unknown_dataset_and_bad_raw(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        prepare_dataset("isic", tmp_path, tmp_path / "out")
    for name in ("busi", "bus", "glas", "ham10000", "kvasir-instrument"):
        assert name in str(info.value)
    with pytest.raises(DataError, match="nowhere"):
        prepare_dataset("busi", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DataError, match="benign"):
        prepare_dataset("busi", tmp_path, tmp_path / "out")


def test_release_pickle_split_is_filtered_and_missing_names_reported(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for name in ("000001", "000002", "000003"):
        _image(raw / "original" / f"{name}.png")
        _mask(raw / "GT" / f"{name}.png")
    pkl = tmp_path / "bus_train_test_names.pkl"
    pkl.write_bytes(
        pickle.dumps({"train": {"name_list": ["000001", "000002"]}, "test": {"name_list": ["000003", "000310"]}})
    )
    out = tmp_path / "out"
    report = prepare_dataset("bus", raw, out, split=pkl)
    assert load_split(out / "split.json") == {"train": ["000001", "000002"], "test": ["000003"]}
    assert report.split_counts == {"train": 2, "test": 1}
    assert any("000310" in u for u in report.unmatched)

    js = tmp_path / "s.json"
    js.write_text(json.dumps({"train": ["000002"], "val": ["000001"], "test": ["000003"]}))
    report = prepare_dataset("bus", raw, tmp_path / "out2", split=js)
    assert report.split_counts == {"train": 1, "val": 1, "test": 1}


def test_size_mismatch_and_corrupt_files_write_nothing(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _image(raw / "original" / "000001.png")
    _mask(raw / "GT" / "000001.png", size=(S, S + 3))
    _image(raw / "original" / "000002.png")
    (raw / "GT" / "000002.png").write_bytes(b"not an image")
    _image(raw / "original" / "000003.png")
    _mask(raw / "GT" / "000003.png")
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare_dataset("bus", raw, out)
    msg = str(info.value)
    assert str(raw / "GT" / "000001.png") in msg and str(raw / "GT" / "000002.png") in msg
    assert len(info.value.problems) == 2
    assert not out.exists()


def test_prepare_folders_pairs_by_stem_with_suffix(tmp_path: Path) -> None:
    images, masks = tmp_path / "imgs", tmp_path / "lesions"
    _image(images / "IMD002.jpg")
    _mask(masks / "IMD002_lesion.bmp")
    _image(images / "IMD003.tif")
    jpeg_mask = _mask(masks / "IMD003_lesion.jpg")  # lossy mask: thresholded at half scale
    _image(images / "IMD005.png")  # no mask
    _mask(masks / "IMD004_lesion.png")  # no image
    _mask(masks / "IMD006.png")  # lacks the suffix
    out = tmp_path / "out"
    report = prepare_folders(images, masks, out, mask_suffix="_lesion", test_fraction=0.5, seed=0)
    _check_output(out, report, ["IMD002", "IMD003"])
    np.testing.assert_array_equal(read_mask(out / "masks" / "IMD003.png"), jpeg_mask)
    joined = "\n".join(report.unmatched)
    for fragment in ("IMD005.png", "IMD004_lesion.png", "IMD006.png"):
        assert fragment in joined
    assert report.dataset == "folders"


def test_prepare_folders_same_folder_and_zero_pairs(tmp_path: Path) -> None:
    both = tmp_path / "both"
    _image(both / "a.png")
    _mask(both / "a_mask.png")
    report = prepare_folders(both, both, tmp_path / "out", mask_suffix="_mask")
    assert report.n_pairs == 1 and _names(tmp_path / "out") == ["a"]
    with pytest.raises(ConfigError):
        prepare_folders(both, both, tmp_path / "out2")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError):
        prepare_folders(both, empty, tmp_path / "out3")


# Each converter's output names must match the paper's split files: build a raw layout from the first
# names of each release split, in that dataset's own file naming, and check they resolve.


def _busi_file(name: str) -> str:
    cls, k = name.split("_")
    return f"{cls}/{cls} ({k})"


_RAW_LAYOUT = {  # dataset -> name -> (image file, mask file) relative to raw
    "busi": lambda n: (f"{_busi_file(n)}.png", f"{_busi_file(n)}_mask.png"),
    "glas": lambda n: (f"{n}.bmp", f"{n}_anno.bmp"),
    "ham10000": lambda n: (
        f"HAM10000_images_part_1/{n}.jpg",
        f"HAM10000_segmentations_lesion_tschandl/{n}_segmentation.png",
    ),
    "kvasir-instrument": lambda n: (f"kvasir-instrument/images/{n}.jpg", f"kvasir-instrument/masks/{n}.png"),
    "bus": lambda n: (f"BUS_Dataset_B/original/{n}.png", f"BUS_Dataset_B/GT/{n}.png"),
}
_PKL = {"busi": "busi", "glas": "glas", "ham10000": "ham10000", "kvasir-instrument": "kvasir", "bus": "bus"}


@pytest.mark.parametrize("dataset", sorted(_RAW_LAYOUT))
def test_converter_names_match_release_split(tmp_path: Path, dataset: str) -> None:
    pkl = SHARED / "splits" / f"{_PKL[dataset]}_train_test_names.pkl"
    if not pkl.is_file():
        pytest.skip(f"shared split file not available: {pkl}")
    release = load_split(pkl)
    chosen = release["train"][:2] + release["test"][:1]
    raw = tmp_path / "raw"
    for name in chosen:
        image_rel, mask_rel = _RAW_LAYOUT[dataset](name)
        _image(raw / image_rel)
        _mask(raw / mask_rel)
    report = prepare_dataset(dataset, raw, tmp_path / "out", split=pkl)
    assert report.n_pairs == 3
    assert report.split_counts == {"train": 2, "test": 1}
    n_release = len(release["train"]) + len(release["test"])
    assert len(report.unmatched) == n_release - 3


def test_prepare_folders_on_shared_kvasir_sample(tmp_path: Path) -> None:
    kvasir = SHARED / "data" / "kvasir-seg-5"
    if not (kvasir / "images").is_dir():
        pytest.skip(f"shared Kvasir-SEG sample not available at {kvasir}")
    out = tmp_path / "kvasir"
    report = prepare_folders(kvasir / "images", kvasir / "masks", out, test_fraction=0.2, seed=0)
    assert report.n_pairs == 5 and report.split_counts == {"train": 4, "test": 1} and not report.unmatched
    for name in sorted(p.stem for p in (kvasir / "masks").iterdir()):
        np.testing.assert_array_equal(
            read_mask(out / "masks" / f"{name}.png"), read_mask(kvasir / "masks" / f"{name}.png")
        )


def test_bus_real_download_layout_with_1bit_masks_and_an_identical_image(tmp_path: Path) -> None:
    """UDIAT's download: mode '1' masks beside 8-bit ones, and two names sharing one image file."""
    raw = tmp_path / "bus-udiat"
    _image(raw / "original" / "000001.png", seed=1)
    _image(raw / "original" / "000032.png", seed=2)
    _image(raw / "original" / "000040.png", seed=2)  # the same bytes as 000032
    _mask(raw / "GT" / "000001.png")
    for name, box in (("000032", (4, 12, 4, 12)), ("000040", (4, 12, 4, 10))):
        m = np.zeros((S, S), bool)
        m[box[0] : box[1], box[2] : box[3]] = True
        Image.fromarray(m).convert("1").save(raw / "GT" / f"{name}.png")
    with Image.open(raw / "GT" / "000032.png") as check:
        assert check.mode == "1"
    split = tmp_path / "bus_train_test_names.pkl"
    split.write_bytes(pickle.dumps({"train": {"name_list": ["000032", "000040"]}, "test": {"name_list": ["000001"]}}))
    out = tmp_path / "bus"
    report = prepare_dataset("bus", raw, out, split=split)
    _check_output(out, report, ["000001", "000032", "000040"])
    assert read_mask(out / "masks" / "000032.png").sum() == 64  # the 1-bit mask read as lesion, not empty
    assert len(report.duplicates) == 1
    line = report.duplicates[0]
    assert "000032, 000040" in line and "IoU 0.75" in line and "['train']" in line and "LEAK" not in line
    assert "identical images" in report.summary()


def test_identical_images_across_train_and_test_are_flagged_as_a_leak(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        _image(images / f"{name}.png", seed=seed)
        _mask(masks / f"{name}.png")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a", "c"], "test": ["b"]}))
    report = prepare_folders(images, masks, tmp_path / "out", split=split)
    assert len(report.duplicates) == 1 and "identical masks" in report.duplicates[0]
    assert "LEAK" in report.duplicates[0]


def test_prepare_folders_thresholds_jpeg_masks_with_a_seeded_split(tmp_path: Path) -> None:
    """Kvasir-SEG ships JPEG masks: compression noise around the lesion must not become lesion."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(6):
        _image(images / f"p{i}.jpg", seed=i)
        m = np.zeros((S, S), np.uint8)
        m[8:24, 8:24] = 255
        noisy = m.copy()
        noisy[2, 2] = 40  # a compression artefact far from the lesion
        masks.mkdir(exist_ok=True)
        Image.fromarray(noisy).save(masks / f"p{i}.jpg", quality=60)
    first = prepare_folders(images, masks, tmp_path / "one", test_fraction=0.34, seed=7)
    second = prepare_folders(images, masks, tmp_path / "two", test_fraction=0.34, seed=7)
    assert load_split(tmp_path / "one" / "split.json") == load_split(tmp_path / "two" / "split.json")
    assert first.split_counts == second.split_counts == {"train": 4, "test": 2}
    mask = read_mask(tmp_path / "one" / "masks" / "p0.png")
    assert mask[2, 2] == 0 and abs(int(mask.sum()) - 256) <= 16


def test_prepare_folders_on_kvasir_seg_jpeg_masks_with_a_seeded_split(tmp_path: Path) -> None:
    """The 998 Kvasir-SEG pairs: JPEG masks (compression grey levels) become clean 0/255 PNGs by the half-scale
    rule, and the split is seeded (no official one ships)."""
    kvasir = need(SHARED / "data" / "kvasir-seg-256")
    report = prepare_folders(kvasir / "images", kvasir / "masks", tmp_path / "k", test_fraction=0.12, seed=0)
    assert report.n_pairs == 998 and not report.unmatched
    assert report.split_counts["test"] == 120 and report.split_counts["train"] == 878
    for jpeg in sorted((kvasir / "masks").glob("*.jpg"))[:25]:
        grey = np.asarray(Image.open(jpeg).convert("L"))
        assert len(np.unique(grey)) > 2  # compression noise: this is what the rule must clean up
        written = np.asarray(Image.open(tmp_path / "k" / "masks" / f"{jpeg.stem}.png"))
        assert set(np.unique(written)) <= {0, 255}
        np.testing.assert_array_equal(written > 0, np.asarray(Image.open(jpeg)).max(axis=-1) > 127)
    from gmseg.data.splits import random_split

    split = load_split(tmp_path / "k" / "split.json")
    names = sorted(split["train"] + split["test"])
    assert {k: sorted(v) for k, v in random_split(names, test_fraction=0.12, seed=0).items()} == {
        k: sorted(v) for k, v in split.items()
    }, "the same seed gives the same split"
    assert sorted(random_split(names, test_fraction=0.12, seed=1)["test"]) != sorted(split["test"])


def test_layouts_are_one_module_each_and_the_cli_lists_them_from_the_registry(tmp_path: Path, capsys) -> None:
    """The prepare package: one module per public layout, registered in LAYOUTS; the older names (DATASETS,
    FOREGROUND, LABEL_SCHEMES) are read off it, and the CLI's list of layouts is the registry's."""
    from gmseg.cli import main
    from gmseg.data.prepare import DATASETS, FOREGROUND, LABEL_SCHEMES, LAYOUTS

    assert sorted(LAYOUTS) == ["bus", "busi", "glas", "ham10000", "kvasir-instrument"]
    for name, layout in LAYOUTS.items():
        assert layout.name == name and DATASETS[name] is layout.collect and FOREGROUND[name] == layout.foreground
        assert layout.collect.__module__ == f"gmseg.data.prepare.{name.replace('-', '_')}"
    assert sorted(LABEL_SCHEMES["pathology"]) == ["bus", "busi"]
    assert main(["prepare", "nosuch", "--raw", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert ", ".join(sorted(LAYOUTS)) in capsys.readouterr().err
