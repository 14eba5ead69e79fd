"""``gmseg compare``: two or more scored folders on the same images, compared case by case (paired).

Two models tested on the same images differ per image far less noisily than their two means do, so every
comparison here is paired: for each metric column and each folder after the first, the per-case difference
*other minus first*, its mean and standard error (ddof=1), and on how many cases each side is better (for
HD95 lower is better). A scored folder is what ``gmseg test``, ``evaluate`` or ``generalize`` leaves: a
``metrics.csv`` with one row per case.

Folders scored on different images are refused, naming the cases that differ; ``intersection=True``
compares the common cases and says how many were dropped. Writes ``comparison.csv`` (one row per case:
each folder's metrics and the differences), ``comparison.json`` (the paired statistics), ``comparison.png``
(Dice of the first folder against each other) and ``comparison.html`` (the cases the folders disagree on
most, side by side, from each folder's ``report_files`` pictures when it has them).

This module imports neither torch nor the data package: the study tables in ``bench/`` use its
statistics directly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gmseg.errors import ConfigError, DataError
from gmseg.fileio import json_safe

if TYPE_CHECKING:
    from gmseg.report_html import ComparisonView

__all__ = [
    "Comparison",
    "PairedDifference",
    "ScoredFolder",
    "compare_folders",
    "mean_se",
    "paired_difference",
    "read_scored",
    "run_compare",
]

#: the per-case scores a comparison pairs (areas and flags are descriptions, not scores)
SCORE_KEYS: tuple[str, ...] = ("dice", "iou", "hd95", "precision", "recall")
#: scores where a smaller value is the better one
LOWER_IS_BETTER = frozenset({"hd95"})
ANY_PREFIX = "any_"  # gmseg.metrics.ANY_PREFIX, not imported: gmseg.metrics loads MONAI and torch
METRICS_CSV = "metrics.csv"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def metric_parts(column: str) -> tuple[str, str | None] | None:
    """``dice`` -> (dice, None); ``any_dice`` -> (dice, 'any'); ``dice_benign`` -> (dice, 'benign');
    None for a column that is no score (``name``, areas, ``both_empty``)."""
    if column.startswith(ANY_PREFIX) and column[len(ANY_PREFIX) :] in SCORE_KEYS:
        return column[len(ANY_PREFIX) :], "any"
    for key in SCORE_KEYS:
        if column == key:
            return key, None
        if column.startswith(key + "_") and not column.startswith(key + "_area"):
            return key, column[len(key) + 1 :]
    return None


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


@dataclass
class ScoredFolder:
    """One scored folder: its label, path, score columns (file order) and each case's scores."""

    label: str
    path: Path
    columns: tuple[str, ...]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def column(self, name: str) -> dict[str, float]:
        """``{case: value}`` of one score column."""
        return {case: values[name] for case, values in self.scores.items()}


def read_scored(folder: str | os.PathLike, label: str | None = None) -> ScoredFolder:
    """A scored folder (or its ``metrics.csv``): the score columns of every case, by case name.

    A missing or unreadable file, a file without a ``name`` column or without any score column, and a
    case listed twice are errors that name the file.
    """
    path = Path(folder)
    csv_path = path if path.is_file() else path / METRICS_CSV
    if not csv_path.is_file():
        raise DataError(
            f"not a scored folder: {csv_path} not found",
            [f"give a folder written by 'gmseg test', 'evaluate' or 'generalize' (it holds {METRICS_CSV})"],
        )
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {csv_path}: {exc}") from exc
    columns = tuple(c for c in header if metric_parts(c) is not None)
    if "name" not in header or not columns:
        raise DataError(f"{csv_path}: expected a 'name' column and score columns ({', '.join(SCORE_KEYS)})")
    scores: dict[str, dict[str, float]] = {}
    twice = []
    for record in records:
        name = record["name"]
        if name in scores:
            twice.append(name)
        scores[name] = {c: _number(record.get(c)) for c in columns}
    if twice:
        raise DataError(f"{csv_path}: case(s) listed more than once", sorted(set(twice)))
    folder_path = csv_path.parent
    return ScoredFolder(label or folder_path.name, folder_path, columns, scores)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (ddof=1) of the finite values; nan where undefined."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(finite) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    return mean, sd / math.sqrt(n)


