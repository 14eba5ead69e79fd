"""Score predicted masks against ground truth and write per-image and summary reports.

Two resolutions are supported because they answer different questions:

* ``size="native"`` scores at the ground truth's own resolution: the honest number for a user's data.
* ``size=224`` (an int) resizes both masks to size x size with PIL NEAREST first, as the GMS release's
  ``valid.py`` does; with ``empty="paper"`` this reproduces the paper's numbers exactly.

Masks are read by the one mask rule every verb uses (:func:`gmseg.data.io.inspect_mask`: any non-zero
pixel is foreground, JPEG at half scale), so ``prepare``, training and evaluation see the same lesion; for
0/255 masks this is what the release's ``convert("L") / 255 >= 0.5`` gives. A ground-truth mask encoded
unlike the rest of its folder, or soft, is reported in ``EvaluationResult.warnings``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmseg.data.io import MaskReading, inspect_mask, odd_encodings
from gmseg.data.readers import header_size
from gmseg.data.resample import resize_mask
from gmseg.errors import ConfigError, DataError
from gmseg.fileio import atomic_write_text
from gmseg.metrics import METRIC_KEYS, binary_metrics, check_empty_mode

#: metrics that get mean/std/median/min/max in the summary
SUMMARY_METRICS: tuple[str, ...] = ("dice", "iou", "hd95", "precision", "recall")
#: fixed column order of metrics.csv
CSV_COLUMNS: tuple[str, ...] = ("name", *METRIC_KEYS)
#: files written next to predictions by ``gmseg predict`` that are not masks
_NOT_PREDICTIONS = (".overlay.png",)


@dataclass
class EvaluationResult:
    """Per-image rows (one dict per image, keys :data:`CSV_COLUMNS`) and the :func:`summarize` dict."""

    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def parse_size(size: int | str) -> int | str:
    """Accept ``"native"`` or a positive int (also as a string, as the CLI passes it)."""
    if isinstance(size, str):
        text = size.strip().lower()
        if text == "native":
            return "native"
        if text.isdigit():
            size = int(text)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and int(size) > 0:
        return int(size)
    raise ConfigError(f"size must be 'native' or a positive integer (e.g. 224), got {size!r}")


def _stats(values: Iterable[float]) -> dict[str, float | int]:
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
) -> dict:
    """Aggregate per-image rows into ``{"metrics", "counts", "settings"}``.

    Each metric's statistics use only finite values (HD95 is nan when exactly one mask is empty,
    precision/recall when undefined); ``n`` says how many images entered, so a mean over fewer images
    is visible rather than silent. ``settings`` records what makes the numbers comparable.
    """
    metrics = {key: _stats(float(r[key]) for r in rows) for key in SUMMARY_METRICS}
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


def evaluate_masks(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], empty: str = "standard") -> EvaluationResult:
    """Score in-memory ``(name, pred, gt)`` binary masks (e.g. straight from a model, no files)."""
    check_empty_mode(empty)
    rows = [{"name": name, **binary_metrics(pred, gt, empty)} for name, pred, gt in pairs]
    return EvaluationResult(rows=rows, summary=summarize(rows, empty))


def _load_mask(path: Path, size: int | str, threshold: float | None) -> tuple[np.ndarray, MaskReading]:
    """A mask by the one rule, then (for a fixed ``size``) PIL NEAREST resizing as the release does."""
    reading = inspect_mask(path, threshold)
    mask = reading.mask.astype(bool)
    if size != "native":
        mask = resize_mask(reading.mask, (size, size))
    return mask, reading


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only, so sizes are checked before any pixel is decoded."""
    return header_size(path)


