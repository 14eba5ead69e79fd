"""What every dataset layout gives: its cases, its classes, and a split by case.

A layout reads a dataset *in place* (the prepared 2D folder, an MSD task, an nnU-Net v2 raw dataset): it
lists cases (one case = the image file(s) of one subject and its label file) and never copies voxels.
Splits are by case name, so the slices of one volume can never fall into two of train/validation/test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gmseg.data.readers import Volume, read_volume
from gmseg.data.splits import random_split, validate_split, with_validation
from gmseg.errors import ConfigError, DataError
from gmseg.labels import LabelSet

__all__ = ["Case", "Layout", "read_dataset_json"]


@dataclass(frozen=True)
class Case:
    """One subject: its input file(s), one per channel, and its label file (None when unlabelled)."""

    name: str  # case identifier, e.g. "hippocampus_001" (nnU-Net: without _0000 and the ending)
    images: tuple[Path, ...]  # one file per input channel (nnU-Net _0000, _0001 ...; MSD: one file)
    label: Path | None  # None for unlabelled cases (imagesTs)


def read_dataset_json(path: Path) -> dict[str, Any]:
    """A dataset.json as a dict, or a DataError naming it (missing, not JSON, not an object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"dataset.json missing: {path}", [f"{path}: does not exist"]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}", [f"{path}: {exc}; fix the JSON"]) from exc
    if not isinstance(data, Mapping):
        raise DataError(f"cannot read {path}", [f"{path}: top level is {type(data).__name__}, expected an object"])
    return dict(data)


def labels_of(data: Mapping[str, Any], path: Path) -> LabelSet:
    """The classes a dataset.json declares (MSD index -> name or nnU-Net name -> index)."""
    if "labels" not in data:
        raise DataError(f"no 'labels' in {path}", [f'{path}: declare the classes, e.g. "labels": {{"0": ...}}'])
    try:
        return LabelSet.from_labels(data["labels"])
    except ConfigError as exc:
        raise DataError(f"invalid 'labels' in {path}", [f"{path}: {exc}"]) from exc


def single_channel(channels: Any, path: Path, key: str) -> str:
    """The one channel's name; several channels are refused (gmseg's models take one input volume)."""
    if not isinstance(channels, Mapping) or not channels:
        raise DataError(f"no '{key}' in {path}", [f'{path}: expected \'{key}\': {{"0": "CT"}} (one channel)'])
    if len(channels) > 1:
        named = ", ".join(f"{k}={v}" for k, v in channels.items())
        raise DataError(
            f"multi-channel dataset {path.parent}",
            [
                f"{path}: {len(channels)} input channels ({named}); gmseg's models take one channel per case: "
                "keep one (e.g. a copy of the dataset with one channel) or use nnU-Net for multi-channel input"
            ],
        )
    return str(next(iter(channels.values())))


