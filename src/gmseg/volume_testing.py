"""``gmseg test`` on an MSD task or nnU-Net raw dataset, read in place: volumes scored in 3D, nnU-Net's 2D
datasets image by image.

The cases come from a split *by case*: ``--split`` (e.g. the run's own ``split.json``), else the dataset's
own split file (nnU-Net's ``splits_final.json``); a dataset without one is tested only with ``--stage all``,
because a seeded split made here need not be the one the model was trained with. Predictions are written
as ``predictions/CASE.<ext>`` (nnU-Net's case names, without ``_0000``), scored against the case's label
(:mod:`gmseg.volume_evaluate`: one row per case, HD95 in mm, nnU-Net's summary fields), and ``report.png``
shows the best, median and worst cases by their mean Dice over classes, each at the slice (along the
model's slicing axis) with the most foreground in truth, then prediction; ``report.html`` every case, each
at its fullest slice and, opened large, its three fullest (:func:`gmseg.report_html.write_volume_report_html`).

A 2D nnU-Net dataset (``file_ending`` ".png", ".bmp", ".tif" ...: one image per case) goes the same way to
``predictions/CASE.png`` and is then scored as a prepared 2D folder is (:func:`gmseg.evaluate.evaluate_folders`
against ``labelsTr/CASE.png`` with dataset.json's classes: Dice, IoU, HD95 in pixels, ``--size`` and
``--mask-threshold`` as there), so its numbers compare with the same images tested as a prepared folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, GmsegError

TEST_OUTPUTS = ("timing.json", "tested_names.json", "metrics.csv", "summary.json", "report.png")


def test_cases(layout: Any, split: str | os.PathLike | None, stage: str) -> list[Any]:
    """The labelled cases of ``stage``: of ``split``, else of the dataset's own split file, else all of them
    for ``stage='all'``; anything else is refused rather than guessed."""
    from .data.splits import load_split

    cases = {c.name: c for c in layout.cases()}
    if stage == "all":
        return list(cases.values())
    stages = load_split(split) if split else layout.saved_split()
    if stages is None:
        raise GmsegError(
            f"{layout.root} ships no split file: pass --split RUN/split.json (the run's split by case) or "
            "--stage all (every labelled case)."
        )
    if stage not in stages:
        raise GmsegError(f"the split has no stage {stage!r}; it has {sorted(stages) + ['all']}.")
    missing = [n for n in stages[stage] if n not in cases]
    if missing:
        raise DataError(
            f"{len(missing)} {stage} case(s) have no labelled case in {layout.root}",
            [f"{layout.root}: no case {n!r}" for n in missing],
        )
    return [cases[n] for n in stages[stage]]


def run_volume_test(
    model: Any,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str | os.PathLike | None = None,
    stage: str = "test",
    empty: str = "standard",
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    tta: bool = False,
    overwrite: bool = False,
) -> Any:
    """What ``gmseg test`` runs on a volume dataset; returns the :class:`~gmseg.evaluate.EvaluationResult`."""
    from .data.layouts import open_layout
    from .data.splits import save_split
    from .evaluate import EvaluationResult, write_results
    from .metrics3d import summarize_volumes, volume_columns
    from .models import load_model
    from .outputs import OutputGuard
    from .report_html import plan_report, write_volume_report_html
    from .volume_evaluate import evaluate_volumes
    from .volume_predict import predict_volumes

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    layout = open_layout(data_dir)
    cases = test_cases(layout, split, stage)
    if not cases:
        raise GmsegError(f"no {stage} cases to test in {data_dir}")
    labels = layout.labels
    with OutputGuard("test", overwrite=overwrite) as guard:
        guard.claim(out_dir)
        guard.read(*[c.images[0] for c in cases], *[c.label for c in cases])
        guard.plan(*[out_dir / name for name in TEST_OUTPUTS])
        plan_report(guard, out_dir)
        predictions = out_dir / "predictions"
        report = predict_volumes(
            model,
            [c.images[0] for c in cases],
            predictions,
            names=[c.name for c in cases],
            options={"tta": tta},
            batch_size=batch_size,
            device=device,
            overwrite=overwrite,
            progress=progress,
        )
        if not report.ok:
            raise GmsegError(report.summary())
        timing = report.timing("volume", device, tta)
        guard.write_text(out_dir / "timing.json", json.dumps(timing, indent=2) + "\n")
        names = [c.name for c in cases]
        guard.save(out_dir / "tested_names.json", lambda path: save_split({"test": names}, path))
        ending = {c.name: _ending(c.images[0]) for c in cases}
        pairs = [(c.name, predictions / f"{c.name}{ending[c.name]}", c.label) for c in cases]
        rows, entries, problems = evaluate_volumes(pairs, labels, empty)
        if problems:
            raise DataError(f"cannot evaluate {predictions}: {len(problems)} problem(s)", problems)
        result = EvaluationResult(
            rows=rows,
            summary=summarize_volumes(rows, entries, empty, labels),
            labels=labels,
            columns=volume_columns(labels),
        )
        write_results(result, out_dir, guard=guard)
        image_files = {c.name: c.images[0] for c in cases}
        write_volume_report(result, pairs, image_files, model, out_dir / "report.png", guard=guard)
        write_volume_report_html(result, pairs, image_files, out_dir, guard, model)
        return result


def _ending(path: Path) -> str:
    from .data.readers import split_name

    return split_name(path)[1]


def write_volume_report(
    result: Any,
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
    from .evaluate import extreme_rows
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


def run_planar_test(
    model: Any,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str | os.PathLike | None = None,
    stage: str = "test",
    size: int | str = "native",
    empty: str = "standard",
    mask_threshold: float | None = None,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    tta: bool = False,
    overwrite: bool = False,
) -> Any:
    """What ``gmseg test`` runs on a 2D nnU-Net dataset: the cases of ``stage`` (:func:`test_cases`) predicted
    into ``predictions/CASE.png`` and scored one row per case; returns the :class:`~gmseg.evaluate.EvaluationResult`."""
    from .data.layouts import open_layout
    from .data.splits import save_split
    from .evaluate import evaluate_folders, write_results
    from .models import load_model
    from .outputs import OutputGuard
    from .report_html import plan_report
    from .testing import write_report

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    layout = open_layout(data_dir)
    cases = test_cases(layout, split, stage)
    if not cases:
        raise GmsegError(f"no {stage} cases to test in {data_dir}")
    truths = _truth_folder(cases)
    with OutputGuard("test", overwrite=overwrite) as guard:
        guard.claim(out_dir)
        guard.read(*[c.images[0] for c in cases], *[c.label for c in cases])
        guard.read_folder(*{c.images[0].parent for c in cases}, *{c.label.parent for c in cases})
        guard.plan(*[out_dir / name for name in TEST_OUTPUTS])
        plan_report(guard, out_dir)
        predictions = out_dir / "predictions"
        report = predict_cases(
            model, {c.name: c.images[0] for c in cases}, predictions, guard,
            batch_size=batch_size, device=device, progress=progress, tta=tta,
        )  # fmt: skip
        if not report.ok:
            raise GmsegError(report.summary())
        guard.write_text(out_dir / "timing.json", json.dumps(report.timing("image", device, tta), indent=2) + "\n")
        names = [c.name for c in cases]
        guard.save(out_dir / "tested_names.json", lambda path: save_split({"test": names}, path))
        result = evaluate_folders(
            predictions, truths, names=names, size=size, empty=empty, threshold=mask_threshold, labels=layout.labels
        )
        write_results(result, out_dir, guard=guard)
        files = {c.name: (c.images[0], c.label) for c in cases}
        write_report(result, files.__getitem__, predictions, out_dir / "report.png", guard=guard)
        write_planar_report_html(result, files, predictions, out_dir, guard, mask_threshold)
        return result


def _truth_folder(cases: list[Any]) -> Path:
    """The one folder of the cases' labels, each named ``CASE.<ext>`` (nnU-Net's labelsTr/), which the 2D
    scoring of :func:`gmseg.evaluate.evaluate_folders` matches by name."""
    from .data.readers import split_name

    folders = {c.label.parent for c in cases}
    named_apart = [c.label for c in cases if split_name(c.label)[0] != c.name]
    if len(folders) != 1 or named_apart:
        where = named_apart[0] if named_apart else ", ".join(map(str, sorted(folders)))
        raise DataError(
            "2D cases are scored from one folder of labels named like their cases",
            [f"{where}: keep every label as labelsTr/CASE.<ext> (nnU-Net's layout)"],
        )
    return folders.pop()


def predict_cases(
    model: Any,
    images: dict[str, Path],
    output: Path,
    guard: Any,
    *,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    tta: bool = False,
) -> Any:
    """Each case's 2D image (name -> file) predicted into ``output/NAME.png``, named by its case, not its
    file (``CASE_0000.png`` -> ``CASE.png``, as nnU-Net names predictions), as ``gmseg predict`` predicts
    an image; every output planned with ``guard`` before the first is written, an unreadable image named in
    the returned :class:`~gmseg.predict.PredictionReport`."""
    import time

    import torch
    from tqdm.auto import tqdm

    from .data.io import read_image
    from .data.readers import OUTPUT_2D_SUFFIX
    from .inference import make_predictor, pick_device
    from .predict import PredictionReport, image_to_tensor

    for name, path in images.items():
        guard.plan(output / f"{name}{OUTPUT_2D_SUFFIX}", owner=f"the prediction of {path}")
    predict = make_predictor(model, pick_device(device), tta=tta)  # before any file is written
    report, items = PredictionReport(), list(images.items())
    started = time.perf_counter()
    for start in tqdm(range(0, len(items), max(1, batch_size)), desc="predict", unit="batch", disable=not progress):
        read: list[tuple[str, Any]] = []
        for name, path in items[start : start + max(1, batch_size)]:
            try:
                read.append((name, read_image(path)))
            except (DataError, OSError) as error:
                report.failed[path.name] = str(error).splitlines()[0]
        if not read:
            continue
        batch = torch.stack(
            [image_to_tensor(image, predict.spec.image_size, predict.spec.intensity) for _, image in read]
        )
        for (name, image), probability in zip(read, predict(batch)):
            _write_case(guard, output, name, image, probability, predict.spec)
            report.written.append(name)
    report.seconds = time.perf_counter() - started
    return report


def _write_case(guard: Any, output: Path, name: str, image: Any, probability: Any, spec: Any) -> None:
    """One case's mask (binary: 0/255) or label map as ``gmseg predict`` writes it, recorded as gmseg's."""
    from .data.readers import OUTPUT_2D_SUFFIX
    from .predict import write_binary_prediction, write_class_prediction

    guard.record(output / f"{name}{OUTPUT_2D_SUFFIX}")
    if spec.labels.is_binary:
        write_binary_prediction(output, name, image, probability, spec.threshold, False, False, None)
    else:
        write_class_prediction(output, name, image, probability, spec.labels)


def write_planar_report_html(
    result: Any,
    files: dict[str, tuple[Path, Path]],
    predictions: Path,
    out_dir: Path,
    guard: Any,
    threshold: float | None = None,
) -> Path:
    """report.html of 2D cases whose image and truth are named apart (``CASE_0000.png``, ``CASE.png``)."""
    from .data.readers import OUTPUT_2D_SUFFIX
    from .evaluate import csv_columns
    from .report_html import REPORT_HTML, report_page, write_pictures
    from .testing import case_view

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
