"""Scoring folders of label volumes: one row per case, in 3D, HD95 in millimetres (:mod:`gmseg.metrics3d`).

``gmseg evaluate --pred DIR --gt DIR`` comes here when ``DIR`` holds volume files (NIfTI, NRRD, MHA).
Predictions ``NAME.<ext>`` are matched by case name with ground truths ``NAME.<any volume ending>`` in the
ground-truth folder (or its ``labelsTr/``: an MSD task or nnU-Net raw dataset root may be given). The
classes are the ground-truth dataset's (its dataset.json, or its parent's for ``labelsTr/``); the spacing
is the ground truth's, and a prediction must have its shape and spacing (a resampled prediction would be
scored on the wrong voxels). Every problem is collected and raised as one :class:`DataError`.

When the images are known (``--images``, or the ``imagesTr/`` of the task folder), ``report.html`` shows each
case at its fullest slice (:func:`write_volume_folder_report`), as ``gmseg test`` does on volume datasets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gmseg.errors import DataError
from gmseg.labels import BINARY, LabelSet
from gmseg.metrics import check_empty_mode
from gmseg.metrics3d import case_metrics, nnunet_case, summarize_volumes, volume_columns
from gmseg.outputs import OutputGuard
from gmseg.report_html import write_volume_report_html
from gmseg.scores import EvaluationResult

__all__ = [
    "evaluate_volume_folders",
    "evaluate_volumes",
    "has_volumes",
    "volume_images_of",
    "volume_labels",
    "write_volume_folder_report",
]

#: files ``gmseg predict`` writes beside label volumes that are not predictions (probability volumes)
_PROBABILITY_MARK = ".prob"


def _volume_files(folder: Path) -> dict[str, Path]:
    """Case name -> volume file in ``folder`` (probability volumes left out)."""
    from gmseg.data.readers import is_volume_file, split_name

    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        name = split_name(path)[0]
        if path.is_file() and is_volume_file(path) and _PROBABILITY_MARK not in name:
            found[name] = path
    return found


def has_volumes(pred_dir: str | os.PathLike[str]) -> bool:
    """Whether a prediction folder holds label volumes (then it is scored by case, in 3D)."""
    return bool(_volume_files(Path(pred_dir)))


def _truth_folder(gt_dir: Path) -> Path:
    """The folder of label volumes: ``gt_dir`` itself, or the ``labelsTr/`` of a dataset root."""
    return gt_dir / "labelsTr" if (gt_dir / "labelsTr").is_dir() else gt_dir


def volume_labels(gt_dir: str | os.PathLike[str]) -> LabelSet:
    """The classes of a ground-truth folder: its dataset.json, its dataset root's (for ``labelsTr/``), else binary."""
    gt_dir = Path(gt_dir)
    for folder in (gt_dir, gt_dir.parent):
        if (folder / "dataset.json").is_file():
            return LabelSet.from_dataset_json(folder / "dataset.json")
    return BINARY


def evaluate_volumes(
    pairs: Sequence[tuple[str, Path, Path]], labels: LabelSet, empty: str = "standard"
) -> tuple[list[dict], list[dict], list[str]]:
    """Rows, nnU-Net case entries and problems for ``(name, prediction file, ground-truth file)`` pairs."""
    from gmseg.data.readers import read_volume

    rows, cases, problems = [], [], []
    for name, pred_path, gt_path in pairs:
        try:
            pred, gt = read_volume(pred_path), read_volume(gt_path)
        except DataError as error:
            problems += list(error.problems) or [str(error)]
            continue
        if pred.array.shape != gt.array.shape or not np.allclose(pred.geometry.spacing, gt.geometry.spacing, rtol=1e-4):
            problems.append(
                f"{name}: prediction {pred_path} is {pred.array.shape} voxels of {pred.geometry.spacing} mm but the "
                f"ground truth {gt_path} is {gt.array.shape} of {gt.geometry.spacing} mm; predict on the "
                "ground truth's own grid"
            )
            continue
        try:
            p, g = _label_map(pred.array, labels, pred_path), _label_map(gt.array, labels, gt_path)
        except DataError as error:
            problems += list(error.problems)
            continue
        rows.append({"name": name, **case_metrics(p, g, labels, gt.geometry.spacing, empty)})
        cases.append(nnunet_case(p, g, labels, str(pred_path), str(gt_path)))
    return rows, cases, problems


