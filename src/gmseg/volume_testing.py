"""``gmseg test`` on an MSD task or nnU-Net raw dataset of volumes, read in place and scored in 3D; the split's
cases (:func:`test_cases`) are also those of a 2D nnU-Net dataset's test (:mod:`gmseg.planar_testing`).

The cases come from a split *by case*: ``--split`` (e.g. the run's own ``split.json``), else the dataset's
own split file (nnU-Net's ``splits_final.json``); a dataset without one is tested only with ``--stage all``,
because a seeded split made here need not be the one the model was trained with. Predictions are written
as ``predictions/CASE.<ext>`` (nnU-Net's case names, without ``_0000``), scored against the case's label
(:mod:`gmseg.volume_evaluate`: one row per case, HD95 in mm, nnU-Net's summary fields), and ``report.png``
shows the best, median and worst cases by their mean Dice over classes, each at the slice (along the
model's slicing axis) with the most foreground in truth, then prediction
(:func:`gmseg.case_reports.write_volume_report`); ``report.html`` every case, each at its fullest slice
and, opened large, its three fullest (:func:`gmseg.report_html.write_volume_report_html`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .case_reports import REPORT_PICTURE, TEST_OUTPUTS, record_tested, write_volume_report
from .data.readers import output_suffix
from .errors import DataError, GmsegError
from .evaluate import EvaluationResult, write_results


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
) -> EvaluationResult:
    """What ``gmseg test`` runs on a volume dataset."""
    from .data.layouts import open_layout
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
        record_tested(guard, out_dir, report, "volume", device, tta, [c.name for c in cases])
        pairs = [(c.name, predictions / f"{c.name}{output_suffix(c.images[0])}", c.label) for c in cases]
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
        write_volume_report(result, pairs, image_files, model, out_dir / REPORT_PICTURE, guard=guard)
        write_volume_report_html(result, pairs, image_files, out_dir, guard, model)
        return result
