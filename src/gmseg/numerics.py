"""CPU floating-point modes that change speed, not results.

A trained mapping's arithmetic can produce numbers below float32's smallest normal number (1.2e-38), which x86
CPUs compute with many times slower: one fp32 run's epochs grew several-fold as it trained on an Intel host,
and flushing cured it. Flushing them to zero changes no value a segmentation can see: they join sums of order one, far below those
sums' last bit (figures, and what is not known of where they arise: BENCHMARKS.md, "Time to Dice").

The mode is a per-thread CPU register, and PyTorch's worker threads keep the mode they started with: set
after a process's first torch operations it does not help (``bench/denormals.py``). ``gmseg train`` sets it
before its first torch operation; a script that trains through the Python API after other torch work should
call ``torch.set_flush_denormal(True)`` at its top. Prediction keeps PyTorch's default: flushing measured no
gain there on an AMD host (``bench/denormals.py --predict``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: A float32 subnormal: times 1.0 it stays itself, unless the thread flushes.
_SUBNORMAL = 1e-39


def flushing_denormals() -> bool:
    """Whether the calling thread flushes subnormal results to zero (PyTorch has no getter)."""
    return float(torch.tensor([_SUBNORMAL]).mul_(1.0)[0]) == 0.0


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush subnormal floats to zero inside the block (where the CPU supports it), or keep them with
    ``enabled=False`` whatever the caller's mode; then restore the caller's mode."""
    before = flushing_denormals()
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
