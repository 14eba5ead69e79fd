"""Dataset layouts read in place: the prepared 2D folder, the MSD task folder, the nnU-Net v2 raw dataset.

:func:`open_layout` detects which one a folder is. A new layout is one module here plus one line in
:data:`LAYOUTS` (tried in order: the first whose ``detect`` accepts the folder reads it).
"""

from __future__ import annotations

import os
from pathlib import Path

from gmseg.data.layouts.base import Case, Layout
from gmseg.data.layouts.msd import MSDLayout
from gmseg.data.layouts.nnunet import NnUNetLayout
from gmseg.data.layouts.prepared import PreparedLayout
from gmseg.errors import GmsegError

__all__ = ["LAYOUTS", "Case", "Layout", "MSDLayout", "NnUNetLayout", "PreparedLayout", "open_layout"]

LAYOUTS: tuple[type[Layout], ...] = (
    NnUNetLayout,
    MSDLayout,
    PreparedLayout,
)
"""Every layout, in the order they are tried (the most specific dataset.json first)."""


def open_layout(root: str | os.PathLike[str]) -> Layout:
    """The layout of the dataset folder ``root``, read in place; a GmsegError naming the folder otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise GmsegError(f"dataset folder not found: {root} (expected a dataset folder)")
    for layout in LAYOUTS:
        if layout.detect(root):
            return layout(root)
    raise GmsegError(
        f"{root} is no dataset gmseg can read: expected a prepared folder (images/, masks/), an MSD task "
        "(dataset.json with a 'training' list) or an nnU-Net v2 raw dataset (imagesTr/, labelsTr/, dataset.json "
        "with 'channel_names' and 'file_ending')"
    )
