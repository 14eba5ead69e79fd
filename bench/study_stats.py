"""Per-image statistics the study tables share: mean and standard error, and paired model differences."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def percent_mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (ddof=1) of fractions, in %."""
    mean = 100 * sum(values) / len(values)
    sd = math.sqrt(sum((100 * v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, sd / math.sqrt(len(values))


def per_image_dice(folder: Path) -> dict[str, float]:
    """Dice by image name from a scored folder's metrics.csv."""
    with (folder / "metrics.csv").open() as handle:
        return {row["name"]: float(row["dice"]) for row in csv.DictReader(handle)}


def paired_difference(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, int, int]:
    """a - b over the images both scored (mean, SE in %), how many images that is, and on how many a is
    better: two models tested on the same images differ per image, which is far less noisy than two means."""
    diffs = [a[name] - b[name] for name in b if name in a]
    return (*percent_mean_se(diffs), len(diffs), sum(d > 0 for d in diffs))
