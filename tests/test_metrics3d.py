"""3D scoring on hand-made volumes whose answers were worked out by hand (comments give the arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gmseg.errors import ConfigError
from gmseg.labels import LabelSet
from gmseg.metrics3d import (
    MEAN_KEYS,
    case_metrics,
    foreground_slices,
    nnunet_case,
    nnunet_fields,
    summarize_volumes,
    volume_columns,
)

LABELS = LabelSet(("background", "anterior", "posterior"), (0, 1, 2))


def slab_pair() -> tuple[np.ndarray, np.ndarray]:
    """Truth: class 1 on slice z=2, y 2..3, x 2..3 (4 voxels). Prediction: the same block on slices 2 and 3
    (8 voxels). Every voxel of both is a surface voxel (no block is 3 thick), so by hand:
    Dice = 2*4 / (4 + 8) = 2/3, IoU = 4/8 = 1/2; distances prediction -> truth are 0 (four voxels on z=2)
    and one z step (four voxels on z=3), truth -> prediction all 0; the 95th percentile of
    [0,0,0,0,d,d,d,d] is d, so HD95 = one z step = the z spacing."""
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[2, 2:4, 2:4] = 1
    pred = np.zeros_like(gt)
    pred[2:4, 2:4, 2:4] = 1
    return pred, gt


@pytest.mark.parametrize(
    "spacing, hd95",
    [((1.0, 1.0, 1.0), 1.0), ((3.0, 1.0, 1.0), 3.0), ((1.0, 1.0, 3.0), 1.0), ((2.5, 0.7, 0.7), 2.5)],
)
def test_hd95_is_in_millimetres_along_the_axis_of_the_error(spacing, hd95):
    pred, gt = slab_pair()
    row = case_metrics(pred, gt, LABELS, spacing)
    assert row["dice_anterior"] == pytest.approx(2 / 3)
    assert row["iou_anterior"] == pytest.approx(0.5)
    assert row["hd95_anterior"] == pytest.approx(hd95)
    assert row["pred_area_anterior"] == 8 and row["true_area_anterior"] == 4


def test_diagonal_distance_uses_each_axis_spacing():
    """One truth voxel at (1,1,1), one predicted at (2,2,1): distance sqrt(sz^2 + sy^2) = sqrt(4 + 0.25)."""
    gt = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(gt)
    gt[1, 1, 1] = 1
    pred[2, 2, 1] = 1
    row = case_metrics(pred, gt, LABELS, (2.0, 0.5, 9.0))
    assert row["hd95_anterior"] == pytest.approx(math.sqrt(4.25))
    assert row["dice_anterior"] == 0.0


def test_class_conventions_and_means_over_classes():
    """Anterior as in slab_pair (Dice 2/3, HD95 = sz = 2); posterior present in the truth only: Dice 0,
    HD95 nan. Mean over classes: Dice (2/3 + 0)/2 = 1/3, HD95 over finite values only = 2."""
    pred, gt = slab_pair()
    gt[4, 0, 0] = 2
    row = case_metrics(pred, gt, LABELS, (2.0, 1.0, 1.0))
    assert row["dice_posterior"] == 0.0 and math.isnan(row["hd95_posterior"])
    assert row["mean_dice"] == pytest.approx(1 / 3)
    assert row["mean_hd95"] == pytest.approx(2.0)
    # Posterior absent from both: Dice 1 / HD95 0 under the standard convention, 0 under the paper's.
    pred, gt = slab_pair()
    standard = case_metrics(pred, gt, LABELS, (1.0, 1.0, 1.0))
    paper = case_metrics(pred, gt, LABELS, (1.0, 1.0, 1.0), empty="paper")
    assert (standard["dice_posterior"], standard["hd95_posterior"], standard["both_empty_posterior"]) == (1.0, 0.0, 1)
    assert paper["dice_posterior"] == 0.0
    assert set(volume_columns(LABELS)) == {"name", *standard}


def test_nnunet_fields_follow_nnunet():
    """Case a: slab_pair (anterior TP 4, FP 4, FN 0; TN 216-8 = 208); posterior in neither: Dice nan.
    Case b: perfect anterior (Dice 1) and posterior (Dice 1). Means: anterior Dice (2/3 + 1)/2 = 5/6,
    posterior nan-mean = 1; foreground_mean Dice (5/6 + 1)/2 = 11/12."""
    pred, gt = slab_pair()
    a = nnunet_case(pred, gt, LABELS, "p/a.nii.gz", "g/a.nii.gz")
    assert a["metrics"]["1"] == {
        "Dice": 2 / 3,
        "IoU": 0.5,
        "FP": 4,
        "TP": 4,
        "FN": 0,
        "TN": 208,
        "n_pred": 8,
        "n_ref": 4,
    }
    assert math.isnan(a["metrics"]["2"]["Dice"])
    both = gt.copy()
    both[0, 0, 0] = 2
    b = nnunet_case(both, both, LABELS)
    fields = nnunet_fields([a, b], LABELS)
    assert fields["mean"]["1"]["Dice"] == pytest.approx(5 / 6)
    assert fields["mean"]["2"]["Dice"] == pytest.approx(1.0)
    assert fields["foreground_mean"]["Dice"] == pytest.approx(11 / 12)
    assert fields["metric_per_case"] == [a, b]


def test_summary_carries_gmseg_and_nnunet_fields():
    pred, gt = slab_pair()
    rows = [{"name": "a", **case_metrics(pred, gt, LABELS, (3.0, 1.0, 1.0))}]
    summary = summarize_volumes(rows, [nnunet_case(pred, gt, LABELS)], "standard", LABELS)
    assert summary["metrics"]["hd95_anterior"]["mean"] == pytest.approx(3.0)
    assert summary["metrics"]["mean_dice"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert {"metric_per_case", "mean", "foreground_mean"} <= set(summary)
    assert summary["settings"]["hd95"].startswith("mm")
    assert set(MEAN_KEYS) <= set(summary["metrics"])


def test_bad_spacing_and_shapes_are_refused():
    pred, gt = slab_pair()
    with pytest.raises(ConfigError, match="spacing"):
        case_metrics(pred, gt, LABELS, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shapes differ"):
        case_metrics(pred[:-1], gt, LABELS, (1.0, 1.0, 1.0))


def test_report_slices_are_those_with_most_foreground():
    gt = np.zeros((5, 4, 4), np.uint8)
    gt[1, :2, :2] = 1  # 4 voxels
    gt[3, :, :] = 2  # 16 voxels
    gt[4, 0, 0] = 1  # 1 voxel
    pred = np.zeros_like(gt)
    pred[0, 0, :3] = 1  # breaks the tie among the empty-truth slices 0 and 2
    assert foreground_slices(gt, pred, count=2) == [1, 3]
    assert foreground_slices(gt, pred, count=4) == [0, 1, 3, 4]
