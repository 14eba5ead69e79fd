"""The images an int8 export sets its ranges on: training images, prepared exactly as prediction prepares them.

Ranges set on other inputs than the graph will see are wrong ranges, so a calibration image goes through the
model's own input path: a 2D image is read, resized and standardised as ``gmseg predict`` does; a volume's
slice is taken along the model's slice axis, normalised with the model's recorded
:class:`~gmseg.data.normalization.VolumeInput` and resized as volume prediction does. Only training images
calibrate: the training stage of ``split`` (else the dataset's own split file), or every image of a folder
without one (recorded as such in the export's config.json, so a reader can see what it was given).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, GmsegError
from .inference import InferenceSpec

#: calibration images by default: NNCF's default subset size; fewer when the set has fewer.
CALIBRATION_SIZE = 300


@dataclass
class CalibrationSet:
    """The images an int8 export is calibrated on, as the model's inputs, and what config.json records of them."""

    source: str
    stage: str | None  # the split's stage the names come from; None: every image of a folder
    seed: int
    names: list[str]  # image names; a volume's slice is "CASE@AXIS:INDEX"
    images: list[np.ndarray] = field(repr=False)  # (1, 3, S, S) float32 in [-1, 1], one per name

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "stage": self.stage, "seed": self.seed, "count": len(self.names),
                "names": self.names}  # fmt: skip


def calibration_files(source: Path, split: str | os.PathLike | None = None) -> tuple[str | None, dict[str, Path]]:
    """(stage, name -> image file) of a 2D calibration source: a prepared dataset's training split (of
    ``split``, else its split.json; every image of its ``images/`` without either), or every image of a
    plain folder."""
    from .data.io import index_folder
    from .testing import stage_names

    if not (source / "images").is_dir():
        if split is not None:
            raise GmsegError(f"--split is for a dataset folder; {source} is a plain folder of images")
        return None, index_folder(source)
    files = index_folder(source / "images")
    has_split = split is not None or (source / "split.json").is_file()
    names = stage_names(source, split, "train") if has_split else None
    if names is None:
        return "all", files
    missing = [name for name in names if name not in files]
    if missing:
        raise DataError(f"the split's training images are missing from {source}/images: {missing[:3]}")
    return "train", {name: files[name] for name in names}


def planar_calibration(
    source: Path, spec: InferenceSpec, size: int, seed: int, split: str | os.PathLike | None
) -> CalibrationSet:
    """Up to ``size`` 2D training images of ``source`` (a seeded sample), prepared as ``gmseg predict`` does."""
    from .data.io import read_image
    from .predict import image_to_tensor

    stage, files = calibration_files(source, split)
    if not files:
        where = f"the {stage} split of {source}" if stage == "train" else str(source)
        raise DataError(
            f"--calibration: {where} holds no images; int8 needs training images to calibrate on "
            "(a prepared dataset, or a folder of PNG/JPEG images)"
        )
    names = sorted(files)
    if len(names) > size:
        names = sorted(random.Random(seed).sample(names, size))
    images = [image_to_tensor(read_image(files[name]), spec.image_size, spec.intensity)[None].numpy() for name in names]
    return CalibrationSet(str(source), stage, seed, names, images)


def training_cases(layout: Any, split: str | os.PathLike | None) -> tuple[str, list[Any]]:
    """(stage, cases) of a volume dataset that may calibrate: the training stage of ``split`` (else of the
    dataset's own split file), or every labelled case of a dataset that ships none."""
    from .volume_testing import test_cases

    if split is None and layout.saved_split() is None:
        return "all", layout.cases()
    return "train", test_cases(layout, split, "train")


def volume_calibration(
    source: Path,
    layout: Any,
    spec: InferenceSpec,
    size: int,
    seed: int,
    split: str | os.PathLike | None,
    record: Any,
) -> CalibrationSet:
    """Up to ``size`` slices of a volume dataset's training cases: a seeded sample of cases, then the same
    number of seeded slices from each (so one long case does not fill the set), each slice prepared as
    volume prediction prepares it (``layout``: the dataset at ``source``; ``record``: the model's
    :class:`~gmseg.data.normalization.VolumeInput`)."""
    from .data.normalization import VolumeInput
    from .data.readers import read_volume
    from .data.slicing import slice_axis, take_slice
    from .volume_predict import single_channel, slices_to_batch

    if not layout.is_3d:
        raise GmsegError(
            f"--calibration {source} is a 2D nnU-Net dataset: pass its imagesTr folder (a folder of training "
            "images) or the dataset prepared with gmseg prepare"
        )
    stage, cases = training_cases(layout, split)
    if not cases:
        raise DataError(f"--calibration: the {stage} cases of {source} are none; int8 needs training cases")
    record = VolumeInput() if record is None else record
    rng = random.Random(seed)
    cases = sorted(cases, key=lambda c: c.name)
    rng.shuffle(cases)
    per_case = max(1, math.ceil(size / len(cases)))
    names: list[str] = []
    images: list[np.ndarray] = []
    for case in cases:
        if len(names) >= size:
            break
        volume = read_volume(case.images[0])
        array = single_channel(volume)
        axis = slice_axis(volume.geometry.spacing, record.slice_axis)
        picks = sorted(rng.sample(range(array.shape[axis]), min(per_case, array.shape[axis], size - len(names))))
        raw = np.stack([take_slice(array, axis, index) for index in picks])
        batch = slices_to_batch(record.pixels(raw, record.statistics(array)), spec.image_size, spec.intensity)
        names += [f"{case.name}@{axis}:{index}" for index in picks]
        images += [piece[None].numpy() for piece in batch]
    return CalibrationSet(str(source), stage, seed, names, images)


def calibration_set(
    source: str | os.PathLike,
    spec: InferenceSpec,
    size: int = CALIBRATION_SIZE,
    seed: int = 0,
    split: str | os.PathLike | None = None,
    volume_input: Any = None,
) -> CalibrationSet:
    """Up to ``size`` training images of ``source`` as the model of ``spec`` sees them: a prepared 2D dataset
    or folder of images, or an MSD / nnU-Net dataset of volumes (slices; ``volume_input`` is the model's
    recorded normalisation). ``split`` names the training stage (default: the dataset's own split file)."""
    from .data.volume_dataset import open_volume_layout

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise GmsegError(f"--calibration-size must be a positive number of images, got {size!r}")
    path = Path(source)
    if not path.is_dir():
        raise DataError(
            f"--calibration {source} is not a folder; pass a prepared dataset (its training split is used), "
            "an MSD / nnU-Net dataset of volumes, or a folder of training images"
        )
    if split is not None and not Path(split).is_file():
        raise GmsegError(f"--split {split} does not exist; pass the run's split.json")
    layout = None if (path / "images").is_dir() else open_volume_layout(path)
    if layout is None:
        return planar_calibration(path, spec, size, seed, split)
    return volume_calibration(path, layout, spec, size, seed, split, volume_input)


__all__ = ["CALIBRATION_SIZE", "CalibrationSet", "calibration_set"]
