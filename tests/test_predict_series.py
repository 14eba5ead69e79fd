"""``gmseg predict`` on DICOM series (one folder of .dcm slices is one input, written as NIfTI with the
series' geometry), outputs named by case through the one 2D loop, and ``gmseg evaluate`` reading an
nnU-Net dataset's classes from ``--gt DATASET/labelsTr`` or ``--gt DATASET``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from gmseg.cli import main
from gmseg.errors import GmsegError
from gmseg.evaluate import run_evaluate
from gmseg.predict import collect_inputs, predict_files
from gmseg.volume_predict import is_volume_input, volume_output_paths
from test_dicom import scan, write_series
from test_nnunet_2d import LABELS, make_nnunet_2d
from test_volumes_predict import tiny_unet

SPACING, ORIGIN = (2.5, 0.7, 0.8), (-10.0, 5.0, 30.0)  # (z, y, x) as the series writes them


def assert_series_geometry(written: Path, shape: tuple[int, ...]) -> None:
    """The label volume has the series' shape and the geometry its headers give (read by SimpleITK)."""
    image = sitk.ReadImage(str(written))
    assert sitk.GetArrayFromImage(image).shape == shape
    np.testing.assert_allclose(image.GetSpacing(), SPACING[::-1], rtol=1e-5)
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)


def test_a_dicom_series_is_predicted_as_one_nifti_volume(tmp_path):
    array = scan((4, 20, 18))
    series = write_series(tmp_path / "in" / "SERIES", array, spacing=SPACING, origin=ORIGIN)
    assert is_volume_input(series) and collect_inputs(series) == [series]
    report = predict_files(tiny_unet(), series, tmp_path / "out", device="cpu", progress=False, workers=0)
    assert report.ok and report.written == ["SERIES"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["SERIES.nii.gz"]
    assert_series_geometry(tmp_path / "out" / "SERIES.nii.gz", array.shape)


def test_series_folders_inside_a_listed_folder_are_inputs(tmp_path):
    first = write_series(tmp_path / "in" / "A", scan((3, 16, 16)), spacing=SPACING, origin=ORIGIN)
    second = write_series(tmp_path / "in" / "B.v2", scan((5, 16, 16)), series="2", spacing=SPACING, origin=ORIGIN)
    (tmp_path / "in" / "empty").mkdir()  # a folder of no slices is no input
    assert collect_inputs(tmp_path / "in") == [first, second]
    assert volume_output_paths(tmp_path / "out", second, tiny_unet().labels, False) == [
        tmp_path / "out" / "B.v2.nii.gz"  # the folder's whole name, NIfTI's ending
    ]
    report = predict_files(tiny_unet(), tmp_path / "in", tmp_path / "out", device="cpu", progress=False)
    assert report.ok and report.written == ["A", "B.v2"]
    assert_series_geometry(tmp_path / "out" / "A.nii.gz", (3, 16, 16))
    assert_series_geometry(tmp_path / "out" / "B.v2.nii.gz", (5, 16, 16))


def test_nothing_is_written_into_a_series(tmp_path):
    series = write_series(tmp_path / "SERIES", scan((3, 16, 16)))
    with pytest.raises(GmsegError, match="holds the input volume"):
        predict_files(tiny_unet(), series, series, device="cpu", progress=False)
    assert sorted(p.suffix for p in series.iterdir() if not p.name.startswith(".")) == [".dcm"] * 3


def test_names_give_each_input_its_output_stem(tmp_path):
    images = tmp_path / "imagesTr"
    images.mkdir()
    files = []
    for case in ("case_a", "case_b"):
        files.append(images / f"{case}_0000.png")
        Image.fromarray(np.full((20, 24), 90, np.uint8)).save(files[-1])
    report = predict_files(
        tiny_unet(), files, tmp_path / "out", names=["case_a", "case_b"], device="cpu", progress=False, workers=0
    )
    assert report.written == ["case_a", "case_b"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert written == ["case_a.png", "case_b.png"]
    assert Image.open(tmp_path / "out" / "case_a.png").size == (24, 20)
    with pytest.raises(GmsegError, match="2 output names for 1 inputs"):
        predict_files(tiny_unet(), files[:1], tmp_path / "other", names=["a", "b"], device="cpu", progress=False)
    with pytest.raises(GmsegError, match="one distinct input file each"):
        predict_files(tiny_unet(), [images], tmp_path / "other", names=["a"], device="cpu", progress=False)
    assert not (tmp_path / "other").exists()


@pytest.fixture
def three_classes(tmp_path) -> tuple[Path, Path]:
    """A 3-class nnU-Net 2D dataset and predictions that find every lesion but call the membrane a nucleus:
    perfect as binary masks, Dice 0 for the membrane."""
    root = make_nnunet_2d(tmp_path / "Dataset901_Cells", n=3)
    pred = tmp_path / "pred"
    pred.mkdir()
    for label in sorted((root / "labelsTr").iterdir()):
        values = np.array(Image.open(label))
        Image.fromarray(np.where(values == 2, 1, values).astype(np.uint8)).save(pred / label.name)
    return root, pred


@pytest.mark.parametrize("gt", ["labelsTr", "."])
def test_evaluate_reads_the_classes_of_an_nnunet_dataset(three_classes, gt, tmp_path):
    root, pred = three_classes
    result = run_evaluate(pred, root / gt, out_dir=tmp_path / "scores")
    assert list(result.labels.names) == list(LABELS)
    assert len(result.rows) == 3
    assert result.summary["metrics"]["dice_membrane"]["mean"] == 0.0
    assert result.summary["metrics"]["any_dice"]["mean"] == pytest.approx(1.0)


def test_cli_evaluate_with_the_dataset_folder_scores_its_labels(three_classes, tmp_path):
    root, pred = three_classes
    assert main(["evaluate", "--pred", str(pred), "--gt", str(root), "--out", str(tmp_path / "scores")]) == 0
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    assert summary["metrics"]["dice_membrane"]["mean"] == 0.0
    assert summary["counts"]["n_images"] == 3
