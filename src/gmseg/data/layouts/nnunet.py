"""The nnU-Net v2 raw dataset, read in place.

``DatasetXXX_Name/`` holds ``imagesTr/CASE_0000.ext`` (one file per channel, ``_0000`` the first),
``labelsTr/CASE.ext``, optionally ``imagesTs/``, and ``dataset.json`` with ``"channel_names"``, ``"labels"``
name -> index, ``"numTraining"`` and ``"file_ending"``. ``splits_final.json`` (nnU-Net's five folds), when
present in the folder, decides the split: fold 0's validation cases are the test set (they are what
nnU-Net's cross-validation scores), and validation for checkpoint selection is carved from its training cases.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gmseg.data.layouts.base import Case, Layout, labels_of, read_dataset_json, single_channel
from gmseg.data.readers import SUFFIXES, VOLUME_SUFFIXES
from gmseg.errors import DataError

__all__ = ["NnUNetLayout"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class NnUNetLayout(Layout):
    """An nnU-Net v2 raw dataset: imagesTr/ CASE_0000.ext, labelsTr/ CASE.ext, dataset.json."""

    name = "nnunet"

    @classmethod
    def detect(cls, root: Path) -> bool:
        path = root / "dataset.json"
        if not (path.is_file() and (root / "imagesTr").is_dir()):
            return False
        try:
            data = read_dataset_json(path)
        except DataError:
            return False
        return "channel_names" in data or "file_ending" in data

    def __init__(self, root: Path):
        self.root = Path(root)
        self.json_path = self.root / "dataset.json"
        data = read_dataset_json(self.json_path)
        self.labels = labels_of(data, self.json_path)
        self.modality = single_channel(data.get("channel_names"), self.json_path, "channel_names")
        ending = data.get("file_ending")
        if not isinstance(ending, str) or ending.lower() not in SUFFIXES + VOLUME_SUFFIXES:
            raise DataError(
                f"unsupported file_ending in {self.json_path}",
                [f"{self.json_path}: file_ending {ending!r}; supported: {', '.join(SUFFIXES + VOLUME_SUFFIXES)}"],
            )
        self.file_ending = ending
        self.is_3d = ending.lower() in VOLUME_SUFFIXES
        self._cases = self._read_cases(data)

    def _images(self, folder: Path, problems: list[str]) -> dict[str, Path]:
        """CASE -> its _0000 file; any other channel number is refused (one channel is supported)."""
        found: dict[str, Path] = {}
        if not folder.is_dir():
            return found
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.name.lower().endswith(self.file_ending.lower()):
                continue
            match = _CHANNEL.match(path.name[: -len(self.file_ending)])
            if match is None:
                problems.append(f"{path}: expected CASE_0000{self.file_ending} (nnU-Net names a channel by _0000)")
            elif match["channel"] != "0000":
                problems.append(f"{path}: channel {match['channel']}; gmseg takes one channel per case (_0000)")
            else:
                found[match["case"]] = path
        return found

    def _read_cases(self, data: dict) -> list[Case]:
        problems: list[str] = []
        train_images = self._images(self.root / "imagesTr", problems)
        test_images = self._images(self.root / "imagesTs", problems)
        labels_dir = self.root / "labelsTr"
        labels = {}
        if labels_dir.is_dir():
            for p in labels_dir.iterdir():
                if not p.name.startswith(".") and p.name.lower().endswith(self.file_ending.lower()):
                    labels[p.name[: -len(self.file_ending)]] = p
        problems += [
            f"{labels_dir / (n + self.file_ending)}: label missing for {p}"
            for n, p in train_images.items()
            if n not in labels
        ]
        problems += [
            f"{p}: label without an image {self.root / 'imagesTr' / (n + '_0000' + self.file_ending)}"
            for n, p in labels.items()
            if n not in train_images
        ]
        declared = data.get("numTraining")
        if isinstance(declared, int) and declared != len(train_images):
            problems.append(
                f"{self.json_path}: numTraining is {declared} but imagesTr holds {len(train_images)} case(s)"
            )
        if problems:
            raise DataError(f"nnU-Net dataset {self.root} has {len(problems)} problem(s)", problems)
        cases = [Case(n, (p,), labels[n]) for n, p in train_images.items()]
        cases += [Case(n, (p,), None) for n, p in test_images.items() if n not in train_images]
        return sorted(cases, key=lambda c: c.name)

    def _all_cases(self) -> list[Case]:
        return list(self._cases)

    def saved_split(self) -> dict[str, list[str]] | None:
        """Fold 0 of ``splits_final.json``: its val cases are test, its train cases train (val carved later)."""
        path = self.root / "splits_final.json"
        if not path.is_file():
            return None
        try:
            folds = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {path}", [f"{path}: {exc}; fix or delete the file"]) from exc
        if not isinstance(folds, list) or not folds or not isinstance(folds[0], dict):
            raise DataError(f"invalid {path}", [f"{path}: expected a list of folds [{{'train': [...], 'val': [...]}}]"])
        fold = folds[0]
        return {"train": list(fold.get("train", [])), "test": list(fold.get("val", []))}
