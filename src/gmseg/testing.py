"""``gmseg test``: predict a dataset's images, score them, and draw the best/median/worst cases.

With a model trained on one dataset and the images of another, this is the paper's cross-domain protocol
(e.g. BUSI -> BUS): nothing about the model changes, only ``--data``. A prepared folder is tested here; an
MSD task or nnU-Net raw dataset goes to :mod:`gmseg.volume_testing` (volumes) or :mod:`gmseg.planar_testing`
(2D files), and every one draws its cases with :mod:`gmseg.case_reports`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .bounds import check_mask_threshold
from .case_reports import REPORT_PICTURE, TEST_OUTPUTS, record_tested, write_report
from .errors import GmsegError
from .evaluate import EvaluationResult, mask_folder, parse_size, run_evaluate
from .metrics import check_empty_mode
from .models import load_model
from .outputs import OutputGuard
from .planar_testing import run_planar_test
from .predict import predict_files
from .volume_testing import run_volume_test

ALL_STAGE = "all"


def stage_names(data_dir: Path, split: str | os.PathLike | None, stage: str) -> list[str] | None:
    """Names to test: the stage of ``split`` (else ``<data>/split.json``); None means every image.

    ``stage='all'`` is every image. A folder without any split file is scored whole only for the default
    stage 'test' (a plain folder of a user's images); any other stage must exist, so a typo never
    scores training images.
    """
    from .data.splits import load_split

    if stage == ALL_STAGE:
        return None
    split_path = Path(split) if split else data_dir / "split.json"
    if not split_path.is_file():
        if split:
            raise GmsegError(f"Split file {split_path} does not exist.")
        if stage != "test":
            raise GmsegError(
                f"{data_dir} has no split.json, so it has no stage {stage!r}; use --stage all "
                "(every image) or pass --split FILE."
            )
        return None
    stages = load_split(split_path)
    if stage not in stages:
        raise GmsegError(f"{split_path} has no stage {stage!r}; it has {sorted(stages) + [ALL_STAGE]}.")
    return list(stages[stage])


def run_test(
    model: Any,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str | os.PathLike | None = None,
    stage: str = "test",
    size: int | str = "native",
    empty: str = "standard",
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    tta: bool = False,
    mask_threshold: float | None = None,
    overwrite: bool = False,
) -> EvaluationResult:
    """Predict into ``out/predictions``, write ``metrics.csv``, ``summary.json``, ``report.png`` and ``report.html``.

    ``tta`` averages each prediction over mirror images (see :func:`gmseg.predict.mirror_averaged`).
    """
    from .data.io import find_file

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    size, mask_threshold = parse_size(size), check_mask_threshold(mask_threshold)  # before any prediction
    check_empty_mode(empty)
    if not data_dir.is_dir():
        raise GmsegError(f"--data {data_dir} is not a folder: give a dataset folder (images/, masks/, split.json)")
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    from .data.layouts import open_layout
    from .data.volume_dataset import is_volume_layout

    if is_volume_layout(data_dir):  # MSD / nnU-Net: cases of the layout's split, read in place
        common = dict(split=split, stage=stage, empty=empty, batch_size=batch_size, device=device, progress=progress)
        if open_layout(data_dir).is_3d:  # volumes: scored in 3D
            return run_volume_test(model, data_dir, out_dir, tta=tta, overwrite=overwrite, **common)
        return run_planar_test(  # nnU-Net 2D files: scored image by image, as a prepared folder is
            model, data_dir, out_dir, size=size, mask_threshold=mask_threshold, tta=tta, overwrite=overwrite, **common
        )
    names = stage_names(data_dir, split, stage)
    images_dir = data_dir / "images"
    if not images_dir.is_dir():
        inside = " (it looks like an images folder itself: pass its parent)" if data_dir.name == "images" else ""
        raise GmsegError(
            f"--data {data_dir} has no images/ folder{inside}; a dataset folder holds images/ and masks/ "
            "(gmseg prepare writes one)"
        )
    if names == []:
        raise GmsegError(f"stage {stage!r} of {split or data_dir / 'split.json'} lists no image: nothing to test")
    if names is None:
        inputs: list[Path] | Path = images_dir
    else:
        missing = [n for n in names if find_file(images_dir, n) is None]
        if missing:
            from .errors import DataError

            raise DataError(
                f"{len(missing)} test image(s) missing in {images_dir}", [f"{images_dir / n}.*" for n in missing]
            )
        inputs = [find_file(images_dir, n) for n in names]
    with OutputGuard("test", overwrite=overwrite) as guard:
        guard.claim(out_dir)  # one run per folder; every report planned before the first prediction
        guard.read_folder(images_dir, data_dir / "masks")
        guard.plan(*[out_dir / name for name in TEST_OUTPUTS])
        predictions = out_dir / "predictions"
        report = predict_files(
            model,
            inputs,
            predictions,
            batch_size=batch_size,
            device=device,
            progress=progress,
            tta=tta,
            overwrite=overwrite,
        )
        names = names or report.written
        split_file = record_tested(guard, out_dir, report, "image", device, tta, names)
        result = run_evaluate(
            predictions,
            data_dir,
            out_dir=out_dir,
            split=split_file,
            stage="test",
            size=size,
            empty=empty,
            threshold=mask_threshold,
            guard=guard,
        )
        mask_dir = mask_folder(data_dir)

        def files(name: str) -> tuple[Path | None, Path | None]:
            return find_file(images_dir, name), find_file(mask_dir, name)

        write_report(result, files, predictions, out_dir / REPORT_PICTURE, guard=guard)
        return result
