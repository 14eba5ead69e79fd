"""Converters from the public datasets' download layouts (and a user's own folders) to the package layout.

Output, for every source: ``out/images/NAME.png`` (RGB), ``out/masks/NAME.png`` (0/255 grayscale),
``out/split.json`` and ``out/dataset.json`` (nnU-Net's convention: ``name``, ``labels``, ``numTraining``,
``file_ending``; binary: background 0 and the dataset's foreground, e.g. lesion, 1). Names follow the
paper's split files (e.g. ``benign_1``, ``testA_1``, ``ISIC_0024306``), so the release's splits apply
unchanged. With ``labels="pathology"`` (BUSI and BUS) the masks are 3-class palette PNGs instead: background
0, benign 1, malignant 2, each lesion's pixels set to its case's pathology (BUSI: the class folder / file
name; BUS: ``DatasetB.csv``'s ``Type``).

Nothing is written unless every pair is readable and image/mask sizes agree. The dataset is written into a
hidden sibling folder and renamed into place when complete, so an interrupted or failed run leaves the
previous state untouched; a non-empty ``out`` is replaced only with ``overwrite``, and an input folder inside
``out`` is always refused. Masks are read by the one rule of :func:`gmseg.data.io.inspect_mask`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmseg.bounds import check_mask_threshold
from gmseg.data.io import (
    SOFT_LEVELS,
    MaskReading,
    inspect_mask,
    is_image_file,
    odd_encodings,
    read_image,
    read_size,
    write_image_png,
    write_label_map_png,
    write_mask_png,
)
from gmseg.data.readers import OUTPUT_2D_SUFFIX, split_name, suffix_rank
from gmseg.data.splits import load_split, random_split, save_split
from gmseg.errors import ConfigError, DataError
from gmseg.fileio import atomic_write_text, clean_stale_temporaries, swap_in, temporary_sibling
from gmseg.labels import LabelSet

__all__ = [
    "DATASETS",
    "FOREGROUND",
    "LABEL_SCHEMES",
    "PATHOLOGY",
    "PrepareReport",
    "prepare_dataset",
    "prepare_folders",
]

PATHOLOGY = LabelSet(("background", "benign", "malignant"), (0, 1, 2))
"""The classes of ``labels="pathology"``: each lesion labelled with its case's diagnosis."""

FOREGROUND: dict[str, str] = {
    "busi": "lesion",
    "bus": "lesion",
    "glas": "gland",
    "ham10000": "lesion",
    "kvasir-instrument": "instrument",
    "folders": "foreground",
}
"""The name of the foreground class in each binary dataset's dataset.json."""


@dataclass
class PrepareReport:
    """What a prepare run produced, for printing and for tests."""

    dataset: str
    out: Path
    n_pairs: int
    split_counts: dict[str, int]
    unmatched: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # dataset.json's "labels"
    class_counts: dict[str, int] = field(default_factory=dict)  # multi-class: cases holding each class

    def summary(self) -> str:
        """A few human-readable lines: counts, split sizes, classes and (the first) unmatched entries."""
        counts = ", ".join(f"{k} {v}" for k, v in self.split_counts.items())
        lines = [f"prepared {self.n_pairs} {self.dataset} image/mask pairs in {self.out} (split: {counts})"]
        if self.class_counts:
            classes = ", ".join(f"{k} {v}" for k, v in self.class_counts.items())
            declared = ", ".join(f"{k}={v}" for k, v in self.labels.items())
            lines.append(f"classes ({declared}), cases holding each: {classes}")
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} unmatched (not in the output):")
            lines += [f"  - {u}" for u in self.unmatched[:20]]
            if len(self.unmatched) > 20:
                lines.append(f"  ... and {len(self.unmatched) - 20} more")
        if self.duplicates:
            lines.append(f"{len(self.duplicates)} group(s) of identical images (all kept, check them):")
            lines += [f"  - {d}" for d in self.duplicates]
        if self.notes:
            lines.append("notes:")
            lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class _Pair:
    name: str
    image: Path
    masks: list[Path]
    value: int = 1  # the class value of this case's foreground pixels (multi-class: its pathology)


# ----------------------------------------------------------------------------------------------- helpers


def _stem(path: Path) -> str:
    """The file name without its ending (multi-part endings such as .nii.gz included)."""
    return split_name(path)[0]


