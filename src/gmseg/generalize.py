"""``gmseg generalize``: one model, several datasets, one table (the paper's cross-domain protocol).

A model trained on one dataset is tested, unchanged, on the test split of its own dataset and on the
images of others (their test split and all of them), so "does my model generalize?" is one command:

    gmseg generalize --model RUN/checkpoints/best --data busi=data/busi --data bus=data/bus --out OUT

Each dataset and stage gets ``OUT/<dataset>/<stage>/`` (predictions, metrics.csv, summary.json,
report.png, report.html); ``OUT/generalization.json`` and ``OUT/generalization.md`` hold the table, with the standard
error of each mean beside it.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .evaluate import parse_size
from .metrics import check_empty_mode
from .outputs import OutputGuard
from .testing import ALL_STAGE, run_test

__all__ = ["GeneralizationResult", "parse_dataset_arg", "run_generalize"]

TABLE_METRICS = ("dice", "iou", "hd95")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class GeneralizationResult:
    """One row per (dataset, stage): the mean and its standard error for each metric."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_markdown(self, model: str) -> str:
        lines = [
            f"Model: `{model}`",
            "",
            "| dataset | domain | stage | images | Dice | IoU | HD95 (px) |",
            "|---|---|---|---:|---|---|---|",
        ]
        for row in self.rows:
            cells = [_cell(row["dice"], 100, 2), _cell(row["iou"], 100, 2), _cell(row["hd95"], 1, 1)]
            same = f" (= {row['same_images_as']}, scored once)" if row.get("same_images_as") else ""
            lines.append(
                f"| {row['dataset']} | {row.get('domain') or '-'} | {row['stage']}{same} | {row['n_images']} | "
                + " | ".join(cells)
                + " |"
            )
        lines += [
            "",
            "Mean ± standard error of the mean over images (Dice and IoU in %); n/a: no image defines the "
            "metric (HD95 needs both masks non-empty); (1 case): one value, no error to give.",
        ]
        return "\n".join(lines) + "\n"


def _cell(stats: dict[str, Any], scale: float, digits: int) -> str:
    """A table cell that says what it knows: the mean ± its standard error, the single value of one case, or
    n/a when no image defines the metric (never "nan ± nan")."""
    mean, se, n = stats.get("mean"), stats.get("se"), stats.get("n", 0)
    if mean is None or not math.isfinite(mean) or not n:
        return "n/a"
    if se is None or not math.isfinite(se):
        return f"{scale * mean:.{digits}f} ({n} case{'s' if n != 1 else ''})"
    return f"{scale * mean:.{digits}f} ± {scale * se:.{digits}f}"


def parse_dataset_arg(text: str) -> tuple[str, Path]:
    """``NAME=FOLDER`` or just ``FOLDER`` (named after the folder)."""
    name, sep, folder = text.partition("=")
    if not sep:
        name, folder = Path(text).name, text
    if not _NAME.match(name) or not folder:
        raise ConfigError(f"--data takes NAME=FOLDER (e.g. bus=data/bus) or FOLDER; got {text!r}")
    return name, Path(folder)


def standard_error(stats: dict[str, float | int]) -> float:
    n = int(stats["n"])
    return float(stats["std"]) / math.sqrt(n) if n >= 2 else math.nan


def _row(dataset: str, stage: str, summary: dict) -> dict[str, Any]:
    row: dict[str, Any] = {"dataset": dataset, "stage": stage, "n_images": summary["counts"]["n_images"]}
    for key in TABLE_METRICS:
        # A multi-class summary has per-class keys; the table shows its lesion-vs-background scores.
        stats = summary["metrics"].get(key) or summary["metrics"][f"any_{key}"]
        row[key] = {"mean": stats["mean"], "se": standard_error(stats), "n": stats["n"]}
    return row


def _stages_for(folder: Path, layout: Any, stages: list[str]) -> list[str]:
    """Without a split file a dataset is one stage, 'all'; with one (split.json, or the splits_final.json of
    an nnU-Net dataset), the requested stages. ``layout``: the folder's MSD or nnU-Net layout, or None for a
    prepared folder (images/, masks/, split.json)."""
    has_split = (folder / "split.json").is_file() if layout is None else layout.saved_split() is not None
    return stages if has_split else [ALL_STAGE]


@dataclass
class _Job:
    """One (dataset, stage) row of the table; ``same_as`` is the stage already scored on the same images."""

    name: str
    folder: Path
    stage: str
    domain: str
    same_as: str | None = None


