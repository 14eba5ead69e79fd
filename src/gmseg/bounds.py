"""The bounds every verb shares on the numbers a user types, checked by one function each.

A value that one verb refuses and another accepts (a mask threshold of 1 refused by ``train`` but taken by
``prepare``, which then empties every mask) is a silent wrong result; so ``prepare``, ``train``,
``evaluate``, ``test`` and ``generalize`` check through these functions, before any work is done.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

__all__ = ["MAX_IMAGE_SIZE", "check_image_size", "check_mask_threshold"]

#: The largest square side a model or a fixed-size evaluation may use: 4096^2 pixels is ~16 M per mask,
#: far above any medical segmentation input; a typo such as 100000 would otherwise end in a MemoryError.
MAX_IMAGE_SIZE = 4096


def check_mask_threshold(value: Any, what: str = "--mask-threshold") -> float | None:
    """A mask threshold strictly inside (0, 1), or ``None`` (the mask rule: any non-zero pixel is foreground).

    Foreground is ``value > threshold x full scale``: 0 is the mask rule spelled differently, 1 or more
    empties every mask, and nan compares false everywhere.
    """
    if value is None:
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0.0 < value < 1.0):
        raise ConfigError(
            f"{what} must be a number strictly between 0 and 1 (foreground = value > it x full scale, e.g. "
            f"0.5), got {value!r}; leave it out for the mask rule (any non-zero pixel is foreground)"
        )
    return float(value)


def check_image_size(value: Any, what: str, multiple: int = 1, minimum: int = 1) -> int:
    """A square side: an integer (not a bool) in [minimum, MAX_IMAGE_SIZE], a multiple of ``multiple``."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not (ok and minimum <= value <= MAX_IMAGE_SIZE and value % multiple == 0):
        rule = f"a multiple of {multiple} " if multiple > 1 else ""
        raise ConfigError(f"{what} must be an integer {rule}in [{minimum}, {MAX_IMAGE_SIZE}], got {value!r}")
    return value