def _under(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def _walk_files(raw: Path, exclude: Path | None) -> list[Path]:
    """All image files below ``raw`` in a stable order, skipping ``exclude`` (the output folder)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(raw):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _under(here / d, exclude))
        found += [here / f for f in sorted(filenames) if is_image_file(here / f)]
    return found


def _walk_dirs(raw: Path, exclude: Path | None) -> list[Path]:
    found = [raw]
    for dirpath, dirnames, _ in os.walk(raw):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _under(here / d, exclude))
        found += [here / d for d in dirnames]
    return found


def _preferred(paths: list[Path]) -> list[Path]:
    """Order duplicate candidates: .png first, then the other suffixes, then path."""
    return sorted(paths, key=lambda p: (suffix_rank(p), str(p)))


def _index(files: Iterable[Path], key: Callable[[Path], str | None], unmatched: list[str]) -> dict[str, Path]:
    """Map key(file) -> file; files with key None are skipped; duplicates keep the preferred one.

    Duplicates of the same size are taken as copies (Kaggle's HAM10000 ships every image twice, in
    upper- and lower-case folders) and not reported; others are listed as ignored.
    """
    groups: dict[str, list[Path]] = {}
    for path in files:
        k = key(path)
        if k is not None:
            groups.setdefault(k, []).append(path)
    index = {}
    for k, paths in groups.items():
        best, *rest = _preferred(paths)
        index[k] = best
        size = best.stat().st_size
        unmatched += [f"{p} (duplicate of {best}, ignored)" for p in rest if p.stat().st_size != size]
    return index


def _pair(images: dict[str, Path], masks: dict[str, Path], unmatched: list[str]) -> list[_Pair]:
    unmatched += [f"{images[k]} (image without mask)" for k in sorted(set(images) - set(masks))]
    unmatched += [f"{masks[k]} (mask without image)" for k in sorted(set(masks) - set(images))]
    return [_Pair(k, images[k], [masks[k]]) for k in sorted(set(images) & set(masks))]


def _find_dir(raw: Path, names: Iterable[str], exclude: Path | None, depth: int = 1) -> Path | None:
    """``raw`` or a folder up to ``depth`` levels below it that contains all of ``names`` (any case)."""
    wanted = {n.lower() for n in names}
    level = [raw]
    for _ in range(depth + 1):
        nxt = []
        for folder in level:
            subs = {p.name.lower() for p in folder.iterdir() if p.is_dir()}
            if wanted <= subs:
                return folder
            nxt += sorted(p for p in folder.iterdir() if p.is_dir() and not _under(p, exclude))
        level = nxt
    return None


def _subdir(folder: Path, name: str) -> Path:
    return next(p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name.lower())


def _layout_error(dataset: str, raw: Path, expected: str) -> DataError:
    return DataError(
        f"no {dataset} image/mask pairs found under {raw}",
        [f"{raw}: expected {expected}; point --raw at the extracted download"],
    )


# -------------------------------------------------------------------------------------------- converters

_BUSI_RE = re.compile(r"^(benign|malignant|normal)\s*\((\d+)\)(_mask(?:_(\d+))?)?$", re.IGNORECASE)
_BUSI_LAYOUT = "class folders benign/, malignant/ with 'benign (1).png' and 'benign (1)_mask.png'"


def _collect_busi(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """Kaggle Dataset_BUSI_with_GT: one lesion mask per file; extra lesions in _mask_1, _mask_2 (OR-ed)."""
    root = None
    for classes in (("benign", "malignant"), ("benign",), ("malignant",)):
        root = _find_dir(raw, classes, exclude)
        if root is not None:
            break
    if root is None:
        if (raw / "images").is_dir() and (raw / "masks").is_dir():
            return _collect_busi_release(raw, exclude, unmatched)
        raise _layout_error("BUSI", raw, _BUSI_LAYOUT)
    images: dict[str, Path] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    for cls in ("benign", "malignant"):  # 'normal' has no lesion and is not in the paper's split
        if not any(p.is_dir() and p.name.lower() == cls for p in root.iterdir()):
            continue
        for path in _walk_files(_subdir(root, cls), exclude):
            m = _BUSI_RE.match(_stem(path))
            if m is None:
                unmatched.append(f"{path} (unrecognised BUSI file name)")
                continue
            name = f"{m.group(1).lower()}_{int(m.group(2))}"
            if m.group(3) is None:
                if name in images:
                    unmatched.append(f"{path} (duplicate of {images[name]}, ignored)")
                else:
                    images[name] = path
            else:
                order = 0 if m.group(4) is None else int(m.group(4)) + 1
                masks.setdefault(name, []).append((order, path))
    pairs = []
    for name in sorted(set(images) | set(masks)):
        if name not in masks:
            unmatched.append(f"{images[name]} (image without mask)")
        elif name not in images:
            unmatched += [f"{p} (mask without image)" for _, p in sorted(masks[name])]
        else:
            pairs.append(_Pair(name, images[name], [p for _, p in sorted(masks[name])]))
    return pairs


def _collect_busi_release(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """BUSI as the GMS release names it: images/<class>_<k>.png with masks/<class>_<k>.png (lesions merged)."""

    def key(path: Path) -> str | None:
        stem = _stem(path).lower()
        return stem if re.fullmatch(r"(benign|malignant)_\d+", stem) else None

    images = _index(_walk_files(raw / "images", exclude), key, unmatched)
    masks = _index(_walk_files(raw / "masks", exclude), key, unmatched)
    return _pair(images, masks, unmatched)


def _collect_bus(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """UDIAT dataset B: original/<id>.png and GT/<id>.png."""
    root = _find_dir(raw, ("original", "GT"), exclude)
    if root is None:
        raise _layout_error("BUS", raw, "folders original/ and GT/ with files named <id>.png (e.g. 000001.png)")
    images = _index(_walk_files(_subdir(root, "original"), exclude), _stem, unmatched)
    masks = _index(_walk_files(_subdir(root, "GT"), exclude), _stem, unmatched)
    return _pair(images, masks, unmatched)


def _collect_glas(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """Warwick GlaS: <name>.bmp with <name>_anno.bmp instance labels (0 = background)."""
    files = _walk_files(raw, exclude)
    images = _index(files, lambda p: None if _stem(p).lower().endswith("_anno") else _stem(p), unmatched)
    masks = _index(files, lambda p: _stem(p)[:-5] if _stem(p).lower().endswith("_anno") else None, unmatched)
    if not masks:
        raise _layout_error("GlaS", raw, "files <name>.bmp with annotations <name>_anno.bmp (e.g. train_1_anno.bmp)")
    return _pair(images, masks, unmatched)


_ISIC_IMAGE = re.compile(r"^ISIC_\d+$")
_ISIC_MASK = re.compile(r"^(ISIC_\d+)_segmentation$")


def _collect_ham10000(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """HAM10000 / ISIC 2018 task 1: ISIC_<id>.jpg and ISIC_<id>_segmentation.png anywhere under raw."""
    files = _walk_files(raw, exclude)
    images = _index(files, lambda p: _stem(p) if _ISIC_IMAGE.match(_stem(p)) else None, unmatched)
    masks = _index(files, lambda p: m.group(1) if (m := _ISIC_MASK.match(_stem(p))) else None, unmatched)
    if not masks:
        raise _layout_error(
            "HAM10000", raw, "images ISIC_<id>.jpg and masks ISIC_<id>_segmentation.png (any sub-folders)"
        )
    return _pair(images, masks, unmatched)


def _collect_kvasir_instrument(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """Kvasir-Instrument: images/<id>.jpg and masks/<id>.png, sibling folders anywhere under raw."""
    image_dirs = [d for d in _walk_dirs(raw, exclude) if d.name.lower() == "images"]
    image_files: list[Path] = []
    mask_files: list[Path] = []
    for d in image_dirs:
        siblings = [p for p in d.parent.iterdir() if p.is_dir() and p.name.lower() == "masks"]
        if siblings:
            image_files += _walk_files(d, exclude)
            mask_files += _walk_files(siblings[0], exclude)
    if not mask_files:
        raise _layout_error(
            "Kvasir-Instrument",
            raw,
            "folders images/ (<id>.jpg) and masks/ (<id>.png); extract images.tar.gz and masks.tar.gz first",
        )
    images = _index(image_files, _stem, unmatched)
    masks = _index(mask_files, _stem, unmatched)
    return _pair(images, masks, unmatched)


# ------------------------------------------------------------------------------------ pathology labels


def _value_of(pathology: str) -> int:
    """benign -> 1, malignant -> 2 (the class values of :data:`PATHOLOGY`)."""
    return PATHOLOGY.values[PATHOLOGY.names.index(pathology)]


def _busi_pathology(pairs: list[_Pair], raw: Path, exclude: Path | None) -> None:
    """BUSI's pathology is its class folder, kept in every name (``benign_12``, ``malignant_3``)."""
    for pair in pairs:
        pair.value = _value_of(pair.name.split("_")[0])


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


_Labeller = Callable[[list[_Pair], Path, "Path | None"], None]
LABEL_SCHEMES: dict[str, dict[str, _Labeller]] = {
    "pathology": {"busi": _busi_pathology, "bus": _bus_pathology},
}
"""``labels`` values of :func:`prepare_dataset` -> the datasets that support them -> the labeller."""


_Collector = Callable[[Path, "Path | None", list[str]], list[_Pair]]
DATASETS: dict[str, _Collector] = {
    "busi": _collect_busi,
    "bus": _collect_bus,
    "glas": _collect_glas,
    "ham10000": _collect_ham10000,
    "kvasir-instrument": _collect_kvasir_instrument,
}


# ------------------------------------------------------------------------------------------- conversion


def check_output_folder(out: Path, inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse an output that would write over or mix with inputs, or replace a folder without --overwrite.

    An input folder equal to or inside ``out`` is refused even with ``overwrite`` (replacing ``out``
    would delete it); ``out`` inside a raw download is fine, the walk skips it.
    """
    target = out.resolve()
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise ConfigError(
            f"--out {out} is {'the current folder' if target == here else 'a folder above the current one'} "
            f"({target}): preparing replaces --out whole; choose a new folder, e.g. --out {out}/prepared"
        )
    for folder in inputs:
        if _under(folder, target):
            raise ConfigError(
                f"output folder {out} contains the input folder {folder}: preparing there would "
                "write over the originals; choose an --out outside the inputs"
            )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file, not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"output folder {out} is not empty: choose a new folder, or pass --overwrite to "
            "replace it whole (its old files are removed once the new dataset is complete)"
        )


def _mask_notes(masks: dict[str, MaskReading]) -> list[str]:
    """Warnings a user should see before training: soft masks and masks encoded unlike their folder."""
    soft = [str(p) for p, r in masks.items() if r.soft]
    notes = []
    if soft:
        notes.append(
            f"{len(soft)} mask(s) have more than {SOFT_LEVELS} grey levels (resized, blurred or "
            "probability maps?) and were binarised at > 0, which inflates lesions; set "
            "--mask-threshold (e.g. 0.5) if that is wrong: " + ", ".join(soft[:10]) + (" ..." if len(soft) > 10 else "")
        )
    notes += odd_encodings({p: r.encoding for p, r in masks.items()})
    return notes


def _convert(
    dataset: str,
    pairs: list[_Pair],
    unmatched: list[str],
    out: Path,
    split: str | os.PathLike[str] | None,
    test_fraction: float,
    seed: int,
    source: Path,
    mask_threshold: float | None = None,
    labels: LabelSet | None = None,
) -> PrepareReport:
    if not pairs:
        raise DataError(
            f"no {dataset} image/mask pairs found under {source}",
            [f"{u}" for u in unmatched[:50]] or [f"{source}: no matching files"],
        )
    loaded_split = load_split(split) if split is not None else None  # fail on a bad split before writing

    problems: list[str] = []
    for pair in pairs:  # header pass: catch unreadable files and size mismatches before writing anything
        try:
            size = read_size(pair.image)
        except DataError as exc:
            problems += [f"unreadable image: {p}" for p in exc.problems]
            continue
        for mask in pair.masks:
            try:
                msize = read_size(mask)
            except DataError as exc:
                problems += [f"unreadable mask: {p}" for p in exc.problems]
                continue
            if msize != size:
                problems.append(
                    f"{mask}: mask is {msize[0]}x{msize[1]} but image {pair.image} is "
                    f"{size[0]}x{size[1]} (width x height)"
                )
    if problems:
        raise DataError(f"{dataset}: {len(problems)} problem(s) in {source}; nothing was written", problems)
    duplicate_groups = _identical_images(pairs)
    duplicate_names = {n for group in duplicate_groups for n in group}
    duplicate_masks: dict[str, np.ndarray] = {}
    labels = LabelSet.binary(FOREGROUND.get(dataset, "foreground")) if labels is None else labels
    class_counts: dict[str, int] = {}

    import shutil

    from tqdm.auto import tqdm

    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out.parent)  # the staging copies of runs that were killed (by their PID)
    staging = temporary_sibling(out)  # .NAME.<pid>.<hex>.tmp: cleaned like that by a later run if we die
    notes: list[str] = []
    readings: dict[str, MaskReading] = {}
    empty: list[str] = []  # names whose mask came out empty
    emptied: list[str] = []  # ... although the mask rule finds foreground: the threshold emptied them
    try:
        for pair in tqdm(pairs, desc=f"prepare {dataset}", unit="pair", leave=False):
            try:
                image = read_image(pair.image, notes)
                mask = np.zeros(image.shape[:2], dtype=np.uint8)
                for path in pair.masks:
                    reading = inspect_mask(path, mask_threshold)
                    readings[str(path)] = reading
                    mask |= reading.mask
                if not mask.any():
                    empty.append(pair.name)
                    if mask_threshold is not None and any(inspect_mask(p).mask.any() for p in pair.masks):
                        emptied.append(pair.name)
            except DataError as exc:
                problems += exc.problems
                continue
            write_image_png(staging / "images" / f"{pair.name}{OUTPUT_2D_SUFFIX}", image)
            if labels.is_binary:
                write_mask_png(staging / "masks" / f"{pair.name}{OUTPUT_2D_SUFFIX}", mask)
            else:
                values = mask * np.uint8(pair.value)
                write_label_map_png(staging / "masks" / f"{pair.name}{OUTPUT_2D_SUFFIX}", values, labels)
                _count_classes(class_counts, values, labels)
            if pair.name in duplicate_names:
                duplicate_masks[pair.name] = mask
        if problems:
            raise DataError(f"{dataset}: {len(problems)} file(s) could not be decoded; nothing was written", problems)
        _check_emptied(emptied, len(pairs), mask_threshold)
        names = sorted(p.name for p in pairs)
        if loaded_split is None:
            final = random_split(names, test_fraction=test_fraction, seed=seed)
        else:
            have = set(names)
            final = {k: [n for n in v if n in have] for k, v in loaded_split.items()}
            for k, v in loaded_split.items():
                unmatched += [f"{n} (in split '{k}' of {split}, no image/mask found)" for n in v if n not in have]
        save_split(final, staging / "split.json")
        write_dataset_json(staging, dataset, labels, len(pairs))
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    duplicates = _describe_duplicates(duplicate_groups, duplicate_masks, final)
    notes = _summarise_depth_notes(notes) + _mask_notes(readings) + _empty_notes(empty, len(pairs))
    return PrepareReport(
        dataset,
        out,
        len(pairs),
        {k: len(v) for k, v in final.items()},
        unmatched,
        duplicates,
        notes,
        labels.to_labels(),
        class_counts,
    )


def _check_emptied(emptied: list[str], n_pairs: int, threshold: float | None) -> None:
    """Refuse a threshold that empties most masks the mask rule finds foreground in (e.g. 0/1 masks read
    at 0.5 of full scale): the dataset would train a model to predict nothing."""
    if len(emptied) * 2 > n_pairs:
        raise DataError(
            f"--mask-threshold {threshold} empties {len(emptied)} of {n_pairs} masks that hold foreground by "
            "the mask rule (any non-zero pixel): are they 0/1 masks? Leave --mask-threshold out; nothing was written",
            [f"{name}: empty at threshold {threshold}" for name in emptied[:10]],
        )


def _empty_notes(empty: list[str], n_pairs: int) -> list[str]:
    """A dataset whose masks are mostly empty is said so, loudly: it is rarely what a user meant."""
    if len(empty) * 2 <= n_pairs:
        return []
    shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
    return [f"WARNING: {len(empty)} of {n_pairs} masks are empty (no foreground pixel): {shown}; check the masks"]


def _count_classes(counts: dict[str, int], values: np.ndarray, labels: LabelSet) -> None:
    """Add one case to the count of each foreground class it holds (or of 'background only')."""
    present = [labels.names[labels.values.index(int(v))] for v in np.unique(values) if v != 0]
    for name in present or ["background only"]:
        counts[name] = counts.get(name, 0) + 1


def write_dataset_json(folder: Path, dataset: str, labels: LabelSet, n_pairs: int) -> None:
    """The folder's dataset.json (nnU-Net's keys), so every verb knows the classes without being told."""
    content = {
        "name": dataset,
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": labels.to_labels(),
        "numTraining": int(n_pairs),
        "file_ending": OUTPUT_2D_SUFFIX,
    }
    atomic_write_text(folder / "dataset.json", json.dumps(content, indent=2) + "\n")


def _summarise_depth_notes(notes: list[str]) -> list[str]:
    """One line per kind of bit-depth scaling instead of one per image."""
    if len(notes) <= 3:
        return notes
    return [f"{len(notes)} high-bit-depth images were scaled by their bit depth, e.g. {notes[0]}"]


def _identical_images(pairs: list[_Pair]) -> list[list[str]]:
    """Names whose image files hold the same bytes (e.g. BUS 000032 and 000040), by content hash."""
    import hashlib

    groups: dict[str, list[str]] = {}
    for pair in pairs:
        groups.setdefault(hashlib.sha256(pair.image.read_bytes()).hexdigest(), []).append(pair.name)
    return [sorted(names) for names in groups.values() if len(names) > 1]


def _describe_duplicates(
    groups: list[list[str]], masks: dict[str, np.ndarray], split: dict[str, list[str]]
) -> list[str]:
    """One line per group: whether the masks agree (IoU) and which split lists hold the names."""
    lines = []
    for names in groups:
        first = masks[names[0]] > 0
        ious = []
        for other in names[1:]:
            second = masks[other] > 0
            union = np.logical_or(first, second).sum()
            ious.append(1.0 if union == 0 else float(np.logical_and(first, second).sum() / union))
        agreement = (
            "identical masks"
            if all(i == 1.0 for i in ious)
            else ("masks differ, IoU " + ", ".join(f"{i:.2f}" for i in ious))
        )
        stages = sorted({k for k, v in split.items() for n in names if n in v})
        where = f"in split list(s) {stages}" if stages else "in no split list"
        leak = " -- LEAK: the same image in train and test" if {"train", "test"} <= set(stages) else ""
        lines.append(f"{', '.join(names)}: the same image file ({agreement}); {where}{leak}")
    return lines


def _existing_dir(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{what} folder not found: {p}", [f"{p}: not a directory; check the path"])
    return p


def prepare_dataset(
    name: str,
    raw: str | os.PathLike[str],
    out: str | os.PathLike[str],
    split: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    mask_threshold: float | None = None,
    overwrite: bool = False,
    labels: str | None = None,
) -> PrepareReport:
    """Convert the public dataset ``name`` from its download folder ``raw`` into ``out``.

    ``split``: the release's .pkl or a .json; names without data are reported in ``unmatched``.
    Without it a seeded random train/test split is made. ``mask_threshold`` (fraction of full scale)
    replaces the mask rule's "non-zero is lesion" (see :func:`gmseg.data.io.inspect_mask`); ``overwrite``
    lets a complete new dataset replace a non-empty ``out``. ``labels``: None for binary masks, or
    ``"pathology"`` (busi, bus) for 3-class masks (:data:`PATHOLOGY`).
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {sorted(DATASETS)}")
    mask_threshold = check_mask_threshold(mask_threshold)
    labeller = _labeller(key, labels)
    raw_dir = _existing_dir(raw, "raw dataset")
    out_dir = Path(out)
    check_output_folder(out_dir, [raw_dir], overwrite)
    unmatched: list[str] = []
    pairs = DATASETS[key](raw_dir, out_dir.resolve(), unmatched)
    label_set = None
    if labeller is not None:
        labeller(pairs, raw_dir, out_dir.resolve())
        label_set = PATHOLOGY
    return _convert(key, pairs, unmatched, out_dir, split, test_fraction, seed, raw_dir, mask_threshold, label_set)


def _labeller(dataset: str, labels: str | None) -> _Labeller | None:
    """The function that gives each case its class for ``labels`` (None: binary); refuses what does not fit."""
    if labels is None:
        return None
    scheme = LABEL_SCHEMES.get(str(labels).lower())
    if scheme is None:
        raise ConfigError(f"unknown labels {labels!r}; valid: {sorted(LABEL_SCHEMES)} (or none, for binary masks)")
    if dataset not in scheme:
        raise ConfigError(
            f"labels {labels!r} is available for {sorted(scheme)}, not {dataset!r}; leave it out for binary masks"
        )
    return scheme[dataset]


def prepare_folders(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    out: str | os.PathLike[str],
    mask_suffix: str = "",
    split: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    mask_threshold: float | None = None,
    overwrite: bool = False,
    mask_prefix: str = "",
    image_prefix: str = "",
    image_suffix: str = "",
) -> PrepareReport:
    """Convert a user's own image and mask folders, paired by a case key: the stem without its prefix and
    suffix on each side (image stem = image_prefix + KEY + image_suffix, mask stem = mask_prefix + KEY +
    mask_suffix). Output files keep the image's stem.

    Any supported format on either side (e.g. IMD002.jpg with IMD002_lesion.bmp: ``mask_suffix="_lesion"``;
    bus_0001-l.png with mask_0001-l.png: ``image_prefix="bus_", mask_prefix="mask_"``). Images and masks
    may share one folder when the affixes tell them apart. How many pairs matched is said (on stderr)
    before anything is written.
    """
    mask_threshold = check_mask_threshold(mask_threshold)
    image_dir = _existing_dir(images, "images")
    mask_dir = _existing_dir(masks, "masks")
    check_output_folder(Path(out), [image_dir, mask_dir], overwrite)
    same = image_dir.resolve() == mask_dir.resolve()
    image_affix, mask_affix = (image_prefix, image_suffix), (mask_prefix, mask_suffix)
    if same and image_affix == mask_affix:
        raise ConfigError(
            "images and masks are in the same folder: set mask_suffix or mask_prefix (e.g. '_mask') to tell them apart"
        )
    unmatched: list[str] = []

    def key(p: Path, affix: tuple[str, str], other: tuple[str, str], what: str) -> str | None:
        stem = _stem(p)
        found, theirs = _strip(stem, affix), _strip(stem, other)
        if same and theirs is not None and (found is None or len("".join(other)) > len("".join(affix))):
            return None  # the other kind's file, in the shared folder (the more specific affix decides)
        if found is None and not same:
            unmatched.append(f"{p} ({what} file name lacks prefix {affix[0]!r} / suffix {affix[1]!r})")
        return found

    image_files = [p for p in sorted(image_dir.iterdir()) if p.is_file() and is_image_file(p)]
    mask_files = [p for p in sorted(mask_dir.iterdir()) if p.is_file() and is_image_file(p)]
    image_index = _index(image_files, lambda p: key(p, image_affix, mask_affix, "image"), unmatched)
    mask_index = _index(mask_files, lambda p: key(p, mask_affix, image_affix, "mask"), unmatched)
    pairs = _pair(image_index, mask_index, unmatched)
    for pair in pairs:  # the output keeps the image's own name
        pair.name = _stem(pair.image)
    _say_matched(pairs, image_index, mask_index, image_affix, mask_affix)
    return _convert("folders", pairs, unmatched, Path(out), split, test_fraction, seed, image_dir, mask_threshold)


def _strip(stem: str, affix: tuple[str, str]) -> str | None:
    """The key of ``stem`` = prefix + KEY + suffix, or None when the stem does not have that form."""
    prefix, suffix = affix
    if not (stem.startswith(prefix) and stem.endswith(suffix) and len(stem) > len(prefix) + len(suffix)):
        return None
    return stem[len(prefix) : len(stem) - len(suffix)]


def _say_matched(
    pairs: list[_Pair],
    images: dict[str, Path],
    masks: dict[str, Path],
    image_affix: tuple[str, str],
    mask_affix: tuple[str, str],
) -> None:
    """How many pairs matched, before anything is converted; no pair at all is an error with the rule used."""
    import sys

    rule = f"image = {image_affix[0]!r} + KEY + {image_affix[1]!r}, mask = {mask_affix[0]!r} + KEY + {mask_affix[1]!r}"
    if not pairs and images and masks:
        example_image, example_mask = next(iter(images.values())), next(iter(masks.values()))
        raise DataError(
            f"no image/mask pair matched by the rule {rule}; nothing was written",
            [
                f"e.g. image {example_image.name} and mask {example_mask.name}: set --image-prefix/--mask-prefix "
                "and --mask-suffix so that both leave the same KEY"
            ],
        )
    print(
        f"prepare folders: {len(pairs)} image/mask pair(s) matched ({rule}); {len(images) - len(pairs)} image(s) "
        f"and {len(masks) - len(pairs)} mask(s) without a partner",
        file=sys.stderr,
    )
