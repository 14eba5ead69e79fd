"""The data side of multi-class segmentation: label maps of every kind, dataset.json labels in the Dataset,
class indices through the training transforms, check_dataset, and `prepare busi/bus --labels pathology`.
Binary folders must give exactly the items they always gave."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED, need
from gmseg.cli import main
from gmseg.data.dataset import SegmentationDataset, check_dataset, dataset_labels
from gmseg.data.io import read_label_map, read_mask, write_label_map_png
from gmseg.data.prepare import PATHOLOGY, prepare_dataset
from gmseg.data.transforms import CLASS_INDEX_MASK, FinalizeTargets, build_transform
from gmseg.errors import ConfigError, DataError
from gmseg.labels import BINARY, LabelSet

S = 32
THREE = LabelSet(("background", "benign", "malignant"), (0, 1, 2))
AUGMENT = ["hflip", "rot90", "shift_scale_rotate"]
BUSI = SHARED / "data" / "busi"
BUS = SHARED / "data" / "bus-udiat"


def _values(size: tuple[int, int] = (S, S)) -> np.ndarray:
    """A label map with every class of THREE: an off-centre benign box and a malignant box."""
    v = np.zeros(size, np.uint8)
    v[2:10, 3:14] = 1
    v[18:29, 20:27] = 2
    return v


def _image(path: Path, size: tuple[int, int] = (S, S)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _folder(root: Path, masks: dict[str, np.ndarray], labels: LabelSet | None) -> Path:
    """images/ + masks/ (each mask saved as given: uint8 gray) and, unless None, a dataset.json."""
    for name, mask in masks.items():
        _image(root / "images" / f"{name}.png", mask.shape)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    if labels is not None:
        (root / "dataset.json").write_text(json.dumps({"name": "t", "labels": labels.to_labels()}))
    return root


# ------------------------------------------------------------------------------------------- label maps


def _save_palette(path: Path, v: np.ndarray) -> None:
    """A palette PNG whose colours do NOT encode the values (a grey ramp, white at index 0)."""
    img = Image.fromarray(v)
    img.putpalette([c for i in range(256) for c in (255 - i,) * 3])
    img.save(path)


_KINDS = {
    "8-bit gray": lambda p, v: Image.fromarray(v).save(p),
    "8-bit gray TIFF": lambda p, v: Image.fromarray(v).save(p.with_suffix(".tif")),
    "palette": _save_palette,
    "16-bit": lambda p, v: Image.fromarray(v.astype(np.uint16)).save(p),
    "equal-channel RGB": lambda p, v: Image.fromarray(np.repeat(v[..., None], 3, axis=2)).save(p),
}


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_label_maps_of_every_kind_load_with_their_values(tmp_path: Path, kind: str) -> None:
    v = _values()
    _KINDS[kind](tmp_path / "m.png", v)
    path = next(tmp_path.iterdir())
    out = read_label_map(path, THREE)
    assert out.dtype == np.uint8 and out.shape == v.shape
    np.testing.assert_array_equal(out, v)


def test_palette_and_16bit_masks_are_what_the_test_says(tmp_path: Path) -> None:
    """Guard the fixtures above: the files really are mode P and 16-bit."""
    _save_palette(tmp_path / "p.png", _values())
    Image.fromarray(_values().astype(np.uint16)).save(tmp_path / "i.png")
    with Image.open(tmp_path / "p.png") as p, Image.open(tmp_path / "i.png") as i:
        assert p.mode == "P" and i.mode.startswith("I")


def test_declared_values_other_than_0_to_k_minus_1(tmp_path: Path) -> None:
    labels = LabelSet(("background", "liver", "tumour"), (0, 100, 200))
    v = _values() * 100
    Image.fromarray(v).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "m.png", labels), v)
    np.testing.assert_array_equal(labels.to_target(v), _values().astype(np.float32))


def test_an_undeclared_value_names_the_file_and_the_values(tmp_path: Path) -> None:
    v = _values()
    v[0, 0], v[0, 1] = 3, 7
    Image.fromarray(v).save(tmp_path / "bad.png")
    with pytest.raises(ConfigError) as info:
        read_label_map(tmp_path / "bad.png", THREE)
    message = str(info.value)
    assert "bad.png" in message and "[3, 7]" in message and "dataset.json" in message
    # a binary 0/255 mask is no 3-class label map either
    Image.fromarray((_values() > 0).astype(np.uint8) * 255).save(tmp_path / "binary.png")
    with pytest.raises(ConfigError, match=r"binary\.png.*\[255\]"):
        read_label_map(tmp_path / "binary.png", THREE)


def test_a_coloured_rgb_or_jpeg_label_map_fails_clearly(tmp_path: Path) -> None:
    colour = np.zeros((S, S, 3), np.uint8)
    colour[2:10, 2:10] = (255, 255, 0)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError) as info:
        read_label_map(tmp_path / "colour.png", THREE)
    assert "colour.png" in str(info.value) and "colour" in str(info.value)
    assert "save label maps as PNG" in str(info.value) and "0..2" in str(info.value)

    Image.fromarray(_values()).save(tmp_path / "lossy.jpg")
    with pytest.raises(DataError) as info:
        read_label_map(tmp_path / "lossy.jpg", THREE)
    assert "lossy.jpg" in str(info.value) and "JPEG" in str(info.value)
    assert "save label maps as PNG" in str(info.value)


def test_write_label_map_png_is_an_exact_palette_png(tmp_path: Path) -> None:
    v = _values()
    path = tmp_path / "out" / "m.png"
    write_label_map_png(path, v[None], THREE)  # (1, H, W) as a model would hand it
    with Image.open(path) as img:
        assert img.mode == "P"
        palette = img.getpalette()
        np.testing.assert_array_equal(np.asarray(img), v)
    assert palette[:9] == THREE.colours.ravel().tolist() and not any(palette[9:])
    np.testing.assert_array_equal(read_label_map(path, THREE), v)
    np.testing.assert_array_equal(read_mask(path), (v > 0).astype(np.uint8))  # the binary rule sees lesions
    assert not list(path.parent.glob("*.tmp"))
    with pytest.raises(ConfigError, match=r"bad\.png.*\[7\]"):
        write_label_map_png(tmp_path / "bad.png", v + 5 * (v == 2), THREE)
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(ValueError, match="integers"):
        write_label_map_png(tmp_path / "float.png", v.astype(np.float32) / 2, THREE)


# ------------------------------------------------------------------------------------------ the Dataset


@pytest.fixture()
def three_class(tmp_path: Path) -> Path:
    flipped = _values()[::-1].copy()
    return _folder(tmp_path / "ds", {"a": _values(), "b": flipped, "c": np.zeros((S, S), np.uint8)}, THREE)


def test_dataset_labels_from_dataset_json(tmp_path: Path, three_class: Path) -> None:
    assert dataset_labels(three_class) == THREE
    assert dataset_labels(tmp_path) is BINARY  # no dataset.json
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x"}))
    assert dataset_labels(tmp_path) is BINARY  # no labels
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(ConfigError, match="dataset.json"):
        dataset_labels(tmp_path)


def test_dataset_json_labels_give_class_index_items(three_class: Path) -> None:
    for ds in (SegmentationDataset(three_class, labels=None), SegmentationDataset(three_class, labels=THREE)):
        assert ds.labels == THREE
        item = ds[0]
        assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, S, S)
        np.testing.assert_array_equal(item["mask"][0].numpy(), _values().astype(np.float32))
    with pytest.raises(ConfigError, match="mask_threshold"):
        SegmentationDataset(three_class, labels=THREE, mask_threshold=0.5)


def test_class_indices_survive_the_training_augmentations(three_class: Path) -> None:
    """Flips, rot90, shift-scale-rotate and resize move the index map but never invent or merge classes;
    the geometry is the binary path's, pixel for pixel (same seeds)."""
    multi = SegmentationDataset(three_class, transform=build_transform(64, AUGMENT), augmentation_seed=3, labels=None)
    binary = SegmentationDataset(three_class, transform=build_transform(64, AUGMENT), augmentation_seed=3)
    seen: set[float] = set()
    for epoch in range(6):
        multi.epoch = binary.epoch = epoch
        for index in range(len(multi)):
            mask = multi[index]["mask"]
            assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32
            assert set(mask.unique().tolist()) <= {0.0, 1.0, 2.0}
            torch.testing.assert_close((mask > 0).float(), binary[index]["mask"], rtol=0, atol=0)
            seen |= set(mask.unique().tolist())
    assert seen == {0.0, 1.0, 2.0}  # class 2 kept, not binarised into 1