def _stage_names(folder: Path, layout: Any, stage: str) -> list[str]:
    """The images (prepared folder) or cases (MSD / nnU-Net) of ``stage``; an unknown stage is an error
    here, before anything is predicted."""
    from .data.io import index_folder
    from .testing import stage_names
    from .volume_testing import test_cases

    if layout is not None:
        return [case.name for case in test_cases(layout, None, stage)]
    names = stage_names(folder, None, stage)
    if names is None:
        images = folder / "images"
        names = list(index_folder(images)) if images.is_dir() else []
    return names


def plan_jobs(datasets: list[tuple[str, Path]], stages: list[str], in_domain: str | None) -> list[_Job]:
    """Every (dataset, stage) to score, checked before anything is predicted: unknown stages, an in-domain
    dataset without a split (its training images would be scored as test), and stages that hold the same
    images (scored once, reported under each). Each dataset's layout is opened once, here."""
    from .data.volume_dataset import open_volume_layout

    jobs: list[_Job] = []
    for name, folder in datasets:
        domain = "in" if name == in_domain else ("cross" if in_domain else "")
        layout = open_volume_layout(folder)
        if domain == "in" and _stages_for(folder, layout, ["test"]) != ["test"]:
            what = "split.json" if layout is None else "split file (nnU-Net's splits_final.json)"
            raise ConfigError(
                f"--in-domain {name}: {folder} has no {what}, so its test images are unknown and every image, "
                "training ones included, would be scored as test; give the dataset its split file (gmseg prepare "
                "writes split.json), test it with `gmseg test --split RUN/split.json`, or pass the test images "
                "as their own folder without --in-domain"
            )
        scored: dict[frozenset[str], str] = {}
        for stage in ["test"] if domain == "in" else _stages_for(folder, layout, stages):
            key = frozenset(_stage_names(folder, layout, stage))
            jobs.append(_Job(name, folder, stage, domain, scored.get(key)))
            scored.setdefault(key, stage)
    return jobs


def run_generalize(
    model: Any,
    datasets: list[tuple[str, str | os.PathLike]],
    out_dir: str | os.PathLike,
    *,
    stages: list[str] | None = None,
    size: int | str = "native",
    empty: str = "standard",
    batch_size: int = 8,
    device: str = "auto",
    tta: bool = False,
    progress: bool = True,
    in_domain: str | None = None,
    overwrite: bool = False,
) -> GeneralizationResult:
    """Test ``model`` on each dataset's ``stages`` (default: test and all) and write the table.

    ``in_domain`` names the dataset the model was trained on: only its test split is scored there (its
    other images trained or selected the model). The model is loaded once; a dataset folder is the layout
    of ``gmseg prepare``.
    """
    from .models import load_model

    if not datasets:
        raise ConfigError("gmseg generalize needs at least one --data NAME=FOLDER")
    names = [name for name, _ in datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset names must differ, got {names}; name them with --data NAME=FOLDER")
    if in_domain is not None and in_domain not in names:
        raise ConfigError(f"--in-domain {in_domain!r} is not one of the datasets {names}")
    stages = list(dict.fromkeys(stages or ["test", ALL_STAGE]))  # --stages test test: once
    size = parse_size(size)
    check_empty_mode(empty)
    jobs = plan_jobs([(name, Path(folder)) for name, folder in datasets], stages, in_domain)
    out = Path(out_dir)
    # The table files, planned before any testing; each OUT/<dataset>/<stage>/ is claimed by its run_test.
    guard = OutputGuard("generalize", overwrite=overwrite)
    guard.plan(out / "generalization.json", out / "generalization.md")
    label = str(model)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    result = GeneralizationResult()
    summaries: dict[tuple[str, str], dict] = {}
    for job in jobs:
        if job.same_as is not None:  # the same images as a stage already scored: report it again
            row = _row(job.name, job.stage, summaries[job.name, job.same_as])
            result.rows.append({**row, "domain": job.domain, "same_images_as": job.same_as})
            continue
        tested = run_test(
            model,
            job.folder,
            out / job.name / job.stage,
            stage=job.stage,
            size=size,
            empty=empty,
            batch_size=batch_size,
            device=device,
            progress=progress,
            tta=tta,
            overwrite=overwrite,
        )
        summaries[job.name, job.stage] = tested.summary
        result.rows.append({**_row(job.name, job.stage, tested.summary), "domain": job.domain})
    payload = {
        "model": label,
        "in_domain": in_domain,
        "settings": {"size": size, "empty": empty, "tta": tta},
        "rows": result.rows,
    }
    guard.write_text(out / "generalization.json", json.dumps(payload, indent=2, default=str) + "\n")
    guard.write_text(out / "generalization.md", result.to_markdown(label))
    return result
