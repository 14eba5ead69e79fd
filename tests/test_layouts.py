"""Dataset layouts read in place (prepared 2D, MSD, nnU-Net v2 raw in 2D PNG and 3D NIfTI), splits by case,
and every bad dataset refused with an error naming the file(s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from conftest import write_msd_task
from gmseg.data.layouts import MSDLayout, NnUNetLayout, PreparedLayout, open_layout
from gmseg.data.readers import PLANAR, Geometry, write_volume
from gmseg.errors import DataError, GmsegError

GEOMETRY = Geometry((2.5, 0.8, 0.8), (-10.0, 4.0, 30.0), (0, 1, 0, -1, 0, 0, 0, 0, 1))
SHAPE = (4, 10, 12)


def _image_and_label(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 2:5, 3:7] = 1
    label[1:3, 6:8, 3:7] = 2
    return image, label


def make_msd(root: Path, n: int = 6, unlabelled: int = 1) -> Path:
    """A tiny MSD task: imagesTr/labelsTr/imagesTs, dataset.json with index -> name labels."""
    write_msd_task(
        root,
        [_image_and_label(i) for i in range(n)],
        lambda path, array: write_volume(path, array, GEOMETRY),
        {"0": "background", "1": "Anterior", "2": "Posterior"},
        unlabelled=[_image_and_label(100 + i)[0] for i in range(unlabelled)],
    )
    # The MSD archives carry macOS companions; they are not in the list and must never be read.
    (root / "imagesTr" / "._vol_000.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    return root


def make_nnunet_3d(root: Path, n: int = 5) -> Path:
    """Dataset001_Tiny: imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, imagesTs/, name -> index labels."""
    for i in range(n):
        image, label = _image_and_label(i)
        write_volume(root / "imagesTr" / f"liver_{i}_0000.nii.gz", image, GEOMETRY)
        write_volume(root / "labelsTr" / f"liver_{i}.nii.gz", label, GEOMETRY)
    write_volume(root / "imagesTs" / "liver_99_0000.nii.gz", _image_and_label(99)[0], GEOMETRY)
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_nnunet_2d(root: Path, n: int = 4) -> Path:
    """An nnU-Net 2D dataset: RGB PNG inputs (_0000) and PNG label maps 0/1."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(
            root / "imagesTr" / f"road_{i}_0000.png"
        )
        label = np.zeros((16, 20), np.uint8)
        label[4:9, 5:12] = 1
        Image.fromarray(label).save(root / "labelsTr" / f"road_{i}.png")
    # nnU-Net's natural-image datasets: one RGB file per case.
    meta = {"channel_names": {"0": "rgb"}, "labels": {"background": 0, "road": 1}}
    meta.update(numTraining=n, file_ending=".png")
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_prepared(root: Path, n: int = 5) -> Path:
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(root / "images" / f"img{i}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(root / "masks" / f"img{i}.png")
    return root


# ------------------------------------------------------------------------------------------ reading


def test_msd_task_is_read_in_place(tmp_path: Path) -> None:
    layout = open_layout(make_msd(tmp_path / "Task99_Tiny"))
    assert isinstance(layout, MSDLayout) and layout.is_3d and layout.modality == "MRI"
    assert layout.labels.names == ("background", "Anterior", "Posterior") and layout.labels.values == (0, 1, 2)
    labelled = layout.cases()
    assert [c.name for c in labelled] == [f"vol_{i:03d}" for i in range(6)]
    everything = layout.cases(labelled=False)
    assert len(everything) == 7 and [c.label for c in everything if c.name == "vol_100"] == [None]
    image, label = layout.load_case(labelled[0])
    assert image.array.shape == SHAPE and label.array.dtype == np.uint8 and image.geometry.close_to(GEOMETRY)
    assert layout.load_case(layout.case("vol_100"))[1] is None


def test_nnunet_3d_dataset_is_read_in_place(tmp_path: Path) -> None:
    layout = open_layout(make_nnunet_3d(tmp_path / "Dataset001_Tiny"))
    assert isinstance(layout, NnUNetLayout) and layout.is_3d and layout.modality == "CT"
    assert layout.labels.names == ("background", "liver", "tumour")
    case = layout.cases()[0]
    assert case.name == "liver_0" and case.images[0].name == "liver_0_0000.nii.gz"
    assert case.label.name == "liver_0.nii.gz"
    assert [c.name for c in layout.cases(labelled=False) if c.label is None] == ["liver_99"]
    image, label = layout.load_case(case)
    assert np.array_equal(np.unique(label.array), [0, 1, 2])


def test_nnunet_2d_png_dataset_is_read_in_place(tmp_path: Path) -> None:
    layout = open_layout(make_nnunet_2d(tmp_path / "Dataset002_Roads"))
    assert isinstance(layout, NnUNetLayout) and not layout.is_3d
    image, label = layout.load_case(layout.cases()[1])
    assert image.array.shape == (1, 16, 20, 3) and label.array.shape == (1, 16, 20)
    assert image.geometry == PLANAR and not image.is_3d


def test_prepared_folder_is_a_layout_too(tmp_path: Path) -> None:
    root = make_prepared(tmp_path / "prep")
    layout = open_layout(root)
    assert isinstance(layout, PreparedLayout) and not layout.is_3d and layout.labels.is_binary
    assert [c.name for c in layout.cases()] == [f"img{i}" for i in range(5)]
    # prepare's dataset.json names the R, G, B channels: a prepared folder holds colour pictures.
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"}}))
    assert open_layout(root).modality == "rgb"
    (root / "split.json").write_text(json.dumps({"train": ["img0", "img1", "img2"], "test": ["img3", "img4"]}))
    split = layout.split(seed=0, val_fraction=0.34)
    assert split["test"] == ["img3", "img4"] and len(split["val"]) == 1


def test_an_unknown_folder_names_itself(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(GmsegError, match="stuff is no dataset"):
        open_layout(tmp_path / "stuff")
    with pytest.raises(GmsegError, match="not found"):
        open_layout(tmp_path / "nowhere")


def test_the_hippocampus_task_reads_in_place() -> None:
    from conftest import SHARED, need

    layout = open_layout(need(SHARED / "data" / "msd-hippocampus"))
    assert isinstance(layout, MSDLayout) and layout.is_3d and layout.modality == "MRI"
    assert layout.labels.names == ("background", "Anterior", "Posterior")
    assert len(layout.cases()) == 200 and len(layout.cases(labelled=False)) == 201
    split = layout.split(seed=0, val_fraction=0.1, test_fraction=0.2)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (144, 16, 40)
    dtypes = set()
    for case in layout.cases():  # every case passes the pair, geometry and label-value checks
        image, label = layout.load_case(case)
        dtypes.add((image.array.dtype.name, label.array.dtype.name))
        assert image.array.ndim == 3 and set(np.unique(label.array)) <= {0, 1, 2}
    # float32 and uint8 images circulate (and two float32 label volumes): each read in its own dtype.
    assert {("float32", "uint8"), ("uint8", "uint8"), ("float32", "float32")} == dtypes


# ------------------------------------------------------------------------------------------- splits


def _check_case_split(split: dict[str, list[str]], names: list[str]) -> None:
    sets = [set(split[k]) for k in ("train", "val", "test")]
    assert all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1 :])
    assert set().union(*sets) == set(names)


