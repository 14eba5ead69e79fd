"""BUS (UDIAT dataset B): original/ and GT/; pathology from DatasetB.csv's Type."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from gmseg.data.prepare.engine import (
    Layout,
    _find_dir,
    _index,
    _layout_error,
    _Pair,
    _pair,
    _stem,
    _subdir,
    _under,
    _value_of,
    _walk_files,
)
from gmseg.errors import DataError


def _collect_bus(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """UDIAT dataset B: original/<id>.png and GT/<id>.png."""
    root = _find_dir(raw, ("original", "GT"), exclude)
    if root is None:
        raise _layout_error("BUS", raw, "folders original/ and GT/ with files named <id>.png (e.g. 000001.png)")
    images = _index(_walk_files(_subdir(root, "original"), exclude), _stem, unmatched)
    masks = _index(_walk_files(_subdir(root, "GT"), exclude), _stem, unmatched)
    return _pair(images, masks, unmatched)


def _case_key(case: str) -> str:
    """A case id as both the file names and a spreadsheet export spell it (``000007``, ``7``, ``000007.png``)."""
    stem = _stem(Path(case.strip())) if "." in case else case.strip()
    return str(int(stem)) if stem.isdigit() else stem.lower()


def _find_bus_csv(raw: Path, exclude: Path | None) -> Path:
    """UDIAT's ``DatasetB.csv`` anywhere under ``raw`` (the shallowest wins)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(raw):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _under(here / d, exclude))
        found += [here / f for f in sorted(filenames) if f.lower() == "datasetb.csv"]
    if not found:
        raise DataError(
            f"no BUS pathology table under {raw}",
            [
                f"{raw}: labels 'pathology' needs DatasetB.csv (columns Image, Type = Benign/Malignant); export "
                "the download's DatasetB.xlsx as CSV next to original/ and GT/"
            ],
        )
    return min(found, key=lambda p: (len(p.relative_to(raw).parts), str(p)))


def _read_bus_csv(path: Path) -> dict[str, str]:
    """case key -> 'benign' / 'malignant' from DatasetB.csv's Image and Type columns."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}", [f"{path}: {exc}; re-export it as a UTF-8 CSV"]) from exc
    columns = {str(c).strip().lower(): c for c in (rows[0].keys() if rows else [])}
    if "image" not in columns or "type" not in columns:
        raise DataError(
            f"unexpected columns in {path}",
            [f"{path}: columns {list(columns)}; expected Image (the case id, e.g. 000001) and Type (Benign/Malignant)"],
        )
    table: dict[str, str] = {}
    problems = []
    for line, row in enumerate(rows, start=2):
        case, kind = str(row[columns["image"]] or "").strip(), str(row[columns["type"]] or "").strip().lower()
        if kind not in ("benign", "malignant"):
            problems.append(f"{path} line {line}: case {case!r} has Type {kind!r}; expected Benign or Malignant")
        elif case:
            table[_case_key(case)] = kind
    if problems:
        raise DataError(f"{path}: {len(problems)} row(s) without a pathology", problems)
    return table


def _bus_pathology(pairs: list[_Pair], raw: Path, exclude: Path | None) -> None:
    """BUS's pathology is DatasetB.csv's Type; every case must have one."""
    path = _find_bus_csv(raw, exclude)
    table = _read_bus_csv(path)
    missing = [p for p in pairs if _case_key(p.name) not in table]
    if missing:
        raise DataError(
            f"{len(missing)} BUS case(s) have no pathology in {path}; nothing was written",
            [
                f"{p.image}: case {p.name} is not in {path}; add its row (Image,Type) or remove the case"
                for p in missing
            ],
        )
    for pair in pairs:
        pair.value = _value_of(table[_case_key(pair.name)])


LAYOUT = Layout("bus", "lesion", _collect_bus, {"pathology": _bus_pathology})