@dataclass(frozen=True)
class PairedDifference:
    """other minus first over the cases both scored finitely: mean, its SE, how many cases, who is better."""

    mean: float
    se: float
    n: int
    other_better: int
    first_better: int
    ties: int


def paired_difference(
    first: Mapping[str, float], other: Mapping[str, float], lower_is_better: bool = False
) -> PairedDifference:
    """Per-case ``other - first`` over the names both hold with finite values (HD95 is nan where a mask is
    empty). ``lower_is_better`` (HD95) decides which side a negative difference favours."""
    diffs = [
        other[name] - first[name]
        for name in first
        if name in other and math.isfinite(first[name]) and math.isfinite(other[name])
    ]
    mean, se = mean_se(diffs)
    sign = -1.0 if lower_is_better else 1.0
    return PairedDifference(
        mean=mean,
        se=se,
        n=len(diffs),
        other_better=sum(sign * d > 0 for d in diffs),
        first_better=sum(sign * d < 0 for d in diffs),
        ties=sum(d == 0 for d in diffs),
    )


def folder_labels(paths: Sequence[Path]) -> list[str]:
    """Short distinct labels: the path parts left when the parts all share at the start and end are cut
    (``full/gms-busi/generalization/busi/test`` and ``full/unet-busi/...`` -> ``gms-busi``, ``unet-busi``)."""
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    if len(set(parts)) < len(parts):
        raise ConfigError(f"the same folder is given more than once: {[str(p) for p in paths]}")
    head = 0
    while all(len(p) > head for p in parts) and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while all(len(p) - tail > head for p in parts) and len({p[len(p) - 1 - tail] for p in parts}) == 1:
        tail += 1
    labels = ["/".join(p[head : len(p) - tail]) or Path(*p).name for p in parts]
    return labels if len(set(labels)) == len(labels) else [f"{i + 1}" for i in range(len(paths))]


def parse_folder_arg(text: str) -> tuple[str | None, Path]:
    """``LABEL=FOLDER`` or ``FOLDER`` (labelled by :func:`folder_labels`); an existing path wins over a label."""
    label, sep, folder = text.partition("=")
    if sep and _LABEL.match(label) and folder and not Path(text).exists():
        return label, Path(folder)
    return None, Path(text)


