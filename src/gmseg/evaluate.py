"""Score predicted masks against ground truth and write per-image and summary reports.

Two resolutions are supported because they answer different questions:

* ``size="native"`` scores at the ground truth's own resolution: the honest number for a user's data.
* ``size=224`` (an int) resizes both masks to size x size with PIL NEAREST first, as the GMS release's
  ``valid.py`` does; with ``empty="paper"`` this reproduces the paper's numbers exactly.

Masks are read by the one mask rule every verb uses (:func:`gmseg.data.io.inspect_mask`: any non-zero
pixel is foreground, JPEG at half scale), so ``prepare``, training and evaluation see the same lesion; for
0/255 masks this is what the release's ``convert("L") / 255 >= 0.5`` gives. A ground-truth mask encoded
unlike the rest of its folder, or soft, is reported in ``EvaluationResult.warnings``.

With more than two classes (the ground-truth root's ``dataset.json`` names them, or ``labels=``), masks
and predictions are label maps of class values (:func:`gmseg.data.io.read_label_map`); every foreground class is scored
on its own with the binary conventions (:func:`gmseg.metrics.class_metrics`), plus all of them merged
(``any_*``). ``metrics.csv`` then has the columns :func:`csv_columns` and ``summary.json`` the layout of
:func:`summarize_classes`. The binary reports are exactly as before.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from gmseg.bounds import MAX_IMAGE_SIZE, check_mask_threshold
from gmseg.data.dataset import DATASET_JSON, dataset_labels
from gmseg.data.io import MaskReading, inspect_mask, odd_encodings, read_label_map
from gmseg.data.readers import OUTPUT_2D_SUFFIX, header_size
from gmseg.data.resample import resize_label_map, resize_mask
from gmseg.errors import ConfigError, DataError, GmsegError
from gmseg.fileio import atomic_write_text, json_safe
from gmseg.labels import BINARY, LabelSet
from gmseg.metrics import ANY_PREFIX, binary_metrics, check_empty_mode, class_metrics
from gmseg.report_html import images_of, plan_report, write_report_html
from gmseg.scores import CSV_COLUMNS as CSV_COLUMNS  # re-exported: metrics.csv's binary columns
from gmseg.scores import SUMMARY_METRICS, EvaluationResult, csv_columns, summarize, summarize_classes
from gmseg.volume_evaluate import evaluate_volume_folders, has_volumes, volume_images_of, write_volume_folder_report

#: files written next to predictions by ``gmseg predict`` that are not masks
_NOT_PREDICTIONS = (f".overlay{OUTPUT_2D_SUFFIX}",)


def extreme_rows(rows: list[dict], per_group: int = 3, key: str = "dice") -> list[dict]:
    """Worst, median and best rows by Dice (``key``), so only those images are read for the report."""
    ranked = sorted(rows, key=lambda r: float(r[key]) if np.isfinite(r[key]) else -1.0)
    middle = max(0, len(ranked) // 2 - per_group // 2)
    picked = {id(r): r for r in ranked[:per_group] + ranked[middle : middle + per_group] + ranked[-per_group:]}
    return list(picked.values())


def parse_size(size: int | str) -> int | str:
    """Accept ``"native"`` or a positive int (also as a string, as the CLI passes it)."""
    if isinstance(size, str):
        text = size.strip().lower()
        if text == "native":
            return "native"
        if text.isdigit():
            size = int(text)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and 0 < int(size) <= MAX_IMAGE_SIZE:
        return int(size)
    raise ConfigError(f"size must be 'native' or an integer in [1, {MAX_IMAGE_SIZE}] (e.g. 224), got {size!r}")


def evaluate_masks(
    pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], empty: str = "standard", labels: LabelSet = BINARY
) -> EvaluationResult:
    """Score in-memory ``(name, pred, gt)`` masks (e.g. straight from a model, no files).

    Binary masks by default; with more than two ``labels``, label maps of class values.
    """
    check_empty_mode(empty)
    if not labels.is_binary:
        rows = [{"name": name, **class_metrics(pred, gt, labels, empty)} for name, pred, gt in pairs]
        return EvaluationResult(rows=rows, summary=summarize_classes(rows, empty, labels), labels=labels)
    rows = [{"name": name, **binary_metrics(pred, gt, empty)} for name, pred, gt in pairs]
    return EvaluationResult(rows=rows, summary=summarize(rows, empty))


def _load_mask(path: Path, size: int | str, threshold: float | None) -> tuple[np.ndarray, MaskReading]:
    """A mask by the one rule, then (for a fixed ``size``) PIL NEAREST resizing as the release does."""
    reading = inspect_mask(path, threshold)
    mask = reading.mask.astype(bool)
    if size != "native":
        mask = resize_mask(reading.mask, (size, size))
    return mask, reading


def _load_values(path: Path, size: int | str, labels: LabelSet) -> np.ndarray:
    """A label map (undeclared values are an error naming the file), then (for a fixed ``size``) NEAREST
    resizing: no value is invented between two classes."""
    values = read_label_map(path, labels)
    return values if size == "native" else resize_label_map(values, (size, size))


#: The folders of masks inside a dataset root: a prepared folder's ``masks/``, nnU-Net's / MSD's ``labelsTr/``.
MASK_FOLDERS = ("masks", "labelsTr")


def dataset_labels_of(gt_dir: str | os.PathLike) -> LabelSet:
    """The classes of a ground-truth root (its dataset.json; a ``masks`` or ``labelsTr`` folder's parent's),
    else binary."""
    gt_dir = Path(gt_dir)
    if gt_dir.name in MASK_FOLDERS and not (gt_dir / DATASET_JSON).is_file():
        gt_dir = gt_dir.parent
    return dataset_labels(gt_dir)


def mask_folder(gt_dir: Path) -> Path:
    """The folder of masks a ground truth names: a dataset root's ``masks/`` (else its ``labelsTr/``), or itself."""
    return next((gt_dir / name for name in MASK_FOLDERS if (gt_dir / name).is_dir()), gt_dir)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only, so sizes are checked before any pixel is decoded."""
    return header_size(path)


def _prediction_names(pred_dir: Path) -> list[str]:
    return sorted(
        p.name[: -len(OUTPUT_2D_SUFFIX)]
        for p in pred_dir.glob(f"*{OUTPUT_2D_SUFFIX}")
        if p.is_file() and not p.name.endswith(_NOT_PREDICTIONS)
    )


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    names: list[str] | None = None,
    size: int | str = "native",
    empty: str = "standard",
    threshold: float | None = None,
    labels: LabelSet | None = None,
    missing: str = "error",
) -> EvaluationResult:
    """Score ``pred_dir/NAME.png`` against ``gt_dir/NAME.<image suffix>`` for each name.

    ``gt_dir`` may be a mask folder or a dataset root holding ``masks/`` (or nnU-Net's ``labelsTr/``). ``names=None`` scores every
    ground-truth mask (a prediction without one is an error). A missing prediction is an error unless
    ``missing`` says otherwise (nnU-Net's rule): ``"empty"`` scores it as an empty mask, ``"skip"`` scores
    only the names that have one; either way ``summary.json`` counts them (``n_missing_predictions``).
    Every problem is collected and raised as one :class:`DataError`, so a user fixes all in one pass.
    ``labels`` (default: :func:`dataset_labels_of` ``gt_dir``) with more than two classes scores label maps.
    """
    from gmseg.data.io import IMAGE_SUFFIXES, find_file, index_folder  # lazy: data is developed separately

    check_empty_mode(empty)
    if missing not in MISSING_MODES:
        raise ConfigError(f"missing must be one of {list(MISSING_MODES)}, got {missing!r}")
    size = parse_size(size)
    threshold = check_mask_threshold(threshold)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if has_volumes(pred_dir):  # label volumes: one row per case, scored in 3D with HD95 in mm
        if size != "native" or threshold is not None:
            raise ConfigError("label volumes are scored on their own voxels: drop size and the mask threshold")
        return evaluate_volume_folders(pred_dir, gt_dir, names=names, empty=empty, labels=labels)
    labels = dataset_labels_of(gt_dir) if labels is None else labels
    if not labels.is_binary and threshold is not None:
        raise ConfigError(
            f"a mask threshold ({threshold}) applies to binary masks; the {labels.num_classes} classes "
            f"{list(labels.names)} are read as label-map values: drop the threshold"
        )
    mask_dir = mask_folder(gt_dir)

    folder_problems = []
    if not pred_dir.is_dir():
        folder_problems.append(f"prediction folder not found: {pred_dir}")
    if not mask_dir.is_dir():
        folder_problems.append(f"ground-truth folder not found: {gt_dir}")
    if folder_problems:
        raise DataError("cannot evaluate: folder missing", folder_problems)

    problems: list[str] = []
    if names is None:
        predicted = _prediction_names(pred_dir)
        if not predicted:
            raise DataError("cannot evaluate: no predictions", [f"no NAME{OUTPUT_2D_SUFFIX} masks in {pred_dir}"])
        names = sorted(index_folder(mask_dir))
        truths = set(names)
        problems += [f"{n}: ground-truth mask missing in {mask_dir}" for n in predicted if n not in truths]

    seen: set[str] = set()
    todo: list[tuple[str, Path | None, Path]] = []
    absent: list[str] = []  # names without a prediction, scored empty or left out (``missing``)
    suffixes = "|".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    for name in names:
        if name in seen:
            problems.append(f"{name}: listed more than once")
            continue
        seen.add(name)
        pred_path = pred_dir / f"{name}{OUTPUT_2D_SUFFIX}"
        gt_path = find_file(mask_dir, name)
        if not pred_path.is_file() and missing == "error":
            problems.append(f"{name}: prediction missing: {pred_path}")
        if gt_path is None:
            problems.append(f"{name}: ground-truth mask missing: {mask_dir / name}.{{{suffixes}}}")
        if gt_path is not None and not pred_path.is_file() and missing != "error":
            absent.append(name)
            if missing == "empty":
                todo.append((name, None, gt_path))
        if gt_path is None or not pred_path.is_file():
            continue
        if size == "native":
            try:
                pred_wh, gt_wh = _image_size(pred_path), _image_size(gt_path)
            except (OSError, DataError) as exc:
                problems.append(f"{name}: unreadable: {exc}")
                continue
            if pred_wh != gt_wh:
                problems.append(
                    f"{name}: size mismatch: prediction {pred_path} is {pred_wh[0]}x{pred_wh[1]}, "
                    f"ground truth {gt_path} is {gt_wh[0]}x{gt_wh[1]} (WxH); "
                    "use size=224 to score both at a fixed resolution"
                )
                continue
        todo.append((name, pred_path, gt_path))
    if problems:
        hint = " (score them as empty with --missing empty, or only the rest with --missing skip)"
        missing_named = missing == "error" and any("prediction missing" in p for p in problems)
        raise DataError(
            f"cannot evaluate {pred_dir} against {mask_dir}: {len(problems)} problem(s)"
            + (hint if missing_named else ""),
            problems,
        )
    if not todo:
        raise DataError(f"cannot evaluate {pred_dir}: no name has a prediction", [f"{len(absent)} missing"])
    if not labels.is_binary:
        result = _evaluate_label_maps(todo, pred_dir, size, empty, labels)
        return _note_missing(result, absent, missing)

    rows = []
    readings: dict[str, MaskReading] = {}
    for name, pred_path, gt_path in todo:
        try:
            pred = None if pred_path is None else _load_mask(pred_path, size, threshold)[0]
        except (OSError, ValueError, DataError) as exc:
            problems.append(f"{name}: cannot read prediction {pred_path}: {exc}")
            continue
        try:
            gt, readings[str(gt_path)] = _load_mask(gt_path, size, threshold)
        except (OSError, ValueError, DataError) as exc:
            problems.append(f"{name}: cannot read ground truth {gt_path}: {exc}")
            continue
        pred = np.zeros_like(gt, dtype=bool) if pred is None else pred
        rows.append({"name": name, **binary_metrics(pred, gt, empty)})
    if problems:
        raise DataError(f"cannot evaluate {pred_dir}: {len(problems)} unreadable file(s)", problems)
    warnings = odd_encodings({p: r.encoding for p, r in readings.items()})
    warnings += [
        f"{p}: soft ground truth ({r.levels} grey levels) binarised at > 0"
        for p, r in readings.items()
        if r.soft and threshold is None
    ]
    summary = summarize(rows, empty, size=size, threshold=threshold)
    return _note_missing(EvaluationResult(rows=rows, summary=summary, warnings=warnings), absent, missing)


#: What ``evaluate`` does with a name that has a ground-truth mask but no prediction (nnU-Net: an error).
MISSING_MODES = ("error", "empty", "skip")


def _note_missing(result: EvaluationResult, absent: list[str], missing: str) -> EvaluationResult:
    """Record in the summary (and a warning) how many predictions were missing and what was done."""
    result.summary["counts"]["n_missing_predictions"] = len(absent)
    result.summary.setdefault("settings", {})["missing"] = missing
    if absent:
        done = "scored as empty masks" if missing == "empty" else "left out of every mean"
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        result.warnings.insert(0, f"{len(absent)} prediction(s) missing, {done} (--missing {missing}): {shown}")
    return result


def _evaluate_label_maps(
    todo: Sequence[tuple[str, Path | None, Path]], pred_dir: Path, size: int | str, empty: str, labels: LabelSet
) -> EvaluationResult:
    """Score label-map pairs per class; every unreadable file or undeclared value is collected, then raised."""
    rows, problems = [], []
    present: set[int] = set()
    for name, pred_path, gt_path in todo:
        maps = []
        for what, path in (("prediction", pred_path), ("ground truth", gt_path)):
            if path is None:  # a missing prediction scored as empty: filled in below, at the truth's shape
                continue
            try:
                maps.append(_load_values(path, size, labels))
            except (OSError, ValueError, GmsegError) as exc:
                problems.append(f"{name}: cannot read {what} {path}: {exc}")
        if pred_path is None and len(maps) == 1:
            maps.insert(0, np.zeros_like(maps[0]))
        if len(maps) == 2:
            present.update(int(v) for v in np.unique(maps[1]))
            rows.append({"name": name, **class_metrics(maps[0], maps[1], labels, empty)})
    if problems:
        raise DataError(f"cannot evaluate {pred_dir}: {len(problems)} unreadable file(s)", problems)
    warnings = [
        f"class {n!r} (value {v}) is in no ground-truth mask: its scores are the empty-mask convention ({empty})"
        for n, v in zip(labels.foreground, labels.values[1:])
        if v not in present
    ]
    summary = summarize_classes(rows, empty, labels, size=size)
    return EvaluationResult(rows=rows, summary=summary, warnings=warnings, labels=labels)


def write_results(result: EvaluationResult, out_dir: str | os.PathLike, guard: Any = None) -> tuple[Path, Path]:
    """Write ``metrics.csv`` (one row per image, :func:`csv_columns` order) and ``summary.json``.

    CSV floats keep full precision (``nan`` where undefined); JSON writes undefined values as null. With a
    ``guard`` (:class:`gmseg.outputs.OutputGuard`) the files are written through it (the file rule).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text = atomic_write_text if guard is None else guard.write_text
    columns = result.columns or csv_columns(result.labels)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in result.rows:
        writer.writerow([row[c] for c in columns])
    csv_path, json_path = out / "metrics.csv", out / "summary.json"
    write_text(csv_path, buf.getvalue())
    write_text(json_path, json.dumps(json_safe(result.summary), indent=2, allow_nan=False) + "\n")
    return csv_path, json_path


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_class_summary(summary: dict) -> str:
    """The per-class table (mean of each metric), merged and mean-of-classes rows, per-class counts, labels."""
    metrics, counts = summary["metrics"], summary["counts"]
    names = list(counts["classes"])
    width = max(17, *(len(n) + 2 for n in names))
    lines = [f"{'class':<{width}}" + "".join(f"{k:>10}" for k in SUMMARY_METRICS)]

    def row(label: str, means: list[float | None]) -> str:
        cells = [_cell(m, 2 if k == "hd95" else 4) for k, m in zip(SUMMARY_METRICS, means)]
        return f"{label:<{width}}" + "".join(f"{c:>10}" for c in cells)

    for name in names:
        lines.append(row(name, [metrics[f"{k}_{name}"]["mean"] for k in SUMMARY_METRICS]))
    lines.append(row("any (merged)", [metrics[ANY_PREFIX + k]["mean"] for k in SUMMARY_METRICS]))
    macro = summary["mean_over_classes"]
    lines.append(row("mean of classes", [macro[k]["mean"] for k in SUMMARY_METRICS]))
    n = counts["n_images"]
    lines.append(f"images {n}; per class (n = images scored):")
    groups = [(name, counts["classes"][name], f"dice_{name}") for name in names]
    for label, c, dice_key in [*groups, ("any (merged)", counts["any"], ANY_PREFIX + "dice")]:
        lines.append(
            f"  {label}: in {n - c['n_true_empty']} ground truth(s), both empty {c['n_both_empty']}, "
            f"pred empty {c['n_pred_empty']}; dice n {metrics[dice_key]['n']}, hd95 n {c['n_hd95']}"
        )
    lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in summary["labels"].items()))
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in summary.get("settings", {}).items()))
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """A small aligned table (metric | mean | std | median) plus counts, for the terminal.

    A summary of more than two classes gets :func:`format_class_summary`'s per-class table instead.
    """
    if len(summary.get("labels", ())) > 2 or "classes" in summary.get("counts", {}):
        return format_class_summary(summary)
    lines = [f"{'metric':<10}{'mean':>10}{'std':>10}{'median':>10}"]
    for key, st in summary["metrics"].items():
        digits = 2 if key == "hd95" else 4  # hd95 is in pixels
        cells = [
            "n/a" if st[s] is None or not math.isfinite(st[s]) else f"{st[s]:.{digits}f}"
            for s in ("mean", "std", "median")
        ]
        lines.append(f"{key:<10}" + "".join(f"{c:>10}" for c in cells))
    c = summary["counts"]
    lines.append(
        f"images {c['n_images']}, both empty {c['n_both_empty']}, pred empty {c['n_pred_empty']}, "
        f"true empty {c['n_true_empty']}; hd95 over {c['n_hd95']} image(s)"
    )
    s = summary.get("settings", {})
    lines.append("settings: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    return "\n".join(lines)


def run_evaluate(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    split: str | os.PathLike | None = None,
    stage: str = "test",
    size: int | str = "native",
    empty: str = "standard",
    threshold: float | None = None,
    labels: LabelSet | None = None,
    images: str | os.PathLike | None = None,
    overwrite: bool = False,
    guard: Any = None,
    missing: str = "error",
) -> EvaluationResult:
    """What ``gmseg evaluate`` runs: names from the split file's ``stage`` (if given), score, write.
    ``missing``: what a name without a prediction gets (:data:`MISSING_MODES`; :func:`evaluate_folders`).

    Reports go to ``out_dir`` (default: ``pred_dir``, next to the predictions they describe). ``labels``
    defaults to the ground-truth root's dataset.json (:func:`dataset_labels_of`). When the images are known
    (``images``, or the ``images/`` beside the ground truth's ``masks/``; for label volumes the task folder's
    ``imagesTr/``), ``report.html`` is written too (:mod:`gmseg.report_html`; volumes at their fullest slice).

    Written by the file rule (:class:`gmseg.outputs.OutputGuard`): ``out_dir`` is claimed, an existing
    ``metrics.csv`` or ``summary.json`` is replaced only with ``overwrite``, never inside the ground truth.
    ``guard`` is a caller's guard that already claimed ``out_dir`` (``gmseg test``).
    """
    if images is not None and not Path(images).is_dir():
        raise ConfigError(f"images folder not found: {images} (give the folder of the scored images)")
    names = None
    if split is not None:
        from gmseg.data.splits import load_split  # lazy: data is developed separately

        stages = load_split(split)
        if stage not in stages:
            raise ConfigError(f"split file {split} has no stage {stage!r}; it has {sorted(stages)}")
        names = list(stages[stage])
    out = Path(pred_dir if out_dir is None else out_dir)
    volumes = has_volumes(pred_dir)
    if images is None:
        images = volume_images_of(gt_dir) if volumes else images_of(gt_dir)
    with nullcontext(guard) if guard is not None else _evaluation_guard(out, gt_dir, overwrite) as guard:
        if images is not None:
            plan_report(guard, out, Path(images))
        result = evaluate_folders(
            pred_dir, gt_dir, names=names, size=size, empty=empty, threshold=threshold, labels=labels, missing=missing
        )
        write_results(result, out, guard)
        if images is not None and volumes:
            write_volume_folder_report(result, pred_dir, gt_dir, images, out, guard)
        elif images is not None:
            write_report_html(result, out, images, gt_dir, pred_dir, threshold=threshold, guard=guard)
    return result


@contextmanager
def _evaluation_guard(out: Path, gt_dir: str | os.PathLike, overwrite: bool) -> Iterator[Any]:
    """``gmseg evaluate``'s outputs: ``out`` claimed, the reports planned before any scoring."""
    from gmseg.outputs import OutputGuard

    with OutputGuard("evaluate", overwrite=overwrite) as guard:
        guard.claim(out)
        gt = Path(gt_dir)
        guard.read_folder(gt, *[gt / name for name in MASK_FOLDERS])
        guard.plan(out / "metrics.csv", out / "summary.json")
        yield guard
