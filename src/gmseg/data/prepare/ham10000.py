"""HAM10000 / ISIC 2018 task 1: ISIC_<id>.jpg with ISIC_<id>_segmentation.png."""

from __future__ import annotations

import re
from pathlib import Path

from gmseg.data.prepare.engine import (
    Layout,
    _index,
    _layout_error,
    _Pair,
    _pair,
    _stem,
    _walk_files,
)

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


LAYOUT = Layout("ham10000", "lesion", _collect_ham10000, {})