def _names_preview(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def match_cases(folders: Sequence[ScoredFolder], intersection: bool) -> tuple[list[str], dict[str, list[str]]]:
    """The cases to compare (the first folder's order) and, per folder, the cases dropped.

    Different case sets are an error naming what differs, unless ``intersection`` asks for the common ones.
    """
    common = set(folders[0].scores)
    for folder in folders[1:]:
        common &= set(folder.scores)
    dropped = {f.label: [n for n in f.scores if n not in common] for f in folders}
    if any(dropped.values()) and not intersection:
        problems = [
            f"{f.label} ({f.path}): {len(f.scores)} case(s), {len(dropped[f.label])} not in every folder: "
            + _names_preview(dropped[f.label])
            for f in folders
            if dropped[f.label]
        ]
        raise DataError(
            "the folders were not scored on the same images; compare them on the "
            f"{len(common)} common case(s) with --intersection",
            problems,
        )
    if not common:
        raise DataError("the folders have no case in common", [f"{f.label}: {f.path}" for f in folders])
    return [n for n in folders[0].scores if n in common], dropped


@dataclass
class Comparison:
    """The compared folders, the cases, the columns, and for each column and later folder its paired
    difference against the first."""

    folders: list[ScoredFolder]
    names: list[str]
    columns: list[str]
    dropped: dict[str, list[str]]
    differences: dict[str, dict[str, PairedDifference]]

    @property
    def first(self) -> ScoredFolder:
        return self.folders[0]

    def main_column(self) -> str:
        """The column that ranks cases: Dice (the lesion's, all classes merged, for label maps)."""
        for column in ("dice", ANY_PREFIX + "dice"):
            if column in self.columns:
                return column
        return self.columns[0]

    def disagreement(self, name: str, column: str | None = None) -> float:
        """The largest absolute difference of ``column`` between the first folder and any other on a case."""
        column = column or self.main_column()
        base = self.first.scores[name][column]
        gaps = [abs(f.scores[name][column] - base) for f in self.folders[1:]]
        finite = [g for g in gaps if math.isfinite(g)]
        return max(finite) if finite else -1.0

    def most_disagreeing(self, top: int = 24) -> list[str]:
        """The ``top`` cases with the largest disagreement, largest first (ties: the first folder's order)."""
        order = sorted(range(len(self.names)), key=lambda i: (-self.disagreement(self.names[i]), i))
        return [self.names[i] for i in order[:top]]

    def to_json(self) -> dict:
        """comparison.json: folders, cases, what was dropped, and per column: metric, class, and per other
        folder the paired difference against the first (``higher_is_better`` says which way is better)."""
        metrics = {}
        for column in self.columns:
            metric, class_name = metric_parts(column) or (column, None)
            metrics[column] = {
                "metric": metric,
                "class": class_name,
                "higher_is_better": metric not in LOWER_IS_BETTER,
                "against_first": {label: asdict(d) for label, d in self.differences[column].items()},
            }
        return {
            "first": self.first.label,
            "folders": [{"label": f.label, "path": str(f.path), "n_cases": len(f.scores)} for f in self.folders],
            "n_cases": len(self.names),
            "dropped": {label: len(names) for label, names in self.dropped.items()},
            "dropped_cases": self.dropped,
            "difference": "other minus first, per case; se: standard error of the mean difference (ddof=1)",
            "metrics": metrics,
        }

    def csv_text(self) -> str:
        """comparison.csv: per case, each folder's value of each column (``COLUMN@LABEL``), then each later
        folder's difference to the first (``COLUMN@LABEL-FIRST``)."""
        header = ["name"]
        for column in self.columns:
            header += [f"{column}@{f.label}" for f in self.folders]
            header += [f"{column}@{f.label}-{self.first.label}" for f in self.folders[1:]]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        for name in self.names:
            row: list[object] = [name]
            for column in self.columns:
                row += [f.scores[name][column] for f in self.folders]
                base = self.first.scores[name][column]
                row += [f.scores[name][column] - base for f in self.folders[1:]]
            writer.writerow(row)
        return buf.getvalue()


def compare_scored(folders: Sequence[ScoredFolder], intersection: bool = False) -> Comparison:
    """Pair already-read folders: the common score columns, the cases, the paired differences."""
    if len(folders) < 2:
        raise ConfigError(f"compare needs at least two scored folders, got {len(folders)}")
    labels = [f.label for f in folders]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"folder labels must differ, got {labels}; name them LABEL=FOLDER")
    columns = [c for c in folders[0].columns if all(c in f.columns for f in folders[1:])]
    if not columns:
        raise DataError("the folders share no score column", [f"{f.label}: {', '.join(f.columns)}" for f in folders])
    names, dropped = match_cases(folders, intersection)
    differences = {}
    for column in columns:
        lower = (metric_parts(column) or (column, None))[0] in LOWER_IS_BETTER
        first = {n: folders[0].scores[n][column] for n in names}
        differences[column] = {
            f.label: paired_difference(first, {n: f.scores[n][column] for n in names}, lower) for f in folders[1:]
        }
    return Comparison(list(folders), names, columns, dropped, differences)


def compare_folders(
    folders: Sequence[str | os.PathLike | tuple[str | None, str | os.PathLike]], intersection: bool = False
) -> Comparison:
    """Read the scored folders (paths, or ``(label, path)`` pairs) and pair them case by case."""
    pairs = [f if isinstance(f, tuple) else (None, f) for f in folders]
    auto = folder_labels([Path(p) for _, p in pairs]) if len(pairs) > 1 else [Path(pairs[0][1]).name]
    read = [read_scored(path, label or auto[i]) for i, (label, path) in enumerate(pairs)]
    return compare_scored(read, intersection)


