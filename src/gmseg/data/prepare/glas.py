"""Warwick GlaS: <name>.bmp with <name>_anno.bmp instance labels."""

from __future__ import annotations

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


def _collect_glas(raw: Path, exclude: Path | None, unmatched: list[str]) -> list[_Pair]:
    """Warwick GlaS: <name>.bmp with <name>_anno.bmp instance labels (0 = background)."""
    files = _walk_files(raw, exclude)
    images = _index(files, lambda p: None if _stem(p).lower().endswith("_anno") else _stem(p), unmatched)
    masks = _index(files, lambda p: _stem(p)[:-5] if _stem(p).lower().endswith("_anno") else None, unmatched)
    if not masks:
        raise _layout_error("GlaS", raw, "files <name>.bmp with annotations <name>_anno.bmp (e.g. train_1_anno.bmp)")
    return _pair(images, masks, unmatched)


LAYOUT = Layout("glas", "gland", _collect_glas, {})
