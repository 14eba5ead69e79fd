"""What scoring produces, shared by every scorer and every report: the result type and the summary statistics.

The 2D scorer (:mod:`gmseg.evaluate`), the volume scorer (:mod:`gmseg.volume_evaluate`, :mod:`gmseg.metrics3d`)
and the pages that show their results (:mod:`gmseg.report_html`) all build on this module and on nothing of
each other's, so a report never imports the code that calls it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gmseg.labels import BINARY, LabelSet
from gmseg.metrics import ANY_PREFIX, METRIC_KEYS, class_metric_keys

#: metrics that get mean/std/median/min/max in the summary
SUMMARY_METRICS: tuple[str, ...] = ("dice", "iou", "hd95", "precision", "recall")
#: fixed column order of metrics.csv
CSV_COLUMNS: tuple[str, ...] = ("name", *METRIC_KEYS)


@dataclass
class EvaluationResult:
    """Per-image rows (one dict per image, keys :data:`CSV_COLUMNS`) and the :func:`summarize` dict."""

    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    labels: LabelSet = BINARY  # the classes scored; decides the columns of metrics.csv
    columns: tuple[str, ...] | None = None  # metrics.csv's columns when not csv_columns(labels) (volumes)


def csv_columns(labels: LabelSet = BINARY) -> tuple[str, ...]:
    """metrics.csv's columns: :data:`CSV_COLUMNS` for binary masks, else name + per-class + ``any_*`` keys."""
    return CSV_COLUMNS if labels.is_binary else ("name", *class_metric_keys(labels))


def stats(values: Iterable[float]) -> dict[str, float | int]:
    """mean, std (ddof=1 as the release; nan below 2 values), median, min, max over finite values."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(vals.size)
    if n == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "median": nan, "min": nan, "max": nan, "n": 0}
    return {
        "mean": float(vals.mean()),
        "std": float(vals.std(ddof=1)) if n >= 2 else math.nan,
        "median": float(np.median(vals)),
        "min": float(vals.min()),
        "max": float(vals.max()),
        "n": n,
    }


def summarize(
    rows: Sequence[dict],
    empty: str,
    size: int | str = "native",
    threshold: float | None = None,
    labels: LabelSet = BINARY,
) -> dict:
    """Aggregate per-image rows into ``{"metrics", "counts", "settings"}``.

    Each metric's statistics use only finite values (HD95 is nan when exactly one mask is empty,
    precision/recall when undefined); ``n`` says how many images entered, so a mean over fewer images
    is visible rather than silent. ``settings`` records what makes the numbers comparable. More than two
    ``labels``: :func:`summarize_classes`.
    """
    if not labels.is_binary:
        return summarize_classes(rows, empty, labels, size=size)
    metrics = {key: stats(float(r[key]) for r in rows) for key in SUMMARY_METRICS}
    counts = {
        "n_images": len(rows),
        "n_both_empty": sum(int(r["both_empty"]) for r in rows),
        "n_pred_empty": sum(int(r["pred_area"]) == 0 for r in rows),
        "n_true_empty": sum(int(r["true_area"]) == 0 for r in rows),
        "n_hd95": metrics["hd95"]["n"],
    }
    settings: dict = {"size": size, "empty": empty}
    settings["masks"] = (
        "non-zero is foreground (JPEG: > half scale)"
        if threshold is None
        else (f"foreground > {threshold} of full scale")
    )
    return {"metrics": metrics, "counts": counts, "settings": settings}


def _class_counts(rows: Sequence[dict], prefix: str, suffix: str, n_hd95: int) -> dict[str, int]:
    """The binary summary's empty-mask counts for one class (``<key>_<class>``) or the merged ``any_`` keys."""
    return {
        "n_both_empty": sum(int(r[f"{prefix}both_empty{suffix}"]) for r in rows),
        "n_pred_empty": sum(int(r[f"{prefix}pred_area{suffix}"]) == 0 for r in rows),
        "n_true_empty": sum(int(r[f"{prefix}true_area{suffix}"]) == 0 for r in rows),
        "n_hd95": n_hd95,
    }


def _mean_over_classes(metrics: dict, labels: LabelSet) -> dict[str, dict[str, float | int]]:
    """Each metric's mean of the per-class means (macro average), over the classes where it is defined."""
    out = {}
    for key in SUMMARY_METRICS:
        means = [metrics[f"{key}_{name}"]["mean"] for name in labels.foreground]
        finite = [m for m in means if math.isfinite(m)]
        out[key] = {"mean": float(np.mean(finite)) if finite else math.nan, "n_classes": len(finite)}
    return out


def summarize_classes(rows: Sequence[dict], empty: str, labels: LabelSet, size: int | str = "native") -> dict:
    """Per-class summary of label-map rows (:func:`gmseg.metrics.class_metrics`).

    ``metrics``: the statistics (:func:`stats`, with ``n``) of every ``<metric>_<class>`` and
    ``any_<metric>`` column; ``mean_over_classes``: each metric's mean of the per-class means and how many
    classes entered it; ``counts``: ``n_images``, the binary counts per class (``classes``) and merged
    (``any``); ``labels``: the dataset.json labels scored; ``settings`` as for binary masks.
    """
    metrics = {
        f"{key}_{name}": stats(float(r[f"{key}_{name}"]) for r in rows)
        for key in SUMMARY_METRICS
        for name in labels.foreground
    }
    metrics.update({ANY_PREFIX + key: stats(float(r[ANY_PREFIX + key]) for r in rows) for key in SUMMARY_METRICS})
    classes = {name: _class_counts(rows, "", f"_{name}", metrics[f"hd95_{name}"]["n"]) for name in labels.foreground}
    counts = {
        "n_images": len(rows),
        "classes": classes,
        "any": _class_counts(rows, ANY_PREFIX, "", metrics[ANY_PREFIX + "hd95"]["n"]),
    }
    settings = {"size": size, "empty": empty, "masks": "label maps of class values"}
    return {
        "metrics": metrics,
        "mean_over_classes": _mean_over_classes(metrics, labels),
        "counts": counts,
        "labels": labels.to_labels(),
        "settings": settings,
    }