def test_split_is_by_case_seeded_and_complete(tmp_path: Path) -> None:
    layout = open_layout(make_msd(tmp_path / "T", n=20))
    names = [c.name for c in layout.cases()]
    first = layout.split(seed=3, val_fraction=0.2, test_fraction=0.25)
    _check_case_split(first, names)
    assert (len(first["train"]), len(first["val"]), len(first["test"])) == (12, 3, 5)
    assert layout.split(seed=3, val_fraction=0.2, test_fraction=0.25) == first
    assert layout.split(seed=4, val_fraction=0.2, test_fraction=0.25) != first
    assert "vol_100" not in {n for v in first.values() for n in v}  # unlabelled cases are never scored


def test_nnunet_splits_final_is_used(tmp_path: Path) -> None:
    root = make_nnunet_3d(tmp_path / "Dataset001_Tiny", n=5)
    layout = open_layout(root)
    folds = [{"train": ["liver_0", "liver_1", "liver_2"], "val": ["liver_3", "liver_4"]}]
    (root / "splits_final.json").write_text(json.dumps(folds * 5))
    split = layout.split(seed=0, val_fraction=0.34)
    assert split["test"] == ["liver_3", "liver_4"] and len(split["val"]) == 1
    _check_case_split(split, [c.name for c in layout.cases()])
    (root / "splits_final.json").write_text(json.dumps([{"train": ["liver_0"], "val": ["liver_7"]}]))
    with pytest.raises(DataError, match="not in the dataset"):
        layout.split()