class Layout:
    """A dataset read in place; one subclass per layout, each registered in :data:`gmseg.data.layouts.LAYOUTS`.

    Subclasses set ``name``, implement :meth:`detect` and :meth:`_all_cases`, and fill ``root``,
    ``labels``, ``is_3d`` and ``modality`` in ``__init__`` (refusing bad datasets there, every problem at once).
    """

    name: ClassVar[str] = "layout"
    root: Path
    labels: LabelSet
    is_3d: bool
    modality: str

    @classmethod
    def detect(cls, root: Path) -> bool:
        """True when ``root`` looks like this layout (cheap: file names and dataset.json keys only)."""
        raise NotImplementedError

    def _all_cases(self) -> list[Case]:
        raise NotImplementedError

    def cases(self, labelled: bool = True) -> list[Case]:
        """The dataset's cases sorted by name: only the labelled ones (default), or every case
        (``labelled=False``: unlabelled ones such as imagesTs too, with ``label`` None)."""
        found = self._all_cases()
        return [c for c in found if c.label is not None] if labelled else found

    def case(self, name: str) -> Case:
        """The case called ``name``; a DataError naming the dataset when there is none."""
        for found in self.cases(labelled=False):
            if found.name == name:
                return found
        raise DataError(f"no case {name!r} in {self.root}", [f"{self.root}: has no case {name!r}"])

    def saved_split(self) -> dict[str, list[str]] | None:
        """A split file the dataset ships (None: none), as train/val/test case names."""
        return None

    def split(self, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> dict[str, list[str]]:
        """Train/val/test by *case name*: the dataset's own split file when present, else seeded.

        Without a split file: a seeded ``test_fraction`` of the labelled cases is test, and a seeded
        ``val_fraction`` of the rest validation (:func:`gmseg.data.splits.with_validation`). Every name
        belongs to one case, so no case's slices can be in two sets.
        """
        names = [c.name for c in self.cases()]
        if not names:
            raise DataError(f"no labelled cases in {self.root}", [f"{self.root}: found no image with a label"])
        split = self.saved_split()
        if split is None:
            split = random_split(names, test_fraction=test_fraction, seed=seed)
        split = with_validation(split, fraction=val_fraction, seed=seed)
        unknown = sorted({n for v in split.values() for n in v} - set(names))
        if unknown:
            raise DataError(
                f"split of {self.root} names cases that are not in the dataset",
                [f"{self.root}: {len(unknown)} unknown case name(s), e.g. {unknown[:5]}"],
            )
        return validate_split(split, f"split of {self.root}")

    # ------------------------------------------------------------------------------------ reading

    def load_case(self, case: Case) -> tuple[Volume, Volume | None]:
        """The case's image and label volumes, checked against each other and against the dataset.

        Refused, naming the file(s): a 2D file in a 3D dataset or the reverse, a label whose shape or
        geometry differs from its image (both geometries named), label values the dataset does not declare.
        """
        if len(case.images) != 1:
            raise DataError(
                f"case {case.name} has {len(case.images)} channels",
                [f"{case.images[0]}: gmseg takes one input channel per case"],
            )
        image = self._volume(case.images[0])
        if case.label is None:
            return image, None
        label = self._volume(case.label)
        check_pair(image, label)
        check_label_values(label, self.labels)
        return image, label

    def check(self, names: list[str] | None = None) -> None:
        """Load every case of ``names`` (default: every case) and raise one DataError listing every bad
        file, so a dataset is fixed in one pass and a run fails before it starts, not hours in."""
        wanted = None if names is None else set(names)
        problems: list[str] = []
        for case in self.cases(labelled=False):
            if wanted is not None and case.name not in wanted:
                continue
            try:
                self.load_case(case)
            except DataError as exc:
                problems += [exc.summary] if not exc.problems else exc.problems
        if wanted is not None:
            known = {c.name for c in self.cases(labelled=False)}
            problems += [f"{self.root}: no case {n!r}" for n in sorted(wanted - known)]
        if problems:
            raise DataError(f"dataset at {self.root} has {len(problems)} problem(s); fix them first", problems)

    def _volume(self, path: Path) -> Volume:
        volume = read_volume(path)
        if volume.is_3d != self.is_3d:
            expected, found = ("3D", "2D") if self.is_3d else ("2D", "3D")
            raise DataError(
                f"a {found} file in a {expected} dataset: {path}",
                [f"{path}: {found} (array {volume.array.shape}) but {self.root} is a {expected} dataset"],
            )
        if self.is_3d and volume.array.ndim != 3:
            raise DataError(
                f"a multi-component volume where a 3D one is expected: {path}",
                [f"{path}: array {volume.array.shape} has {volume.array.shape[-1]} components per voxel"],
            )
        return volume

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


def check_pair(image: Volume, label: Volume) -> None:
    """An image and its label must share their grid voxel for voxel (nnU-Net's check, same tolerance)."""
    image_shape = image.array.shape[:3]
    if image_shape != label.array.shape[:3]:
        raise DataError(
            f"image and label shapes differ: {image.path} and {label.path}",
            [f"{label.path}: shape (z, y, x) {label.array.shape[:3]} but image {image.path} is {image_shape}"],
        )
    if not image.geometry.close_to(label.geometry):
        raise DataError(
            f"image and label geometries differ: {image.path} and {label.path}",
            [
                f"{image.path}: {image.geometry.describe()}",
                f"{label.path}: {label.geometry.describe()}; resample the label onto its image's grid",
            ],
        )


def check_label_values(label: Volume, labels: LabelSet) -> None:
    """Every label value must be a declared class (a typo'd class would silently be background)."""
    arr = label.array
    if np.issubdtype(arr.dtype, np.floating) and not np.array_equal(arr, np.rint(arr)):
        raise DataError(
            f"label volume with fractional values: {label.path}",
            [f"{label.path}: a label volume holds class values, not probabilities"],
        )
    values = np.unique(arr)
    undeclared = sorted(int(v) for v in values if int(v) not in labels.values)
    if undeclared:
        declared = ", ".join(f"{n}={v}" for n, v in zip(labels.names, labels.values))
        raise DataError(
            f"undeclared label values in {label.path}",
            [
                f"{label.path}: values {undeclared} are no class of the dataset ({declared}); fix the label or dataset.json"
            ],
        )


def relative_file(root: Path, entry: Any, where: str) -> Path:
    """A dataset.json file entry ("./imagesTr/x.nii.gz") as a path under ``root``; never outside it."""
    if not isinstance(entry, str) or not entry:
        raise DataError(f"invalid file entry in {where}", [f"{where}: {entry!r} is not a file name"])
    path = Path(os.path.normpath(root / entry))
    if root.resolve() not in path.resolve().parents:
        raise DataError(f"file outside the dataset in {where}", [f"{where}: {entry!r} points outside {root}"])
    return path
