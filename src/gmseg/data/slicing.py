"""Volumes as 2D slices: which axis to slice along, and which slices a training epoch sees.

The axis rule is nnU-Net's 2d configuration: a 2D network sees the plane of highest resolution, so a
volume is sliced along the axis of *largest* spacing (the thick axis); when several axes share the largest
spacing (an isotropic volume), the first array axis wins. ``data.slice_axis`` overrides the rule.

A volume has many slices without foreground. Training on all of them teaches the model mostly
background; training on none teaches it never to predict an empty slice, which every prediction on a volume
needs. :func:`plan_slices` keeps every slice with foreground and adds a seeded random share of the empty
ones, so that empty slices are ``empty_fraction`` of the total (or all of them, if fewer exist).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gmseg.errors import ConfigError

__all__ = ["SliceRef", "plan_slices", "slice_axis", "take_slice"]


def slice_axis(spacing: Sequence[float], override: int | None = None) -> int:
    """The array axis (0, 1 or 2 of (Z, Y, X)) to slice along: ``override`` when given, else the axis of
    largest spacing, ties to the first one."""
    if override is not None:
        if isinstance(override, bool) or override not in (0, 1, 2):
            raise ConfigError(
                f"data.slice_axis must be 0, 1, 2 (array axes z, y, x) or null (the rule), got {override!r}"
            )
        return int(override)
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ConfigError(f"a volume's spacing must be 3 positive numbers, got {tuple(spacing)}")
    return values.index(max(values))


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a (Z, Y, X[, C]) array: a view, no copy. The two remaining spatial
    axes stay in array order, so :func:`put_slice` (and a written volume) is the exact inverse."""
    return np.take(volume, index, axis=axis)


def put_slice(volume: np.ndarray, axis: int, index: int, values: np.ndarray) -> None:
    """Write ``values`` into slice ``index`` along ``axis`` of ``volume`` in place (the inverse of take_slice)."""
    where: list[slice | int] = [slice(None)] * volume.ndim
    where[axis] = index
    volume[tuple(where)] = values


@dataclass(frozen=True)
class SliceRef:
    """One training slice: the case it comes from and its index along the slicing axis."""

    case: str
    index: int
    foreground: bool

    @property
    def name(self) -> str:
        """Its name in logs and per-slice validation scores."""
        return f"{self.case}_s{self.index:03d}"


def plan_slices(foreground_per_slice: dict[str, np.ndarray], empty_fraction: float, seed: int) -> list[SliceRef]:
    """The slices of the cases ``{case: voxels of foreground per slice}``: every slice with foreground and a
    seeded share of the empty ones, so that they are ``empty_fraction`` of the result (all of them when
    there are fewer). ``empty_fraction`` 1 keeps every slice; 0 keeps none without foreground."""
    if not 0.0 <= float(empty_fraction) <= 1.0:
        raise ConfigError(f"data.empty_slice_fraction must be in [0, 1], got {empty_fraction!r}")
    full, empty = [], []
    for case in sorted(foreground_per_slice):
        for index, count in enumerate(np.asarray(foreground_per_slice[case])):
            (full if count > 0 else empty).append(SliceRef(case, index, bool(count > 0)))
    if empty_fraction >= 1.0:
        wanted = len(empty)
    else:
        wanted = min(len(empty), round(len(full) * empty_fraction / (1.0 - empty_fraction)))
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(empty), size=wanted, replace=False).tolist()) if wanted else []
    kept = full + [empty[i] for i in chosen]
    return sorted(kept, key=lambda ref: (ref.case, ref.index))
