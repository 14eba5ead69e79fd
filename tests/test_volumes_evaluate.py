"""``gmseg evaluate`` on folders of label volumes: report.html like the 2D path, each case at its fullest slice."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from gmseg.cli import main
from gmseg.evaluate import run_evaluate
from gmseg.report_html import PICTURES, REPORT_HTML, picture_name

#: (Z, Y, X) with the thickest spacing along z: the slicing rule's axis 0
SHAPE, SPACING_XYZ = (6, 24, 20), (1.0, 1.0, 3.0)
#: the slice of each case holding the most foreground (its thumbnail)
FULLEST = {"case_a": 4, "case_b": 1}


def write(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_task(root: Path, image_name: str = "{}") -> Path:
    """A task folder (imagesTr/, labelsTr/) and a predictions folder; returns the predictions folder."""
    rng = np.random.default_rng(0)
    for name, fullest in FULLEST.items():
        label = np.zeros(SHAPE, np.uint8)
        label[:, 8:12, 8:12] = 1  # a little on every slice
        label[fullest, 4:20, 4:16] = 1  # most of it on one
        write(root / "imagesTr" / f"{image_name.format(name)}.nii.gz", rng.normal(100, 20, SHAPE).astype(np.float32))
        write(root / "labelsTr" / f"{name}.nii.gz", label)
        write(root / "pred" / f"{name}.nii.gz", np.roll(label, 1, axis=2))
    return root / "pred"


def rows_of(page: str) -> list[str]:
    return re.findall(r'<tr class="case" data-name="([^"]*)"', page)


@pytest.mark.parametrize("image_name", ["{}", "{}_0000"], ids=["msd", "nnunet"])
def test_evaluate_on_volumes_writes_a_report_with_each_case_at_its_fullest_slice(tmp_path, image_name):
    pred_dir = make_task(tmp_path / "task", image_name)
    result = run_evaluate(pred_dir, tmp_path / "task", out_dir=tmp_path / "scored")
    page = (tmp_path / "scored" / REPORT_HTML).read_text(encoding="utf-8")
    assert rows_of(page) == sorted(FULLEST) == [r["name"] for r in result.rows]
    for name, fullest in FULLEST.items():
        stem = picture_name(name)
        thumb = Image.open(tmp_path / "scored" / PICTURES / f"{stem}.s.jpg")
        assert thumb.size[1] / thumb.size[0] == pytest.approx(SHAPE[1] / SHAPE[2], rel=0.1)  # a (y, x) slice
        assert (tmp_path / "scored" / PICTURES / f"{stem}.jpg").stat().st_size > 0
        assert f"along axis 0 (fullest {fullest})" in page
    assert "mean over classes" in page and "scored in 3D" in page


def test_evaluate_on_volumes_finds_the_images_beside_labels_tr_or_takes_them_given(tmp_path):
    pred_dir = make_task(tmp_path / "task")
    args = ["evaluate", "--pred", str(pred_dir), "--gt", str(tmp_path / "task" / "labelsTr")]
    assert main([*args, "--out", str(tmp_path / "from-labels")]) == 0
    assert len(rows_of((tmp_path / "from-labels" / REPORT_HTML).read_text(encoding="utf-8"))) == len(FULLEST)
    bare = tmp_path / "bare"  # labels alone: no images to draw, no report (as for 2D folders)
    bare.mkdir()
    for label in (tmp_path / "task" / "labelsTr").iterdir():
        (bare / label.name).write_bytes(label.read_bytes())
    run_evaluate(pred_dir, bare, out_dir=tmp_path / "no-images")
    assert (tmp_path / "no-images" / "metrics.csv").is_file()
    assert not (tmp_path / "no-images" / REPORT_HTML).exists()
    images = str(tmp_path / "task" / "imagesTr")
    argv = ["evaluate", "--pred", str(pred_dir), "--gt", str(bare), "--out", str(tmp_path / "given"), "--images"]
    assert main([*argv, images]) == 0
    assert len(rows_of((tmp_path / "given" / REPORT_HTML).read_text(encoding="utf-8"))) == len(FULLEST)