def _prediction_names(pred_dir: Path) -> list[str]:
    return sorted(
        p.name[: -len(".png")] for p in pred_dir.glob("*.png") if p.is_file() and not p.name.endswith(_NOT_PREDICTIONS)
    )


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    names: list[str] | None = None,
    size: int | str = "native",
    empty: str = "standard",
    threshold: float | None = None,
) -> EvaluationResult:
    """Score ``pred_dir/NAME.png`` against ``gt_dir/NAME.<image suffix>`` for each name.

    ``gt_dir`` may be a mask folder or a dataset root holding ``masks/``. ``names=None`` scores every
    prediction found. Every missing prediction, missing ground truth, size mismatch (native mode) and
    unreadable file is collected and raised as one :class:`DataError`, so a user fixes all in one pass.
    """
    from gmseg.data.io import IMAGE_SUFFIXES, find_file  # lazy: data is developed separately

    check_empty_mode(empty)
    size = parse_size(size)
    if threshold is not None and not 0.0 <= float(threshold) < 1.0:
        raise ConfigError(f"threshold must be in [0, 1) or None (the mask rule), got {threshold!r}")
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    mask_dir = gt_dir / "masks" if (gt_dir / "masks").is_dir() else gt_dir

    folder_problems = []
    if not pred_dir.is_dir():
        folder_problems.append(f"prediction folder not found: {pred_dir}")
    if not mask_dir.is_dir():
        folder_problems.append(f"ground-truth folder not found: {gt_dir}")
    if folder_problems:
        raise DataError("cannot evaluate: folder missing", folder_problems)

    if names is None:
        names = _prediction_names(pred_dir)
        if not names:
            raise DataError("cannot evaluate: no predictions", [f"no NAME.png masks in {pred_dir}"])

    problems: list[str] = []
    seen: set[str] = set()
    todo: list[tuple[str, Path, Path]] = []
    suffixes = "|".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    for name in names:
        if name in seen:
            problems.append(f"{name}: listed more than once")
            continue
        seen.add(name)
        pred_path = pred_dir / f"{name}.png"
        gt_path = find_file(mask_dir, name)
        if not pred_path.is_file():
            problems.append(f"{name}: prediction missing: {pred_path}")
        if gt_path is None:
            problems.append(f"{name}: ground-truth mask missing: {mask_dir / name}.{{{suffixes}}}")
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
        raise DataError(f"cannot evaluate {pred_dir} against {mask_dir}: {len(problems)} problem(s)", problems)

    rows = []
    readings: dict[str, MaskReading] = {}
    for name, pred_path, gt_path in todo:
        try:
            pred, _ = _load_mask(pred_path, size, threshold)
        except (OSError, ValueError, DataError) as exc:
            problems.append(f"{name}: cannot read prediction {pred_path}: {exc}")
            continue
        try:
            gt, readings[str(gt_path)] = _load_mask(gt_path, size, threshold)
        except (OSError, ValueError, DataError) as exc:
            problems.append(f"{name}: cannot read ground truth {gt_path}: {exc}")
            continue
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
    return EvaluationResult(rows=rows, summary=summary, warnings=warnings)


def _json_safe(obj):
    """nan/inf -> null: strict JSON readers (browsers, jq) reject Python's NaN literal."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_results(result: EvaluationResult, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``metrics.csv`` (one row per image, :data:`CSV_COLUMNS` order) and ``summary.json``.

    CSV floats keep full precision (``nan`` where undefined); JSON writes undefined values as null.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in result.rows:
        writer.writerow([row[c] for c in CSV_COLUMNS])
    csv_path, json_path = out / "metrics.csv", out / "summary.json"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(json_path, json.dumps(_json_safe(result.summary), indent=2, allow_nan=False) + "\n")
    return csv_path, json_path


def format_summary(summary: dict) -> str:
    """A small aligned table (metric | mean | std | median) plus counts, for the terminal."""
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
) -> EvaluationResult:
    """What ``gmseg evaluate`` runs: names from the split file's ``stage`` (if given), score, write.

    Reports go to ``out_dir`` (default: ``pred_dir``, next to the predictions they describe).
    """
    names = None
    if split is not None:
        from gmseg.data.splits import load_split  # lazy: data is developed separately

        stages = load_split(split)
        if stage not in stages:
            raise ConfigError(f"split file {split} has no stage {stage!r}; it has {sorted(stages)}")
        names = list(stages[stage])
    result = evaluate_folders(pred_dir, gt_dir, names=names, size=size, empty=empty, threshold=threshold)
    write_results(result, pred_dir if out_dir is None else out_dir)
    return result
