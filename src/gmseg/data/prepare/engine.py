"""The conversion engine behind every layout of ``gmseg prepare``: pairs → a checked, complete dataset folder.

A layout module (``busi.py``, ``folders.py``, ...) only finds its image/mask pairs (and, for some, each case's
class); this module reads them by the one mask rule, checks sizes and thresholds before writing, writes
``images/``, ``masks/``, ``split.json`` and ``dataset.json`` into a hidden staging folder and swaps it in whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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

PATHOLOGY = LabelSet(("background", "benign", "malignant"), (0, 1, 2))
"""The classes of ``labels="pathology"``: each lesion labelled with its case's diagnosis."""


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


@dataclass(frozen=True)
class Layout:
    """One public dataset's download layout: its name on the command line, its foreground class, the function
    that finds its pairs under the download folder, and the labellers of its optional multi-class schemes."""

    name: str
    foreground: str
    collect: Callable[[Path, Path | None, list[str]], list[_Pair]]
    labellers: dict[str, Callable[[list[_Pair], Path, Path | None], None]] = field(default_factory=dict)


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


def _value_of(pathology: str) -> int:
    """benign -> 1, malignant -> 2 (the class values of :data:`PATHOLOGY`)."""
    return PATHOLOGY.values[PATHOLOGY.names.index(pathology)]


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
    foreground: str = "foreground",
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
    labels = LabelSet.binary(foreground) if labels is None else labels
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
