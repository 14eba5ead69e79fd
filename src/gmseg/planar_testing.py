"""``gmseg test`` on a 2D nnU-Net raw dataset (``file_ending`` ".png", ".bmp", ".tif" ...: one image per case),
read in place.

The cases of the split (:func:`gmseg.volume_testing.test_cases`) are predicted by ``gmseg predict``'s one
loop (:func:`gmseg.predict.predict_files`) into ``predictions/CASE.png``, named by case (``CASE_0000.png``
-> ``CASE.png``, as nnU-Net names predictions), and scored as a prepared 2D folder is
(:func:`gmseg.evaluate.evaluate_folders` against ``labelsTr/CASE.png`` with dataset.json's classes: Dice,
IoU, HD95 in pixels, ``--size`` and ``--mask-threshold`` as there), so its numbers compare with the same
images tested as a prepared folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .case_reports import REPORT_PICTURE, TEST_OUTPUTS, record_tested, write_planar_report_html, write_report
from .errors import DataError, GmsegError
from .evaluate import EvaluationResult, evaluate_folders, write_results
from .predict import predict_files
from .volume_testing import test_cases


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
) -> EvaluationResult:
    """What ``gmseg test`` runs on a 2D nnU-Net dataset: the cases of ``stage`` (:func:`test_cases`) predicted
    into ``predictions/CASE.png`` and scored one row per case."""
    from .data.layouts import open_layout
    from .models import load_model
    from .outputs import OutputGuard
    from .report_html import plan_report

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    layout = open_layout(data_dir)
    cases = test_cases(layout, split, stage)
    if not cases:
        raise GmsegError(f"no {stage} cases to test in {data_dir}")
    truths = _truth_folder(cases)
    names = [c.name for c in cases]
    with OutputGuard("test", overwrite=overwrite) as guard:
        guard.claim(out_dir)
        guard.read(*[c.images[0] for c in cases], *[c.label for c in cases])
        guard.read_folder(*{c.images[0].parent for c in cases}, *{c.label.parent for c in cases})
        guard.plan(*[out_dir / name for name in TEST_OUTPUTS])
        plan_report(guard, out_dir)
        predictions = out_dir / "predictions"
        report = predict_files(
            model, [c.images[0] for c in cases], predictions, names=names, batch_size=batch_size, device=device,
            progress=progress, tta=tta, overwrite=overwrite,
        )  # fmt: skip
        record_tested(guard, out_dir, report, "image", device, tta, names)
        result = evaluate_folders(
            predictions, truths, names=names, size=size, empty=empty, threshold=mask_threshold, labels=layout.labels
        )
        write_results(result, out_dir, guard=guard)
        files = {c.name: (c.images[0], c.label) for c in cases}
        write_report(result, files.__getitem__, predictions, out_dir / REPORT_PICTURE, guard=guard)
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
