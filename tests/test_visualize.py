"""gmseg.visualize: contour overlays, the best/median/worst grid and training curves (headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from gmseg.errors import GmsegError
from gmseg.visualize import (
    BOTH_COLOR,
    GT_COLOR,
    PRED_COLOR,
    _pick_cases,
    overlay,
    plot_training_curves,
    report_grid,
    save_overlay,
)


def box(shape: tuple[int, int], top: int, left: int, h: int, w: int) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top : top + h, left : left + w] = True
    return m


def edge(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Reference contour: the mask minus its erosion (pixels inside the mask only)."""
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def assert_valid_png(path: Path, min_side: int = 200) -> None:
    assert path.is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # decodes fully: a truncated file fails here
        assert min(img.size) >= min_side and max(img.size) < 10000


def test_overlay_changes_only_contour_pixels() -> None:
    image = np.full((40, 50, 3), 90, np.uint8)
    image[..., 2] = 140
    pred, gt = box((40, 50), 5, 5, 20, 20), box((40, 50), 5, 12, 20, 20)
    before = image.copy()
    out = overlay(image, pred, gt)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # input untouched

    pc, gc = edge(pred), edge(gt)
    changed = np.any(out != image, axis=2)
    np.testing.assert_array_equal(changed, pc | gc)  # every contour pixel and nothing else
    assert (out[pc & ~gc] == PRED_COLOR).all()
    assert (out[gc & ~pc] == GT_COLOR).all()
    assert (pc & gc).any() and (out[pc & gc] == BOTH_COLOR).all()  # shared top/bottom edges
    assert (out[pred & ~pc & ~gc] == image[pred & ~pc & ~gc]).all()  # interiors keep the anatomy


def test_overlay_without_gt_border_and_large_images() -> None:
    image = np.zeros((20, 20), np.uint8)  # grayscale is accepted
    pred = box((20, 20), 0, 0, 8, 20)  # touches three borders: still outlined there
    out = overlay(image, pred)
    assert out.shape == (20, 20, 3)
    np.testing.assert_array_equal(np.any(out != 0, axis=2), edge(pred))
    assert out[0, 10].tolist() == list(PRED_COLOR)

    big = np.zeros((512, 512, 3), np.uint8)
    m = box((512, 512), 100, 100, 200, 200)
    changed = np.any(overlay(big, m, m) != 0, axis=2)
    np.testing.assert_array_equal(changed, edge(m, 2))  # 2 px wide from 512 px up


def test_overlay_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="pred"):
        overlay(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), bool))
    with pytest.raises(ValueError, match="uint8"):
        overlay(np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), bool))


def test_save_overlay_writes_png(tmp_path: Path) -> None:
    image = np.full((30, 40, 3), 50, np.uint8)
    pred = box((30, 40), 3, 3, 10, 10)
    path = tmp_path / "sub" / "a.overlay.png"
    save_overlay(path, image, pred, pred)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (40, 30)
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), overlay(image, pred, pred))


def test_pick_cases_best_median_worst_without_duplicates() -> None:
    dices = [0.5, 0.9, 0.1, 0.7, 0.3, 0.95, 0.2, 0.6, 0.8, 0.4, 0.05]  # median 0.5
    rows = dict(_pick_cases(dices))
    assert [dices[i] for i in rows["best"]] == [0.95, 0.9, 0.8]
    assert [dices[i] for i in rows["worst"]] == [0.2, 0.1, 0.05]
    assert [dices[i] for i in rows["median"]] == [0.6, 0.5, 0.4]
    for n in (1, 2, 4, 5, 9):
        picked = [i for _, idx in _pick_cases(dices[:n]) for i in idx]
        assert sorted(picked) == list(range(n))  # every case once, none twice
    assert [label for label, _ in _pick_cases([0.5])] == ["best"]


def make_case(i: int, dice: float) -> dict:
    image = np.full((64, 80, 3), 30 + 10 * i, np.uint8)
    gt = box((64, 80), 10, 10, 30, 30)
    pred = box((64, 80), 10, 10 + i, 30, 30)
    return {"name": f"img_{i}", "image": image, "pred": pred, "gt": gt, "dice": dice}


def test_report_grid_writes_a_png(tmp_path: Path) -> None:
    cases = [make_case(i, d) for i, d in enumerate(np.linspace(0.1, 0.95, 11))]
    path = report_grid(cases, tmp_path / "report.png", title="test set")
    assert path == tmp_path / "report.png"
    assert_valid_png(path, min_side=500)  # a 3 x 3 grid
    few = report_grid(cases[:2], tmp_path / "few.png")
    assert_valid_png(few, min_side=150)
    with pytest.raises(GmsegError):
        report_grid([], tmp_path / "none.png")


LOG = """epoch,lr,loss,loss_rec,loss_dice,val_dice,val_iou,seconds
1,0.0002,0.9,0.5,0.4,,,10.5
2,0.00019,0.7,0.4,0.3,0.61,0.45,10.1
3,0.00017,0.6,0.35,0.25,,,10.3
4,0.00015,0.5,0.3,0.2,0.74,0.60,10.2
5,0.00012,0.45,0.28,0.17,0.71,0.58,10.4
"""


def test_training_curves_from_run_dir(tmp_path: Path) -> None:
    (tmp_path / "train_log.csv").write_text(LOG)
    path = plot_training_curves(tmp_path)
    assert path == tmp_path / "curves.png"
    assert_valid_png(path)


def test_training_curves_tolerate_missing_columns(tmp_path: Path) -> None:
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("epoch,loss,lr\n1,0.9,0.001\n2,0.8,\n")  # no validation, an empty lr
    out = plot_training_curves(csv_path, tmp_path / "out" / "c.png")
    assert_valid_png(out)


def test_training_curves_missing_or_empty_log(tmp_path: Path) -> None:
    with pytest.raises(GmsegError, match="train_log.csv"):
        plot_training_curves(tmp_path)
    (tmp_path / "train_log.csv").write_text("epoch,lr,loss\n")
    with pytest.raises(GmsegError, match="no rows"):
        plot_training_curves(tmp_path)
