"""What the classes of a segmentation are, and the two conversions every model and verb shares.

A :class:`LabelSet` names the classes and the value each has in a mask file's label map (background 0).
The default, :data:`BINARY`, is background + foreground: what every dataset, model and metric of this
package uses today. The two conversions live here so that no module invents its own ``> 0.5``:

* :meth:`LabelSet.to_target`: a mask (class values, as :func:`gmseg.data.io.read_mask` returns them, or
  interpolated by a transform) -> the float32 target a model trains on;
* :meth:`LabelSet.to_mask`: a predicted probability -> a mask of class values (threshold).

Reading a mask *file* (which pixel values count as lesion: any non-zero, JPEG at half scale,
``--mask-threshold``) is the mask rule of :func:`gmseg.data.io.inspect_mask`, before any of this.

A dataset's ``dataset.json`` (nnU-Net's convention) names its classes in ``"labels"``;
:meth:`LabelSet.from_dataset_json` reads that. With more than two classes a mask is a label map of class
values, the target is the map of class *indices* (0..K-1, float32, so that transforms treat it like a
binary mask) and a prediction is K per-class probabilities; the binary conventions stay exactly as they
were.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from gmseg.errors import ConfigError

__all__ = ["BINARY", "CLASS_COLOURS", "DEFAULT_THRESHOLD", "LabelSet"]

CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (255, 255, 255),
    (255, 0, 0),
    (0, 0, 255),
    (0, 255, 0),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
)
"""One colour per class index: background black, then corners of the RGB cube. White and red first: the
SD autoencoders keep brightness better than hue, and on BUSI training masks TAESD round-trips a
white/red coding better than a yellow/cyan one (BENCHMARKS.md, "Multi-class"). Palette PNGs and overlays
use them; GMS's colour coding encodes classes with the same colours. Eight classes at most."""

DEFAULT_THRESHOLD = 0.5
"""A probability above this is foreground (the release's and every model folder's default)."""

_Array = TypeVar("_Array")


