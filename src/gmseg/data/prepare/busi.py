"""BUSI (Kaggle's Dataset_BUSI_with_GT, or the GMS release's images/ + masks/); pathology from the class folder."""

from __future__ import annotations

import re
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
    _value_of,
    _walk_files,
)

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


def _busi_pathology(pairs: list[_Pair], raw: Path, exclude: Path | None) -> None:
    """BUSI's pathology is its class folder, kept in every name (``benign_12``, ``malignant_3``)."""
    for pair in pairs:
        pair.value = _value_of(pair.name.split("_")[0])


LAYOUT = Layout("busi", "lesion", _collect_busi, {"pathology": _busi_pathology})