def _format(value: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.{digits}f}"


def format_comparison(comparison: Comparison) -> str:
    """The paired table for the terminal: per column and later folder, difference ± SE and who is better."""
    lines = [f"{len(comparison.names)} case(s); differences are other minus {comparison.first.label}, per case"]
    for label, names in comparison.dropped.items():
        if names:
            lines.append(f"dropped from {label}: {len(names)} case(s) not in every folder")
    for column in comparison.columns:
        for label, d in comparison.differences[column].items():
            digits = 2 if (metric_parts(column) or ("",))[0] in LOWER_IS_BETTER else 4
            lines.append(
                f"{column:<16} {label:<20} {_format(d.mean, digits)} ± {_format(d.se, digits).lstrip('+')}  "
                f"better: {label} {d.other_better}, {comparison.first.label} {d.first_better}, "
                f"ties {d.ties} (n {d.n})"
            )
    return "\n".join(lines)


def write_comparison(
    comparison: Comparison, out_dir: str | os.PathLike, top: int = 24, overwrite: bool = False
) -> dict[str, Path]:
    """comparison.csv, comparison.json, comparison.png (the scatter) and comparison.html into ``out_dir``.

    By the file rule (:class:`gmseg.outputs.OutputGuard`): every output planned before the first is written,
    never inside a compared folder, an existing file replaced only with ``overwrite``.
    """
    from gmseg.outputs import OutputGuard
    from gmseg.report_html import COMPARISON_PICTURES, write_comparison_page  # lazy: numpy, PIL
    from gmseg.visualize import paired_scatter

    out = Path(out_dir)
    files = {kind: out / f"comparison.{kind}" for kind in ("csv", "json", "png", "html")}
    with OutputGuard("compare", overwrite=overwrite) as guard:
        for folder in comparison.folders:
            guard.read_folder(folder.path)
            guard.read(folder.path / METRICS_CSV)
        guard.claim(out)
        guard.plan(*files.values())
        guard.plan_folder(out / COMPARISON_PICTURES)
        guard.write_text(files["csv"], comparison.csv_text())
        text = json.dumps(json_safe(comparison.to_json()), indent=2, allow_nan=False) + "\n"
        guard.write_text(files["json"], text)
        column = comparison.main_column()
        first = comparison.first
        others = {f.label: [f.scores[n][column] for n in comparison.names] for f in comparison.folders[1:]}
        values = [first.scores[n][column] for n in comparison.names]
        paired_scatter(values, others, first.label, column, files["png"], guard)
        write_comparison_page(comparison_view(comparison, top), out, guard)
    return files


def comparison_view(comparison: Comparison, top: int = 24) -> ComparisonView:
    """What comparison.html shows (:class:`~gmseg.report_html.ComparisonView`): the folders, the paired
    differences, and the ``top`` cases they disagree on most, with each folder's score of the main column."""
    from gmseg.report_html import ComparisonView  # lazy: numpy, PIL

    column = comparison.main_column()
    return ComparisonView(
        folders=[(f.label, f.path, len(f.scores)) for f in comparison.folders],
        n_cases=len(comparison.names),
        n_dropped=sum(len(v) for v in comparison.dropped.values()),
        differences=[
            (c, label, asdict(d)) for c in comparison.columns for label, d in comparison.differences[c].items()
        ],
        column=column,
        cases=[
            (name, comparison.disagreement(name), [f.scores[name][column] for f in comparison.folders])
            for name in comparison.most_disagreeing(top)
        ],
    )


def run_compare(
    folders: Sequence[str],
    out_dir: str | os.PathLike,
    intersection: bool = False,
    top: int = 24,
    overwrite: bool = False,
) -> Comparison:
    """What ``gmseg compare`` runs: parse ``LABEL=FOLDER`` arguments, pair, write the four files."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    comparison = compare_folders([parse_folder_arg(text) for text in folders], intersection=intersection)
    write_comparison(comparison, out_dir, top=top, overwrite=overwrite)
    return comparison