def test_evaluation_transform_resizes_indices_by_nearest_neighbour(three_class: Path) -> None:
    ds = SegmentationDataset(three_class, transform=build_transform(64), labels=THREE)
    expected = np.repeat(np.repeat(_values(), 2, axis=0), 2, axis=1).astype(np.float32)
    np.testing.assert_array_equal(ds[0]["mask"][0].numpy(), expected)


def test_a_user_transform_gets_the_index_map_and_a_bad_result_is_named(three_class: Path) -> None:
    got = {}

    def keep(image: np.ndarray, mask: np.ndarray) -> dict:
        got["mask"] = mask
        return {"image": image / 255.0, "mask": mask}

    item = SegmentationDataset(three_class, transform=keep, labels=THREE)[0]
    assert got["mask"].dtype == np.uint8 and set(np.unique(got["mask"]).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(item["mask"][0].numpy(), _values().astype(np.float32))

    def rescale(image: np.ndarray, mask: np.ndarray) -> dict:
        return {"image": image / 255.0, "mask": mask * 100}

    with pytest.raises(DataError, match=r"a\.png.*0\.\.2"):
        SegmentationDataset(three_class, transform=rescale, labels=THREE)[0]


def test_finalize_targets_binarises_unless_told_the_mask_holds_indices() -> None:
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    image = np.zeros((2, 2, 3), np.float32)
    binary = FinalizeTargets()(image=image, mask=mask)["mask"]
    np.testing.assert_array_equal(binary[..., 0], [[0, 1], [1, 1]])
    kept = FinalizeTargets()(image=image, mask=mask, **{CLASS_INDEX_MASK: True})["mask"]
    np.testing.assert_array_equal(kept[..., 0], mask.astype(np.float32))


def test_check_dataset_reports_each_file_with_an_undeclared_value(three_class: Path) -> None:
    check_dataset(three_class)  # clean
    bad = _values()
    bad[0, 0] = 4
    Image.fromarray(bad).save(three_class / "masks" / "b.png")
    Image.fromarray((_values() > 0).astype(np.uint8) * 255).save(three_class / "masks" / "c.png")
    with pytest.raises(DataError) as info:
        check_dataset(three_class)
    problems = info.value.problems
    assert len(problems) == 2
    assert "b.png" in problems[0] and "[4]" in problems[0]
    assert "c.png" in problems[1] and "[255]" in problems[1]
    check_dataset(three_class, labels=BINARY)  # read as binary, any non-zero is foreground: fine
    check_dataset(three_class, check_sizes=False)  # presence only


def test_binary_folders_give_exactly_the_items_they_gave(tmp_path: Path) -> None:
    """No dataset.json, or a binary one: the same tensors as BINARY, with and without augmentation."""
    masks = {"a": (_values() > 0).astype(np.uint8) * 255, "b": (_values() == 2).astype(np.uint8)}
    plain = _folder(tmp_path / "plain", masks, None)
    declared = _folder(tmp_path / "declared", masks, LabelSet.binary("lesion"))
    for transform in (None, build_transform(64, AUGMENT)):
        reference = SegmentationDataset(plain, transform=transform, augmentation_seed=5, labels=BINARY)
        for root in (plain, declared):
            ds = SegmentationDataset(root, transform=transform, augmentation_seed=5, labels=None)
            assert ds.labels.is_binary
            for index in range(len(ds)):
                a, b = reference[index], ds[index]
                torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
                torch.testing.assert_close(a["mask"], b["mask"], rtol=0, atol=0)
                assert set(b["mask"].unique().tolist()) <= {0.0, 1.0}
    item = SegmentationDataset(plain)[0]
    np.testing.assert_array_equal(item["mask"][0].numpy(), (_values() > 0).astype(np.float32))
    check_dataset(declared)


# ------------------------------------------------------------------------------------------- prepare


def _split_names(pkl: Path) -> dict[str, list[str]]:
    with open(pkl, "rb") as handle:
        raw = pickle.load(handle)
    return {k: list(v["name_list"]) for k, v in raw.items()}


def _dataset_json(out: Path) -> dict:
    return json.loads((out / "dataset.json").read_text())


def _busi_raw(tmp_path: Path, release_layout: bool = False) -> tuple[Path, list[str]]:
    """Kaggle's Dataset_BUSI_with_GT layout (or, ``release_layout``, the GMS release's images/ + masks/
    with <class>_<k>.png names) from a few shared BUSI files: two train and two test cases."""
    busi = need(BUSI / "images")
    split = _split_names(need(BUSI / "busi_train_test_names.pkl"))
    chosen = []
    for stage in ("train", "test"):
        for cls in ("benign", "malignant"):
            chosen.append(next(n for n in split[stage] if n.startswith(cls)))
    if release_layout:
        raw = tmp_path / "busi-release"
        for sub in ("images", "masks"):
            (raw / sub).mkdir(parents=True)
            for name in chosen:
                shutil.copy(BUSI / sub / f"{name}.png", raw / sub / f"{name}.png")
        return raw, chosen
    raw = tmp_path / "archive" / "Dataset_BUSI_with_GT"
    for name in chosen:
        cls, k = name.split("_")
        (raw / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(busi / f"{name}.png", raw / cls / f"{cls} ({k}).png")
        shutil.copy(BUSI / "masks" / f"{name}.png", raw / cls / f"{cls} ({k})_mask.png")
    return raw, chosen


@pytest.mark.parametrize("release_layout", [False, True], ids=["kaggle-download", "gms-release-layout"])
def test_prepare_busi_pathology_labels_benign_1_malignant_2(tmp_path: Path, capsys, release_layout) -> None:
    raw, chosen = _busi_raw(tmp_path, release_layout)
    out = tmp_path / "busi3"
    pkl = BUSI / "busi_train_test_names.pkl"
    assert (
        main(["prepare", "busi", "--raw", str(raw), "--out", str(out), "--labels", "pathology", "--split", str(pkl)])
        == 0
    )
    summary = capsys.readouterr().out
    assert "benign 2, malignant 2" in summary
    meta = _dataset_json(out)
    assert meta["labels"] == {"background": 0, "benign": 1, "malignant": 2}
    assert meta["numTraining"] == 4 and meta["file_ending"] == ".png" and meta["name"] == "busi"
    assert dataset_labels(out) == PATHOLOGY
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["test"]) == sorted(chosen) and len(split["test"]) == 2
    for name in chosen:
        lesion = read_mask(BUSI / "masks" / f"{name}.png")
        with Image.open(out / "masks" / f"{name}.png") as img:
            assert img.mode == "P"
        values = read_label_map(out / "masks" / f"{name}.png", PATHOLOGY)
        np.testing.assert_array_equal(values, lesion * (1 if name.startswith("benign") else 2))
    check_dataset(out)
    ds = SegmentationDataset(out, labels=None)
    for name in chosen:
        expected = {0.0, 1.0} if name.startswith("benign") else {0.0, 2.0}
        assert set(ds[ds.names.index(name)]["mask"].unique().tolist()) == expected


def test_prepare_busi_binary_is_unchanged_and_gets_a_dataset_json(tmp_path: Path) -> None:
    raw, chosen = _busi_raw(tmp_path)
    out = tmp_path / "busi"
    report = prepare_dataset("busi", raw, out)
    assert _dataset_json(out)["labels"] == {"background": 0, "lesion": 1}
    assert report.labels == {"background": 0, "lesion": 1} and not report.class_counts
    assert "classes" not in report.summary()
    for name in chosen:
        with Image.open(out / "masks" / f"{name}.png") as img:
            assert img.mode == "L"
            np.testing.assert_array_equal(np.asarray(img), read_mask(BUSI / "masks" / f"{name}.png") * 255)
    assert dataset_labels(out).is_binary


def _bus_raw(tmp_path: Path, ids: list[str], drop_from_csv: str | None = None) -> Path:
    """UDIAT's layout (original/, GT/, DatasetB.csv) from a few shared BUS cases."""
    need(BUS / "original")
    raw = tmp_path / "BUS"
    for sub in ("original", "GT"):
        (raw / sub).mkdir(parents=True)
        for case in ids:
            shutil.copy(BUS / sub / f"{case}.png", raw / sub / f"{case}.png")
    lines = (BUS / "DatasetB.csv").read_text().splitlines(keepends=True)
    (raw / "DatasetB.csv").write_text(
        "".join(row for row in lines if not drop_from_csv or not row.startswith(drop_from_csv))
    )
    return raw


def _bus_types() -> dict[str, str]:
    with open(need(BUS / "DatasetB.csv"), newline="") as handle:
        return {row["Image"]: row["Type"] for row in csv.DictReader(handle)}


def test_prepare_bus_pathology_from_dataset_b_csv(tmp_path: Path, capsys) -> None:
    types = _bus_types()
    split = _split_names(need(BUS / "bus_train_test_names.pkl"))
    chosen = []
    for stage in ("train", "test"):
        for kind in ("Benign", "Malignant"):
            chosen.append(next(n for n in split[stage] if types[n] == kind))
    raw = _bus_raw(tmp_path, chosen)
    out = tmp_path / "bus3"
    pkl = BUS / "bus_train_test_names.pkl"
    assert (
        main(["prepare", "bus", "--raw", str(raw), "--out", str(out), "--labels", "pathology", "--split", str(pkl)])
        == 0
    )
    assert "benign 2, malignant 2" in capsys.readouterr().out
    assert _dataset_json(out)["labels"] == {"background": 0, "benign": 1, "malignant": 2}
    assert _dataset_json(out)["numTraining"] == 4
    for case in chosen:
        lesion = read_mask(BUS / "GT" / f"{case}.png")
        values = read_label_map(out / "masks" / f"{case}.png", PATHOLOGY)
        np.testing.assert_array_equal(values, lesion * (1 if types[case] == "Benign" else 2))
    check_dataset(out)


def test_prepare_bus_pathology_refuses_a_case_without_a_type(tmp_path: Path) -> None:
    raw = _bus_raw(tmp_path, ["000001", "000002"], drop_from_csv="000002")
    with pytest.raises(DataError) as info:
        prepare_dataset("bus", raw, tmp_path / "out", labels="pathology")
    assert "000002" in str(info.value) and "DatasetB.csv" in str(info.value)
    assert not (tmp_path / "out").exists()
    (raw / "DatasetB.csv").unlink()
    with pytest.raises(DataError, match="DatasetB.csv"):
        prepare_dataset("bus", raw, tmp_path / "out", labels="pathology")


def test_pathology_labels_only_for_busi_and_bus(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="busi"):
        prepare_dataset("glas", tmp_path, tmp_path / "out", labels="pathology")
    with pytest.raises(ConfigError, match="unknown labels"):
        prepare_dataset("busi", tmp_path, tmp_path / "out", labels="grade")
    (tmp_path / "i").mkdir()
    code = main(
        ["prepare", "folders", "--images", str(tmp_path / "i"), "--masks", str(tmp_path / "i")]
        + ["--out", str(tmp_path / "o"), "--labels", "pathology"]
    )
    assert code == 2 and "--labels" in capsys.readouterr().err
