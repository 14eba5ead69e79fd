"""Scoring volumes: one row per case, 3D Dice, IoU and HD95 in millimetres, per class and over classes.

A volume is scored as a whole, not slice by slice: per-slice scores weigh a slice that grazes a structure
as much as its middle, which is not how the field reports volumes. Each foreground class is scored with
:func:`gmseg.metrics.class_metrics` (MONAI, the 2D code's both-empty conventions per class) given the
volume's voxel spacing, so HD95 is in millimetres along the array axes (z, y, x): an anisotropic volume
measures a one-voxel error along its thick axis as that axis's spacing. The row adds ``mean_dice``,
``mean_iou`` and ``mean_hd95``, the mean over the foreground classes of that case (finite values only).

``summary.json`` keeps gmseg's per-class summary (:func:`gmseg.scores.summarize_classes`) and adds
nnU-Net's own three fields (``metric_per_case``, ``mean``, ``foreground_mean``, as
``nnunetv2/evaluation/evaluate_predictions.py`` writes them), computed nnU-Net's way so a result sits
beside nnU-Net's: per label Dice, IoU, TP, FP, FN, TN, n_pred, n_ref; Dice and IoU ``nan`` (JSON null) when
a label is absent from both maps; ``mean`` the nan-mean over cases per label; ``foreground_mean`` the mean
of the labels' means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from gmseg.errors import ConfigError
from gmseg.labels import LabelSet
from gmseg.metrics import check_empty_mode, class_metric_keys, class_metrics
from gmseg.scores import stats, summarize_classes

#: the per-case means over foreground classes, appended to each row (and to metrics.csv)
MEAN_KEYS: tuple[str, ...] = ("mean_dice", "mean_iou", "mean_hd95")
#: nnU-Net's per-label metrics, in its order
NNUNET_METRICS: tuple[str, ...] = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")


def volume_columns(labels: LabelSet) -> tuple[str, ...]:
    """metrics.csv's columns for volumes: name, the per-class and merged keys of the 2D code, then the means."""
    return ("name", *class_metric_keys(labels), *MEAN_KEYS)


def check_spacing(spacing: Sequence[float], shape: tuple[int, ...]) -> tuple[float, float, float]:
    """Three positive finite lengths for a 3-D volume; anything else would make HD95 meaningless."""
    values = tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ConfigError(f"a volume needs 3 axes and 3 positive spacings, got shape {shape} and spacing {spacing}")
    return values  # type: ignore[return-value]


def _finite_mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def case_metrics(
    pred: np.ndarray, gt: np.ndarray, labels: LabelSet, spacing: Sequence[float], empty: str = "standard"
) -> dict[str, float]:
    """One case's row (without its name): :func:`volume_columns`' keys, HD95 in the units of ``spacing``.

    ``pred`` and ``gt`` are (Z, Y, X) maps of class values; ``spacing`` the (z, y, x) voxel size in mm.
    """
    check_empty_mode(empty)
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    voxel = check_spacing(spacing, gt.shape)
    row = class_metrics(pred, gt, labels, empty, spacing=voxel)
    for key in MEAN_KEYS:
        metric = key.removeprefix("mean_")
        row[key] = _finite_mean(float(row[f"{metric}_{name}"]) for name in labels.foreground)
    return row


def nnunet_case(
    pred: np.ndarray, gt: np.ndarray, labels: LabelSet, prediction_file: str = "", reference_file: str = ""
) -> dict:
    """One entry of nnU-Net's ``metric_per_case``: per foreground label (key: its value as a string) the
    confusion counts, Dice and IoU as nnU-Net computes them (nan when the label is in neither map)."""
    metrics = {}
    for value in labels.values[1:]:
        p, g = pred == value, gt == value
        tp = int(np.count_nonzero(p & g))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(g)) - tp
        tn = int(g.size) - tp - fp - fn
        union = tp + fp + fn
        metrics[str(value)] = {
            "Dice": 2 * tp / (2 * tp + fp + fn) if union else math.nan,
            "IoU": tp / union if union else math.nan,
            "FP": fp,
            "TP": tp,
            "FN": fn,
            "TN": tn,
            "n_pred": tp + fp,
            "n_ref": tp + fn,
        }
    return {"reference_file": reference_file, "prediction_file": prediction_file, "metrics": metrics}


def nnunet_fields(cases: Sequence[dict], labels: LabelSet) -> dict:
    """``metric_per_case``, ``mean`` (nan-mean over cases per label) and ``foreground_mean`` (mean of the
    labels' means), the fields of nnU-Net's summary.json."""
    keys = [str(v) for v in labels.values[1:]]
    means: dict[str, dict[str, float]] = {}
    for key in keys:
        means[key] = {}
        for metric in NNUNET_METRICS:
            values = np.asarray([case["metrics"][key][metric] for case in cases], dtype=np.float64)
            finite = values[~np.isnan(values)]
            means[key][metric] = float(finite.mean()) if finite.size else math.nan
    foreground_mean = {metric: float(np.mean([means[k][metric] for k in keys])) for metric in NNUNET_METRICS}
    return {"metric_per_case": list(cases), "mean": means, "foreground_mean": foreground_mean}


def summarize_volumes(rows: Sequence[dict], cases: Sequence[dict], empty: str, labels: LabelSet) -> dict:
    """gmseg's per-class summary of the case rows, the per-case means' statistics and nnU-Net's fields."""
    summary = summarize_classes(rows, empty, labels, size="native")
    summary["metrics"].update({key: stats(float(r[key]) for r in rows) for key in MEAN_KEYS})
    summary["settings"].update({"unit": "case (3D)", "hd95": "mm (voxel spacing)"})
    summary.update(nnunet_fields(cases, labels))
    return summary


def foreground_slices(gt: np.ndarray, pred: np.ndarray, count: int = 3, axis: int = 0) -> list[int]:
    """The ``count`` slices along ``axis`` with the most foreground (truth, then prediction, breaking ties),
    in order along the axis: what a report picture of a case shows."""
    other = tuple(a for a in range(gt.ndim) if a != axis)
    truth = np.count_nonzero(gt, axis=other)
    predicted = np.count_nonzero(pred, axis=other)
    order = sorted(range(gt.shape[axis]), key=lambda i: (-int(truth[i]), -int(predicted[i]), i))
    return sorted(order[: max(1, min(count, gt.shape[axis]))])
