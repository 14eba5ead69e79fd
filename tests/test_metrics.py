"""gmseg.metrics: MONAI-backed per-image metrics on masks whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gmseg.errors import ConfigError
from gmseg.metrics import EMPTY_MODES, METRIC_KEYS, binary_metrics


def square(top: int, left: int, side: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


def test_returns_all_keys_as_python_numbers() -> None:
    out = binary_metrics(square(5, 5, 10), square(5, 8, 10))
    assert tuple(out) == METRIC_KEYS
    for key, value in out.items():
        assert type(value) in (float, int), key
    assert EMPTY_MODES == ("standard", "paper")


def test_two_overlapping_squares() -> None:
    # 10x10 squares, the prediction shifted 4 px right: overlap 10 x 6 = 60 px.
    gt, pred = square(10, 10, 10), square(10, 14, 10)
    out = binary_metrics(pred, gt)
    assert out["dice"] == pytest.approx(2 * 60 / (100 + 100))  # 0.6
    assert out["iou"] == pytest.approx(60 / (100 + 100 - 60))  # 3/7
    assert out["precision"] == pytest.approx(0.6)
    assert out["recall"] == pytest.approx(0.6)
    assert out["hd95"] == pytest.approx(4.0)
    assert (out["pred_area"], out["true_area"], out["both_empty"]) == (100, 100, 0)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_hd95_of_square_shifted_by_k_is_k(k: int) -> None:
    # MONAI measures between *edges* (mask XOR its erosion), not between all foreground pixels.
    # Shift a 20x20 square right by k: every edge pixel of one square has the shifted copy of itself
    # on the other square's edge at distance k, so no directed distance exceeds k. The trailing
    # column of the original (20 of its 76 edge pixels, > 5 %) has no edge of the other square nearer
    # than k (all of those lie at x >= x0 + k), so the 95th percentile of each direction is exactly k.
    # (The percentile would be smaller if fewer than 5 % of the edge pixels sat at the maximum.)
    gt, pred = square(20, 10, 20), square(20, 10 + k, 20)
    assert binary_metrics(pred, gt)["hd95"] == pytest.approx(float(k))
    assert binary_metrics(gt, pred)["hd95"] == pytest.approx(float(k))  # symmetric


def test_prediction_is_a_subset_of_the_truth() -> None:
    # gt 20x20, prediction = gt without its 4 right-most columns: 20 x 16 = 320 px, all inside gt.
    gt = square(10, 10, 20)
    pred = gt.copy()
    pred[:, 26:] = False
    out = binary_metrics(pred, gt)
    assert out["precision"] == 1.0  # no false positives
    assert out["recall"] == pytest.approx(320 / 400)
    assert out["dice"] == pytest.approx(2 * 320 / (320 + 400))  # 8/9
    assert out["iou"] == pytest.approx(320 / 400)
    # gt's right edge (column 29) is 4 px from the prediction's right edge (column 25); it is 20 of
    # gt's 76 edge pixels, the rest are nearer: the 95th percentile is 4.
    assert out["hd95"] == pytest.approx(4.0)


def test_identical_and_disjoint_masks() -> None:
    m = square(3, 3, 12)
    same = binary_metrics(m, m)
    assert (same["dice"], same["iou"], same["hd95"], same["precision"], same["recall"]) == (1, 1, 0, 1, 1)
    apart = binary_metrics(square(0, 0, 5), square(40, 40, 5))
    assert (apart["dice"], apart["iou"], apart["precision"], apart["recall"]) == (0, 0, 0, 0)
    assert math.isfinite(apart["hd95"]) and apart["hd95"] > 40


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monai_equals_closed_form_tp_fp_fn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.random((37, 53)) < 0.3
    gt = rng.random((37, 53)) < 0.45
    tp = int(np.sum(pred & gt))
    fp = int(np.sum(pred & ~gt))
    fn = int(np.sum(~pred & gt))
    out = binary_metrics(pred, gt)
    # bit-identical (float64), which is what lets the paper's numbers be reproduced exactly
    assert out["dice"] == 2 * tp / (2 * tp + fp + fn)
    assert out["iou"] == tp / (tp + fp + fn)
    assert out["precision"] == tp / (tp + fp)
    assert out["recall"] == tp / (tp + fn)
    assert (out["pred_area"], out["true_area"]) == (tp + fp, tp + fn)


def test_both_empty_conventions() -> None:
    empty = np.zeros((16, 16), dtype=bool)
    std = binary_metrics(empty, empty, empty="standard")
    assert (std["dice"], std["iou"], std["precision"], std["recall"], std["hd95"]) == (1, 1, 1, 1, 0)
    assert std["both_empty"] == 1
    paper = binary_metrics(empty, empty, empty="paper")
    assert (paper["dice"], paper["iou"]) == (0.0, 0.0)  # the release's 0/0 -> 0
    assert paper["both_empty"] == 1
    # non-empty masks score the same in both modes
    a, b = square(2, 2, 6, (16, 16)), square(3, 2, 6, (16, 16))
    assert binary_metrics(a, b, "paper") == binary_metrics(a, b, "standard")


@pytest.mark.parametrize("empty", EMPTY_MODES)
def test_exactly_one_mask_empty(empty: str) -> None:
    blank, blob = np.zeros((16, 16), dtype=bool), square(4, 4, 5, (16, 16))
    missed = binary_metrics(blank, blob, empty)  # nothing predicted
    assert (missed["dice"], missed["iou"], missed["recall"]) == (0, 0, 0)
    assert math.isnan(missed["precision"]) and math.isnan(missed["hd95"])
    false_alarm = binary_metrics(blob, blank, empty)  # prediction on an empty image
    assert (false_alarm["dice"], false_alarm["iou"], false_alarm["precision"]) == (0, 0, 0)
    assert math.isnan(false_alarm["recall"]) and math.isnan(false_alarm["hd95"])
    assert missed["both_empty"] == false_alarm["both_empty"] == 0


def test_accepts_01_integer_masks() -> None:
    m = square(1, 1, 4, (8, 8))
    assert binary_metrics(m.astype(np.uint8), m.astype(np.int64))["dice"] == 1.0


def test_rejects_bad_input() -> None:
    m = square(1, 1, 4, (8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        binary_metrics(m, m[:, :7])
    with pytest.raises(ValueError, match="binary"):
        binary_metrics(m.astype(np.uint8) * 255, m)
    with pytest.raises(ValueError, match="2-D"):
        binary_metrics(m[None], m[None])
    with pytest.raises(ConfigError, match="empty"):
        binary_metrics(m, m, empty="ignore")
