"""Per-image statistics the study tables share, in percent: thin wrappers over :mod:`gmseg.compare`, the
code behind ``gmseg compare``, so a table's paired figures are exactly what a user gets from that verb."""

from __future__ import annotations

import csv
from pathlib import Path

from gmseg.compare import mean_se, read_scored
from gmseg.compare import paired_difference as _paired


def percent_mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (ddof=1) of fractions, in %."""
    mean, se = mean_se(values)
    return 100 * mean, 100 * se


def per_image_dice(folder: Path) -> dict[str, float]:
    """Dice by image name from a scored folder's metrics.csv."""
    return read_scored(folder).column("dice")


def paired_difference(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, int, int]:
    """a - b over the images both scored (mean, SE in %), how many images that is, and on how many a is
    better: two models tested on the same images differ per image, which is far less noisy than two means.
    This is ``gmseg compare B A``'s difference (other minus first)."""
    d = _paired(b, a)
    return 100 * d.mean, 100 * d.se, d.n, d.other_better


def per_case_dice(folder: Path) -> dict[str, float]:
    """A volume test's Dice by case: metrics.csv's ``mean_dice``, the case's mean over its foreground classes
    (:mod:`gmseg.metrics3d`); ``read_scored`` keeps only the per-class and ``any_`` score columns."""
    with open(Path(folder) / "metrics.csv", newline="", encoding="utf-8") as handle:
        return {row["name"]: float(row["mean_dice"]) for row in csv.DictReader(handle)}