@dataclass(frozen=True)
class LabelSet:
    """Class names and their values in a mask's label map; ``names[0]`` is the background (value 0)."""

    names: tuple[str, ...] = ("background", "foreground")
    values: tuple[int, ...] = (0, 1)

    def __post_init__(self) -> None:
        names, values = tuple(self.names), tuple(int(v) for v in self.values)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", values)
        problems = []
        if len(names) != len(values):
            problems.append(f"{len(names)} name(s) but {len(values)} value(s)")
        if len(names) < 2:
            problems.append("a label set needs a background and at least one class")
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            problems.append(f"class names must be distinct non-empty strings, got {list(names)}")
        if len(set(values)) != len(values) or any(v < 0 for v in values):
            problems.append(f"class values must be distinct non-negative integers, got {list(values)}")
        if values and values[0] != 0:
            problems.append(f"the first class ({names[0] if names else '?'}) is the background and must be 0")
        if problems:
            raise ConfigError("invalid label set: " + "; ".join(problems))

    # ------------------------------------------------------------------------------------ construction

    @classmethod
    def binary(cls, foreground: str = "foreground") -> LabelSet:
        """Background (0) and one foreground class (1)."""
        return cls(("background", foreground), (0, 1))

    @classmethod
    def from_labels(cls, labels: Mapping[str, Any]) -> LabelSet:
        """From a dataset.json ``"labels"`` dict: ``{"background": 0, "lesion": 1}`` (nnU-Net v2) or
        ``{"0": "background", "1": "lesion"}`` (v1). Classes are ordered by value."""
        if not isinstance(labels, Mapping) or not labels:
            raise ConfigError(f"dataset.json 'labels' must be a non-empty mapping, got {labels!r}")
        pairs: list[tuple[int, str]] = []
        for key, value in labels.items():
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ConfigError(
                    f"dataset.json 'labels' entry {key!r}: {value!r} is not a class value; region labels "
                    "(lists of values) are not supported"
                )
            if isinstance(value, int):  # v2: name -> value
                pairs.append((value, str(key)))
            elif str(key).strip().lstrip("-").isdigit():  # v1: "value" -> name
                pairs.append((int(key), value))
            else:
                raise ConfigError(f"dataset.json 'labels' entry {key!r}: {value!r}: expected name -> integer value")
        pairs.sort()
        return cls(tuple(n for _, n in pairs), tuple(v for v, _ in pairs))

    @classmethod
    def from_dataset_json(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> LabelSet:
        """From a dataset.json file (or its parsed dict): its ``"labels"``; binary when it has none."""
        data = source
        if not isinstance(source, Mapping):
            path = Path(source)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
            if not isinstance(data, Mapping):
                raise ConfigError(f"{path}: expected a JSON object with a 'labels' mapping")
        labels = data.get("labels")
        return BINARY if labels is None else cls.from_labels(labels)

    def to_labels(self) -> dict[str, int]:
        """The dataset.json ``"labels"`` dict (nnU-Net v2: name -> value)."""
        return dict(zip(self.names, self.values))

    # ------------------------------------------------------------------------------------ properties

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

    @property
    def foreground(self) -> tuple[str, ...]:
        """The class names other than the background."""
        return self.names[1:]

    @property
    def colours(self) -> np.ndarray:
        """(K, 3) uint8 display colour of each class index (:data:`CLASS_COLOURS`)."""
        if self.num_classes > len(CLASS_COLOURS):
            raise ConfigError(
                f"{self.num_classes} classes {list(self.names)}: at most {len(CLASS_COLOURS)} are supported"
            )
        return np.asarray(CLASS_COLOURS[: self.num_classes], dtype=np.uint8)

    def check_values(self, found: Any, source: str | os.PathLike[str]) -> None:
        """Refuse a label map holding a value outside the declared classes, naming the file and values."""
        unknown = sorted(set(int(v) for v in np.unique(np.asarray(found))) - set(self.values))
        if unknown:
            declared = ", ".join(f"{n}={v}" for n, v in zip(self.names, self.values))
            raise ConfigError(
                f"{source}: label value(s) {unknown} are not declared classes ({declared}); fix the mask or "
                "the 'labels' of the dataset's dataset.json"
            )

    def _lookup(self) -> np.ndarray:
        """value -> class index table for 8-bit label maps (255 = not a class)."""
        table = np.full(256, 255, dtype=np.uint8)
        table[list(self.values)] = np.arange(self.num_classes, dtype=np.uint8)
        return table

    # ------------------------------------------------------------------------------------ conversions

    def to_target(self, mask: _Array) -> _Array:
        """A mask -> the float32 training target, same shape and kind (numpy array or torch tensor).

        Binary: 1.0 where the mask holds the foreground, else 0.0. A value is foreground above 0.5, so a
        {0, 1} mask maps to itself and a mask interpolated by a user's transform goes to its nearest class
        (exactly 0.5 is background). More classes: the map of class values -> class indices 0..K-1
        (a value that is no class is an error; :meth:`check_values` names the file first).
        """
        if self.is_binary:
            if _is_torch(mask):
                import torch

                return (mask > 0.5).to(torch.float32)
            return (np.asarray(mask) > 0.5).astype(np.float32)
        if _is_torch(mask):
            import torch

            return torch.from_numpy(self.to_target(mask.detach().cpu().numpy())).to(mask.device)
        values = np.rint(np.asarray(mask)).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ConfigError(f"label values must lie in 0..255, found {values.min()}..{values.max()}")
        indices = self._lookup()[values]
        if (indices == 255).any():
            self.check_values(values, "a mask")
        return indices.astype(np.float32)

    def to_mask(self, probability: _Array, threshold: float | None = None) -> _Array:
        """A prediction -> a uint8 mask of class values, same kind.

        Binary: 1 where the foreground ``probability > threshold`` (default :data:`DEFAULT_THRESHOLD`; a
        model folder's own threshold is passed in), else 0; same shape. More classes: ``probability`` holds
        the K class probabilities on axis -3 (``(..., K, H, W)``); each pixel gets its most probable
        class's value (threshold unused); shape ``(..., H, W)``.
        """
        if self.is_binary:
            cut = DEFAULT_THRESHOLD if threshold is None else float(threshold)
            if _is_torch(probability):
                import torch

                return (probability > cut).to(torch.uint8)
            return (np.asarray(probability) > cut).astype(np.uint8)
        if probability.shape[-3] != self.num_classes:
            raise ConfigError(
                f"expected {self.num_classes} class probabilities on axis -3, got shape {tuple(probability.shape)}"
            )
        values = np.asarray(self.values, dtype=np.uint8)
        if _is_torch(probability):
            import torch

            return torch.as_tensor(values, device=probability.device)[probability.argmax(dim=-3)]
        return values[np.asarray(probability).argmax(axis=-3)]


def _is_torch(x: object) -> bool:
    """A torch tensor, told apart without importing torch (modules that need no torch stay light)."""
    return type(x).__module__.split(".")[0] == "torch"


BINARY = LabelSet()
"""Background (0) and foreground (1): the label set of every dataset and model today."""
