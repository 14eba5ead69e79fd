"""The pictures ``gmseg test`` draws of scored cases: report.png (best, median and worst) and a 2D layout's
report.html, shared by the test of a prepared folder (:mod:`gmseg.testing`), of nnU-Net 2D files
(:mod:`gmseg.planar_testing`) and of volumes (:mod:`gmseg.volume_testing`).

Below all three, so none of them imports another for its reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data.readers import OUTPUT_2D_SUFFIX
from .errors import GmsegError
from .evaluate import EvaluationResult, extreme_rows
from .report_html import REPORT_HTML, case_view, report_page, write_pictures

#: The picture of the best, median and worst cases every ``gmseg test`` writes into ``--out``.
REPORT_PICTURE = "report.png"
#: The files ``gmseg test`` writes into ``--out`` besides ``predictions/``: replaced only with ``--overwrite``.
TEST_OUTPUTS = ("timing.json", "tested_names.json", "metrics.csv", "summary.json", REPORT_PICTURE)


def record_tested(
    guard: Any, out_dir: Path, report: Any, unit: str, device: str, tta: bool, names: list[str] | None
) -> Path | None:
    """After a test's prediction: refuse a failed one (naming its files), then write ``timing.json`` and,
    when the tested names are known, ``tested_names.json`` (returned), as every ``gmseg test`` path does."""
    from .data.splits import save_split

    if not report.ok:
        raise GmsegError(report.summary())
    timing = report.timing(unit, device, tta)
    guard.write_text(out_dir / "timing.json", json.dumps(timing, indent=2) + "\n")
    if names is None:
        return None
    path = out_dir / "tested_names.json"
    guard.save(path, lambda target: save_split({"test": names}, target))
    return path


def write_report(
    result: EvaluationResult,
    files: Callable[[str], tuple[Path | None, Path | None]],
    predictions: Path,
    path: Path,
    guard: Any = None,
) -> Path:
    """The best, median and worst cases as overlays: where a person would rather look than read.

    ``files`` gives a scored name's (image, truth) files (an nnU-Net case's image is named ``CASE_0000``)."""
    from .visualize import report_grid

    labels = result.labels
    # Multi-class: cases ranked and titled by the lesion-vs-background Dice (all classes merged).
    key = "dice" if labels.is_binary else "any_dice"
    cases = []
    for row in extreme_rows(result.rows, key=key):
        name = row["name"]
        image_file, gt_file = files(name)
        view = case_view(image_file, predictions / f"{name}{OUTPUT_2D_SUFFIX}", gt_file, labels)
        if view is None:
            continue  # drawn only when all three line up; the metrics already reported the mismatch
        dice = float(row[key]) if np.isfinite(row[key]) else 0.0
        cases.append({"name": name, "image": view[0], "pred": view[1], "gt": view[2], "dice": dice})
    what = "Dice" if labels.is_binary else "lesion Dice (classes merged)"
    title = f"{what} mean {result.summary['metrics'][key]['mean']:.3f} over {len(result.rows)} images"
    return report_grid(cases, path, title=title, labels=labels, guard=guard)


def write_planar_report_html(
    result: EvaluationResult,
    files: dict[str, tuple[Path, Path]],
    predictions: Path,
    out_dir: Path,
    guard: Any,
    threshold: float | None = None,
) -> Path:
    """report.html of 2D cases whose image and truth are named apart (``CASE_0000.png``, ``CASE.png``)."""
    from .evaluate import csv_columns

    labels = result.labels

    def cases() -> Any:
        for row in result.rows:
            image_file, gt_file = files[row["name"]]
            pred_file = predictions / f"{row['name']}{OUTPUT_2D_SUFFIX}"
            view = case_view(image_file, pred_file, gt_file, labels, threshold)
            if view is not None:
                yield row["name"], view, [view]

    pictures = write_pictures(cases(), out_dir, guard, labels)
    columns = result.columns or csv_columns(labels)
    page = report_page(result.rows, result.summary, labels, f"gmseg report: {out_dir}", pictures, columns)
    return guard.write_text(out_dir / REPORT_HTML, page)


def write_volume_report(
    result: EvaluationResult,
    pairs: list[tuple[str, Path, Path]],
    image_files: dict[str, Path],
    model: Any,
    path: Path,
    guard: Any = None,
) -> Path:
    """Best, median and worst cases by mean Dice over classes, each at its fullest slice (truth, then
    prediction), the image normalised as the model saw it."""
    from .data.normalization import VolumeInput
    from .data.readers import read_volume
    from .data.slicing import slice_axis, take_slice
    from .metrics3d import foreground_slices
    from .visualize import report_grid

    labels = result.labels
    record = getattr(model, "volume_input", None) or VolumeInput()
    truths = {name: gt for name, _, gt in pairs}
    predictions = {name: pred for name, pred, _ in pairs}
    sources = {row["name"]: row for row in result.rows}
    shown = []
    for row in extreme_rows(result.rows, key="mean_dice"):
        name = row["name"]
        gt = read_volume(truths[name])
        pred = read_volume(predictions[name]).array
        image = read_volume(image_files[name]).array
        axis = slice_axis(gt.geometry.spacing, record.slice_axis)
        index = foreground_slices(gt.array, pred, count=1, axis=axis)[0]
        pixels = record.pixels(take_slice(image, axis, index), record.statistics(image))
        rgb = np.repeat(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        truth, predicted = take_slice(gt.array, axis, index), take_slice(pred, axis, index)
        if labels.is_binary:
            truth, predicted = truth != 0, predicted != 0
        else:
            truth, predicted = truth.astype(np.uint8), predicted.astype(np.uint8)
        dice = float(sources[name]["mean_dice"])
        shown.append(
            {
                "name": f"{name} (slice {index})",
                "image": rgb,
                "pred": predicted,
                "gt": truth,
                "dice": dice if np.isfinite(dice) else 0.0,
            }
        )
    mean = result.summary["metrics"]["mean_dice"]["mean"]
    title = f"3D Dice (mean over classes) {mean:.3f} over {len(result.rows)} cases; each at its fullest slice"
    return report_grid(shown, path, title=title, labels=labels, guard=guard)
