"""Intensities of volumes, normalised per modality as nnU-Net does, then mapped onto the model's input.

A model folder records a :class:`VolumeInput` (its ``config.json`` key ``volume``), so prediction applies
exactly what training did:

* **CT** (``scheme="ct"``): Hounsfield units mean the same in every scan, so the statistics are the
  dataset's: the intensities of foreground voxels of the training cases give the 0.5 and 99.5 percentiles
  (clip) and the mean and standard deviation (z-score), computed once (:func:`fit_volume_input`).
* **Every other modality** (``scheme="zscore"``: MRI, T2, ...): intensities have no fixed scale, so each
  volume is z-scored with its own mean and standard deviation.
* **2D images in a volume layout** (``scheme="rgb"``): no normalisation here. A 2D file (a volume of
  depth 1) is read by the 2D reader in training as in prediction
  (:func:`gmseg.data.volume_dataset.case_pixels`: 16-bit data scaled by its declared bit depth, palettes
  as colours), so both see the same pixels; an array given this scheme is clipped to 0..255.

The autoencoder takes 3-channel images in [-1, 1]. A z-score is clipped to [-z_range, z_range] (3 by
default: 99.7% of a normal distribution) and mapped linearly onto 0..255 (:func:`to_pixels`), the range the
2D pipeline reads from image files; the pipeline's resize, augmentation and ``x / 127.5 - 1`` then apply
unchanged, and the one channel is repeated to three.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from gmseg.errors import ConfigError

__all__ = ["SCHEMES", "VolumeInput", "fit_volume_input", "scheme_for", "to_pixels"]

SCHEMES = ("ct", "zscore", "rgb")
#: voxels sampled per training case for the CT statistics (nnU-Net's fingerprint samples 10,000)
CT_SAMPLES_PER_CASE = 10_000


def scheme_for(modality: str, is_3d: bool = True) -> str:
    """``ct`` for a CT dataset (dataset.json's first channel name), ``rgb`` for 2D files (read by the 2D
    reader, not normalised here), else ``zscore``."""
    if not is_3d:
        return "rgb"
    return "ct" if modality.strip().upper() == "CT" else "zscore"


@dataclass(frozen=True)
class VolumeInput:
    """How a volume's voxels become the model's input; recorded in the model folder, applied at prediction."""

    scheme: str = "zscore"
    modality: str = ""
    clip: tuple[float, float] | None = None  # CT: the dataset's foreground 0.5 / 99.5 percentiles
    mean: float | None = None  # CT: the dataset's foreground mean and standard deviation
    std: float | None = None
    z_range: float = 3.0
    slice_axis: int | None = None  # None: the axis of largest spacing (gmseg.data.slicing.slice_axis)

    def __post_init__(self) -> None:
        problems = []
        if self.scheme not in SCHEMES:
            problems.append(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.scheme == "ct" and (self.clip is None or self.mean is None or not self.std):
            problems.append("scheme 'ct' needs clip, mean and a non-zero std (the training cases' statistics)")
        if not (isinstance(self.z_range, (int, float)) and self.z_range > 0):
            problems.append(f"z_range must be positive, got {self.z_range!r}")
        if self.slice_axis not in (None, 0, 1, 2):
            problems.append(f"slice_axis must be 0, 1, 2 or null, got {self.slice_axis!r}")
        if problems:
            raise ConfigError("invalid volume input record: " + "; ".join(problems))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["clip"] = None if self.clip is None else [float(v) for v in self.clip]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> VolumeInput:
        if not isinstance(data, dict):
            raise ConfigError(f"a model's 'volume' record must be a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown keys {unknown} in a model's 'volume' record; valid: {sorted(known)}")
        values = dict(data)
        if values.get("clip") is not None:
            values["clip"] = tuple(float(v) for v in values["clip"])
        return cls(**values)

    def statistics(self, volume: np.ndarray) -> tuple[float, float]:
        """(mean, std) the z-score uses: the dataset's for CT, the volume's own otherwise (accumulated one
        slab at a time in float64, so a CT-sized volume is not copied whole to compute them)."""
        if self.scheme == "ct":
            return float(self.mean), float(self.std)  # type: ignore[arg-type]
        if self.scheme == "rgb":
            return 0.0, 1.0
        x = np.asarray(volume)
        total, squares, count = 0.0, 0.0, x.size
        for start in range(0, x.shape[0], 16):
            part = x[start : start + 16].astype(np.float64)
            total += float(part.sum())
            squares += float(np.square(part).sum())
        mean = total / max(count, 1)
        return mean, math.sqrt(max(squares / max(count, 1) - mean * mean, 0.0))

    def normalize(self, volume: np.ndarray, statistics: tuple[float, float] | None = None) -> np.ndarray:
        """float32 intensities of the scheme (z-scores; ``rgb``: 0..255) of a (Z, Y, X[, C]) array or part of
        one; ``statistics`` (:meth:`statistics` of the whole volume) when ``volume`` is only some slices."""
        x = np.asarray(volume, dtype=np.float32)
        if self.scheme == "rgb":
            return x
        mean, std = self.statistics(x) if statistics is None else statistics
        if self.scheme == "ct":
            x = np.clip(x, *self.clip)  # type: ignore[misc]
        return (x - np.float32(mean)) / np.float32(max(std, 1e-8))

    def pixels(self, volume: np.ndarray, statistics: tuple[float, float] | None = None) -> np.ndarray:
        """The volume as the 2D pipeline's float32 0..255 pixels: :meth:`normalize` then :func:`to_pixels`."""
        return to_pixels(self.normalize(volume, statistics), self.z_range, self.scheme)


