"""Training on volumes, slice by slice: the cases of a layout (MSD task, nnU-Net raw dataset) as 2D items.

:class:`VolumeSliceDataset` gives exactly the items of :class:`~gmseg.data.dataset.SegmentationDataset`
(name, image, mask target, original size), so the trainer, its validation and the cached-latent variant
work on slices unchanged. Each case is read once, normalised by the run's
:class:`~gmseg.data.normalization.VolumeInput`, sliced along its axis (:func:`gmseg.data.slicing.slice_axis`)
and only the planned slices are kept (:func:`gmseg.data.slicing.plan_slices`: every slice with
foreground, a controlled share of empty ones), as float32 pixels 0..255 repeated to 3 channels on read.
A 2D file (an nnU-Net dataset of PNGs: a volume of depth 1) is one slice read as 2D prediction reads it
(:func:`case_pixels`), so a model is trained on the pixels ``gmseg predict`` and ``gmseg test`` give it.
Names are ``CASE_sNNN``; a split is by case, so no case's slices are in two sets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gmseg.data.dataset import SegmentationDataset
from gmseg.data.normalization import VolumeInput, fit_volume_input
from gmseg.data.readers import Volume, read_image
from gmseg.data.slicing import plan_slices, slice_axis, take_slice
from gmseg.errors import ConfigError

__all__ = ["VolumeSliceDataset", "case_pixels", "fit_layout_input", "is_volume_layout"]


def is_volume_layout(root: str) -> bool:
    """Whether the dataset at ``root`` is read through :class:`VolumeSliceDataset`: any layout but the
    prepared 2D folder (``images/`` + ``masks/``), whose path stays exactly as it always was."""
    return open_volume_layout(root) is not None


def open_volume_layout(root: str | os.PathLike) -> Any:
    """The layout at ``root`` when it is read as volumes (see :func:`is_volume_layout`), else None; a
    layout with bad files raises its own error naming them."""
    from gmseg.data.layouts import PreparedLayout, open_layout
    from gmseg.errors import DataError, GmsegError

    try:
        layout = open_layout(root)
    except DataError:  # a layout with bad files: its own error names them
        raise
    except GmsegError:  # no layout at all: the 2D path's own checks say what is missing
        return None
    return None if isinstance(layout, PreparedLayout) else layout


def fit_layout_input(layout: Any, names: Sequence[str], seed: int, axis: int | None) -> VolumeInput:
    """The run's :class:`VolumeInput` from its training cases ``names`` (CT statistics need their voxels;
    other modalities read none)."""

    def pairs():
        for name in names:
            image, label = layout.load_case(layout.case(name))
            yield image.array, label.array

    return fit_volume_input(layout.modality, pairs(), is_3d=layout.is_3d, seed=seed, slice_axis=axis)


def case_pixels(image: Volume, axis: int, record: VolumeInput) -> list[np.ndarray]:
    """A case's slices as the model's pixels: a true volume normalised by ``record``, one float32 slice
    per index along ``axis``; a 2D file (depth 1) as the 2D prediction path reads it, uint8 RGB from
    :func:`gmseg.data.readers.read_image` (16-bit data scaled by its declared bit depth, palettes as
    colours, alpha dropped), so training and ``gmseg predict`` / ``gmseg test`` see the same pixels."""
    if not image.is_3d:
        return [read_image(image.path)]
    statistics = record.statistics(image.array)
    return [record.pixels(take_slice(image.array, axis, i), statistics) for i in range(image.array.shape[axis])]


class VolumeSliceDataset(SegmentationDataset):
    """The planned slices of the cases ``names`` of ``layout`` (a :class:`gmseg.data.layouts.Layout`)."""

    def __init__(
        self,
        layout: Any,
        names: Sequence[str],
        record: VolumeInput,
        transform: Callable[..., dict[str, Any]] | None = None,
        empty_fraction: float = 0.25,
        seed: int = 0,
        augmentation_seed: int | None = None,
    ):
        if record is None:
            raise ConfigError("a volume dataset needs the run's VolumeInput (how voxels become pixels)")
        self.root = layout.root
        self.labels = layout.labels
        self.augmentation_seed = augmentation_seed
        self.epoch = 0
        self.transform = transform
        self.mask_threshold = None
        self.with_masks = True
        self._seeded_pid = None
        self.record = record
        pixels: dict[str, list[np.ndarray]] = {}
        targets: dict[str, list[np.ndarray]] = {}
        counts: dict[str, np.ndarray] = {}
        sources: dict[str, Any] = {}
        for name in names:
            case = layout.case(name)
            image, label = layout.load_case(case)
            axis = slice_axis(image.geometry.spacing, record.slice_axis) if image.is_3d else 0
            pixels[name] = case_pixels(image, axis, record)
            targets[name] = [
                np.ascontiguousarray(take_slice(label.array, axis, i)) for i in range(label.array.shape[axis])
            ]
            other = tuple(a for a in range(label.array.ndim) if a != axis)
            counts[name] = np.count_nonzero(label.array, axis=other)
            sources[name] = (case.images[0], case.label, axis)
        self.slices = plan_slices(counts, empty_fraction, seed)
        self.names = [ref.name for ref in self.slices]
        self._items = [(pixels[ref.case][ref.index], targets[ref.case][ref.index]) for ref in self.slices]
        self._images = [f"{sources[r.case][0]} (slice {r.index} along axis {sources[r.case][2]})" for r in self.slices]
        self._masks = [f"{sources[r.case][1]} (slice {r.index} along axis {sources[r.case][2]})" for r in self.slices]

    def _pair(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The slice's 0..255 pixels (a volume's float32 channel repeated to three; a 2D file's uint8 RGB)
        and its label values."""
        image, label = self._items[index]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        label = (label != 0) if self.labels.is_binary else label  # values were checked against the dataset
        return image, np.asarray(label).astype(np.uint8)
