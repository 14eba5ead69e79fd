"""Kvasir-Instrument: images/<id>.jpg with masks/<id>.png, sibling folders anywhere."""

from __future__ import annotations

from pathlib import Path

from gmseg.data.prepare.engine import (
    Layout,
    _index,
    _layout_error,
    _Pair,
    _pair,
    _stem,
    _walk_dirs,
    _walk_files,
)


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


LAYOUT = Layout("kvasir-instrument", "instrument", _collect_kvasir_instrument, {})