def to_pixels(z: np.ndarray, z_range: float = 3.0, scheme: str = "zscore") -> np.ndarray:
    """z-scores clipped to [-z_range, z_range] and mapped linearly onto float32 0..255 (``rgb``: clipped)."""
    if scheme == "rgb":
        return np.clip(z, 0.0, 255.0).astype(np.float32, copy=False)
    scale = np.float32(127.5 / z_range)
    return ((np.clip(z, -z_range, z_range) + np.float32(z_range)) * scale).astype(np.float32, copy=False)


def fit_volume_input(
    modality: str,
    cases: Iterable[tuple[np.ndarray, np.ndarray]],
    is_3d: bool = True,
    seed: int = 0,
    slice_axis: int | None = None,
) -> VolumeInput:
    """The :class:`VolumeInput` of a training set: for CT, its foreground statistics over ``cases`` (pairs of
    image and label arrays; up to :data:`CT_SAMPLES_PER_CASE` foreground voxels sampled per case, seeded);
    other schemes need no statistics and do not read ``cases``."""
    scheme = scheme_for(modality, is_3d)
    if scheme != "ct":
        return VolumeInput(scheme=scheme, modality=modality, slice_axis=slice_axis)
    rng = np.random.default_rng(seed)
    samples = []
    for image, label in cases:
        voxels = np.asarray(image)[np.asarray(label) > 0].astype(np.float64)
        if voxels.size > CT_SAMPLES_PER_CASE:
            voxels = rng.choice(voxels, CT_SAMPLES_PER_CASE, replace=False)
        samples.append(voxels)
    values = np.concatenate(samples) if samples else np.empty(0)
    if values.size == 0 or not math.isfinite(float(values.std())):
        raise ConfigError(
            "CT normalisation needs foreground voxels in the training cases; their labels are all background"
        )
    lo, hi = np.percentile(values, [0.5, 99.5])
    return VolumeInput(
        scheme="ct",
        modality=modality,
        clip=(float(lo), float(hi)),
        mean=float(values.mean()),
        std=float(values.std()),
        slice_axis=slice_axis,
    )
