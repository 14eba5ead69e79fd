"""The Medical Segmentation Decathlon task folder, read in place.

``TaskXX_Name/dataset.json`` lists ``"training": [{"image": "./imagesTr/x.nii.gz", "label":
"./labelsTr/x.nii.gz"}]`` and ``"test": ["./imagesTs/y.nii.gz"]`` (unlabelled), with ``"labels"``
index -> name and ``"modality"`` index -> name. Files are taken from that list, not from a directory listing,
so the macOS ``._x.nii.gz`` companions that circulate with the archives are never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gmseg.data.layouts.base import Case, Layout, labels_of, read_dataset_json, relative_file, single_channel
from gmseg.data.readers import is_volume_file, split_name
from gmseg.errors import DataError

__all__ = ["MSDLayout"]


class MSDLayout(Layout):
    """An MSD task: dataset.json with a ``"training"`` list of image/label pairs."""

    name = "msd"

    @classmethod
    def detect(cls, root: Path) -> bool:
        path = root / "dataset.json"
        if not path.is_file():
            return False
        try:
            data = read_dataset_json(path)
        except DataError:
            return False
        return isinstance(data.get("training"), list) and "channel_names" not in data

    def __init__(self, root: Path):
        self.root = Path(root)
        self.json_path = self.root / "dataset.json"
        data = read_dataset_json(self.json_path)
        self.labels = labels_of(data, self.json_path)
        self.modality = single_channel(data.get("modality"), self.json_path, "modality")
        self._cases = self._read_cases(data)
        files = [p for c in self._cases for p in (*c.images, c.label) if p is not None]
        self.is_3d = bool(files) and all(is_volume_file(p) for p in files)
        if str(data.get("tensorImageSize", "3D")).upper() == "4D":
            raise DataError(
                f"4D images where 3D ones are expected: {self.root}",
                [f"{self.json_path}: tensorImageSize is 4D; gmseg takes one 3D volume per case"],
            )

    def _read_cases(self, data: dict[str, Any]) -> list[Case]:
        where = str(self.json_path)
        training, test = data.get("training"), data.get("test", [])
        if not isinstance(training, list) or not isinstance(test, list):
            raise DataError(f"invalid {where}", [f"{where}: 'training' and 'test' must be lists"])
        cases: list[Case] = []
        problems: list[str] = []
        for entry in training:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                problems.append(f"{where}: training entry {entry!r} needs 'image' and 'label'")
                continue
            image = relative_file(self.root, entry["image"], where)
            label = relative_file(self.root, entry["label"], where)
            cases.append(Case(split_name(image)[0], (image,), label))
        for entry in test:
            image = relative_file(self.root, entry, where)
            cases.append(Case(split_name(image)[0], (image,), None))
        missing = [p for c in cases for p in (*c.images, c.label) if p is not None and not p.is_file()]
        problems += [f"{p}: listed in {where} but missing" for p in missing]
        names = [c.name for c in cases]
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems += [f"{where}: case name {n!r} appears more than once" for n in dupes]
        if problems:
            raise DataError(f"MSD dataset {self.root} has {len(problems)} problem(s)", problems)
        return sorted(cases, key=lambda c: c.name)

    def _all_cases(self) -> list[Case]:
        return list(self._cases)