# --------------------------------------------------------------------------------------- bad input


def test_image_and_label_of_different_shape_name_both(tmp_path: Path) -> None:
    root = make_msd(tmp_path / "T")
    bad = root / "labelsTr" / "vol_002.nii.gz"
    write_volume(bad, np.zeros((4, 10, 11), np.uint8), GEOMETRY)
    layout = open_layout(root)
    with pytest.raises(DataError) as info:
        layout.load_case(layout.case("vol_002"))
    head = str(info.value).splitlines()[0]
    assert "shapes differ" in head and str(bad) in head and str(root / "imagesTr" / "vol_002.nii.gz") in head
    assert "(4, 10, 11)" in str(info.value) and str(SHAPE) in str(info.value)


@pytest.mark.parametrize(
    "moved",
    [
        Geometry((2.5, 0.8, 0.8), (-10.0, 4.0, 31.0), GEOMETRY.direction),  # origin 1 mm off
        Geometry((2.0, 0.8, 0.8), GEOMETRY.origin, GEOMETRY.direction),  # slice thickness differs
        Geometry(GEOMETRY.spacing, GEOMETRY.origin),  # not rotated
    ],
)
def test_image_and_label_of_different_geometry_name_both_geometries(tmp_path: Path, moved: Geometry) -> None:
    root = make_msd(tmp_path / "T")
    write_volume(root / "labelsTr" / "vol_001.nii.gz", _image_and_label(1)[1], moved)
    layout = open_layout(root)
    with pytest.raises(DataError) as info:
        layout.load_case(layout.case("vol_001"))
    message = str(info.value)
    assert "geometries differ" in message.splitlines()[0]
    assert GEOMETRY.describe().split(" direction")[0] in message and moved.describe().split(" direction")[0] in message


@pytest.mark.parametrize("value", [3, 255])
def test_undeclared_label_values_are_refused(tmp_path: Path, value: int) -> None:
    root = make_nnunet_3d(tmp_path / "Dataset001_Tiny")
    label = _image_and_label(0)[1]
    label[0, 0, 0] = value
    bad = write_volume(root / "labelsTr" / "liver_0.nii.gz", label, GEOMETRY)
    layout = open_layout(root)
    with pytest.raises(DataError) as info:
        layout.load_case(layout.case("liver_0"))
    assert str(bad) in str(info.value).splitlines()[0] and f"[{value}]" in str(info.value)


def test_truncated_and_nan_volumes_in_a_dataset_name_the_file(tmp_path: Path) -> None:
    root = make_msd(tmp_path / "T")
    cut = root / "imagesTr" / "vol_003.nii.gz"
    cut.write_bytes(cut.read_bytes()[:-40])
    image = _image_and_label(4)[0]
    image[2, 2, 2] = np.nan
    nan = write_volume(root / "imagesTr" / "vol_004.nii.gz", image, GEOMETRY)
    layout = open_layout(root)
    for name, path in (("vol_003", cut), ("vol_004", nan)):
        with pytest.raises(DataError) as info:
            layout.load_case(layout.case(name))
        assert str(path) in str(info.value).splitlines()[0]


def test_a_2d_file_in_a_3d_dataset_and_the_reverse(tmp_path: Path) -> None:
    root = make_nnunet_3d(tmp_path / "Dataset001_Tiny")
    flat = root / "imagesTr" / "liver_1_0000.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.float32)), str(flat))
    layout = open_layout(root)
    with pytest.raises(DataError, match="a 2D file in a 3D dataset") as info:
        layout.load_case(layout.case("liver_1"))
    assert str(flat) in str(info.value).splitlines()[0]
    # The reverse: an MSD list of PNG slices holding one volume.
    task = tmp_path / "Task98_Slices"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(task / "imagesTr" / "a.png")
    deep = write_volume(task / "labelsTr" / "a.nii.gz", np.zeros(SHAPE, np.uint8), GEOMETRY)
    meta = {"modality": {"0": "US"}, "labels": {"0": "background", "1": "x"}}
    meta["training"] = [{"image": "./imagesTr/a.png", "label": "./labelsTr/a.nii.gz"}]
    (task / "dataset.json").write_text(json.dumps(meta))
    slices = open_layout(task)
    assert not slices.is_3d
    with pytest.raises(DataError, match="a 3D file in a 2D dataset") as info:
        slices.load_case(slices.cases()[0])
    assert str(deep) in str(info.value).splitlines()[0]