def _label_map(array: np.ndarray, labels: LabelSet, path: Path) -> np.ndarray:
    """A (Z, Y, X) integer map of declared class values; a float file holding whole numbers is accepted."""
    values = np.asarray(array)
    if values.ndim != 3:
        raise DataError(f"not a label volume: {path}", [f"{path}: array {values.shape}, expected (Z, Y, X)"])
    if not np.issubdtype(values.dtype, np.integer):
        if not np.array_equal(values, np.round(values)):
            raise DataError(f"not a label volume: {path}", [f"{path}: {values.dtype} values are not class values"])
        values = values.astype(np.int64)
    found = set(int(v) for v in np.unique(values))
    undeclared = sorted(found - set(labels.values))
    if undeclared:
        raise DataError(
            f"undeclared label values in {path}",
            [f"{path}: values {undeclared} are no class of {dict(zip(labels.names, labels.values))}"],
        )
    return values


def evaluate_volume_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    empty: str = "standard",
    labels: LabelSet | None = None,
) -> EvaluationResult:
    """Score every label volume of ``pred_dir`` (or the cases ``names``) against ``gt_dir``'s: one
    :class:`~gmseg.scores.EvaluationResult` row per case, :func:`gmseg.metrics3d.volume_columns`."""
    check_empty_mode(empty)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    truth_dir = _truth_folder(gt_dir)
    labels = volume_labels(truth_dir) if labels is None else labels
    predictions, truths = _volume_files(pred_dir), _volume_files(truth_dir)
    if not truths:
        raise DataError("cannot evaluate: no ground truth", [f"{truth_dir}: no label volumes (.nii.gz, .nrrd ...)"])
    wanted = sorted(predictions) if names is None else list(names)
    problems = [f"{n}: prediction missing in {pred_dir}" for n in wanted if n not in predictions]
    problems += [f"{n}: ground truth missing in {truth_dir}" for n in wanted if n not in truths]
    if problems:
        raise DataError(f"cannot evaluate {pred_dir} against {truth_dir}: {len(problems)} problem(s)", problems)
    pairs = [(n, predictions[n], truths[n]) for n in wanted]
    rows, cases, problems = evaluate_volumes(pairs, labels, empty)
    if problems:
        raise DataError(f"cannot evaluate {pred_dir}: {len(problems)} problem(s)", problems)
    present = {name for name in labels.foreground if any(int(r[f"true_area_{name}"]) for r in rows)}
    warnings = [
        f"class {name!r} is in no ground-truth volume: its scores are the empty-mask convention ({empty})"
        for name in labels.foreground
        if name not in present
    ]
    summary = summarize_volumes(rows, cases, empty, labels)
    return EvaluationResult(
        rows=rows, summary=summary, warnings=warnings, labels=labels, columns=volume_columns(labels)
    )


def volume_images_of(gt_dir: str | os.PathLike[str]) -> Path | None:
    """The image volumes beside a ground truth: the ``imagesTr/`` of a task folder (MSD, nnU-Net raw), given
    the folder itself or its ``labelsTr/``; None when there is none."""
    gt_dir = Path(gt_dir)
    root = gt_dir.parent if gt_dir.name == "labelsTr" and not (gt_dir / "labelsTr").is_dir() else gt_dir
    return root / "imagesTr" if (root / "imagesTr").is_dir() else None


def case_images(images_dir: Path, names: Sequence[str]) -> dict[str, Path]:
    """Each case's image volume in ``images_dir``: ``NAME.<ending>`` (MSD: all channels in one file) or its
    first channel ``NAME_0000.<ending>`` (nnU-Net); a case with neither is left out (drawn without picture)."""
    files = _volume_files(images_dir)
    found = {name: files.get(name) or files.get(f"{name}_0000") for name in names}
    return {name: path for name, path in found.items() if path is not None}


def write_volume_folder_report(
    result: EvaluationResult,
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    guard: OutputGuard,
) -> Path:
    """report.html of the volume cases :func:`evaluate_volume_folders` scored (``result``): each case at its
    fullest slice, opened large its fullest three (:func:`gmseg.report_html.write_volume_report_html`)."""
    predictions, truths = _volume_files(Path(pred_dir)), _volume_files(_truth_folder(Path(gt_dir)))
    names = [str(row["name"]) for row in result.rows]
    pairs = [(name, predictions[name], truths[name]) for name in names]
    return write_volume_report_html(result, pairs, case_images(Path(images_dir), names), out_dir, guard)
