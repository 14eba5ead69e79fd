"""The prepared 2D folder gmseg writes (``gmseg prepare``): images/NAME.ext, masks/NAME.ext, split.json,
dataset.json with ``"labels"``. One case per image."""

from __future__ import annotations

from pathlib import Path

from gmseg.data.io import index_folder
from gmseg.data.layouts.base import Case, Layout, labels_of, read_dataset_json
from gmseg.data.splits import load_split
from gmseg.labels import BINARY

__all__ = ["PreparedLayout"]


class PreparedLayout(Layout):
    """root/images/NAME.<ext> with root/masks/NAME.<ext>; binary unless dataset.json declares labels."""

    name = "prepared"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "images").is_dir()

    def __init__(self, root: Path):
        self.root = Path(root)
        path = self.root / "dataset.json"
        data = read_dataset_json(path) if path.is_file() else {}
        self.labels = labels_of(data, path) if "labels" in data else BINARY
        channels = data.get("channel_names")
        # prepare writes R, G, B: the 2D images are colour pictures, whatever their source.
        one = isinstance(channels, dict) and len(channels) == 1
        self.modality = str(next(iter(channels.values()))) if one else "rgb"
        self.is_3d = False

    def _all_cases(self) -> list[Case]:
        images = index_folder(self.root / "images")
        masks = index_folder(self.root / "masks") if (self.root / "masks").is_dir() else {}
        return [Case(name, (images[name],), masks.get(name)) for name in sorted(images)]

    def saved_split(self) -> dict[str, list[str]] | None:
        path = self.root / "split.json"
        return load_split(path) if path.is_file() else None