def test_4d_images_are_refused_where_3d_is_expected(tmp_path: Path) -> None:
    root = make_msd(tmp_path / "T")
    four = root / "imagesTr" / "vol_005.nii.gz"
    sitk.WriteImage(sitk.Image([12, 10, 4, 2], sitk.sitkFloat32), str(four))
    layout = open_layout(root)
    with pytest.raises(DataError, match="4D image") as info:
        layout.load_case(layout.case("vol_005"))
    assert str(four) in str(info.value).splitlines()[0]
    # Variant: the dataset itself says 4D (MSD BrainTumour, Prostate): refused when opened.
    meta = json.loads((root / "dataset.json").read_text())
    meta["tensorImageSize"] = "4D"
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="4D images"):
        open_layout(root)


def test_msd_listed_files_missing_are_all_named(tmp_path: Path) -> None:
    root = make_msd(tmp_path / "T")
    gone = [
        root / "imagesTr" / "vol_001.nii.gz",
        root / "labelsTr" / "vol_004.nii.gz",
        root / "imagesTs" / "vol_100.nii.gz",
    ]
    for path in gone:
        path.unlink()
    with pytest.raises(DataError) as info:
        open_layout(root)
    assert "3 problem(s)" in str(info.value).splitlines()[0]
    assert all(f"{path}: listed in" in str(info.value) for path in gone)


def test_multi_channel_inputs_are_refused_clearly(tmp_path: Path) -> None:
    root = make_nnunet_3d(tmp_path / "Dataset001_Tiny")
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "T2", "1": "ADC"}}))
    with pytest.raises(DataError, match="multi-channel") as info:
        open_layout(root)
    assert "T2" in str(info.value) and "ADC" in str(info.value)
    # Variant: dataset.json says one channel but a second file per case is there.
    (root / "dataset.json").write_text(json.dumps(meta))
    write_volume(root / "imagesTr" / "liver_0_0001.nii.gz", _image_and_label(0)[0], GEOMETRY)
    with pytest.raises(DataError, match="liver_0_0001.nii.gz: channel 0001"):
        open_layout(root)


def test_nnunet_pairs_and_counts_are_checked(tmp_path: Path) -> None:
    root = make_nnunet_3d(tmp_path / "Dataset001_Tiny")
    (root / "labelsTr" / "liver_2.nii.gz").unlink()
    write_volume(root / "labelsTr" / "orphan.nii.gz", np.zeros(SHAPE, np.uint8), GEOMETRY)
    with pytest.raises(DataError) as info:
        open_layout(root)
    message = str(info.value)
    assert "label missing for" in message and "orphan.nii.gz: label without an image" in message
    assert "numTraining is 5" not in message  # still five images


def test_check_lists_every_bad_case_at_once(tmp_path: Path) -> None:
    root = make_msd(tmp_path / "T")
    write_volume(root / "labelsTr" / "vol_001.nii.gz", np.zeros((4, 10, 11), np.uint8), GEOMETRY)
    label = _image_and_label(3)[1]
    label[0, 0, 0] = 7
    write_volume(root / "labelsTr" / "vol_003.nii.gz", label, GEOMETRY)
    layout = open_layout(root)
    layout.check(["vol_000", "vol_002"])  # the good ones pass
    with pytest.raises(DataError) as info:
        layout.check()
    message = str(info.value)
    assert "2 problem(s)" in message.splitlines()[0]
    assert "vol_001.nii.gz: shape" in message and "vol_003.nii.gz: values [7]" in message
    with pytest.raises(DataError, match="no case 'vol_404'"):
        layout.check(["vol_404"])
