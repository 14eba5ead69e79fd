"""One run across the processes of a launch (``accelerate launch --num_processes N``, torchrun).

Prediction has no gradients to share: each rank takes a strided share of the ordered inputs, rank 0 does
what must happen once (claim the output folder, plan every output, merge the bookkeeping), and the ranks
meet only twice: when rank 0 hands out its plan, and when their reports are gathered at the end.
Launched ranks talk through ``torch.distributed`` as accelerate sets it up (gloo on CPUs, NCCL on GPUs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from .errors import GmsegError

__all__ = ["Launch", "current_launch", "end_launch"]

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch: rank ``rank`` of ``world`` (a single process: 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def share(self, items: Sequence[T], block: int = 1) -> list[T]:
        """This rank's items: the blocks of ``block`` items dealt out in turn (rank r takes blocks r, r + world,
        ...), so each item is taken exactly once, a sorted folder's runs of large or small files spread over
        the ranks, and with ``block`` the batch size every batch is the one a single process would run (the
        same numbers even where a backend's results depend on what shares a batch)."""
        block = max(1, block)
        starts = range(self.rank * block, len(items), self.world * block)
        return [item for start in starts for item in items[start : start + block]]

    def from_main(self, make: Callable[[], T]) -> T:
        """``make()`` run on rank 0 only and its result handed to every rank.

        When it raises, rank 0 raises that error and the other ranks a one-line :class:`GmsegError`
        pointing at it, so no rank waits for a result that never comes.
        """
        if not self.distributed:
            return make()
        box: list[Any] = [None, None]
        if self.is_main:
            try:
                box = [make(), None]
            except BaseException as error:
                box = [None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"]
                torch.distributed.broadcast_object_list(box, src=0)
                raise
        torch.distributed.broadcast_object_list(box, src=0)
        if box[1] is not None:
            raise GmsegError(f"rank {self.rank} stopped: rank 0 of this launch failed ({box[1]}; its message says why)")
        return box[0]

    def gather(self, item: T) -> list[T]:
        """Every rank's ``item``, in rank order, on every rank (also a barrier: all ranks got this far)."""
        if not self.distributed:
            return [item]
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, item)
        return gathered


def launched() -> bool:
    """Whether this process is one of several started by a launcher (torchrun sets ``WORLD_SIZE``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def current_launch(device: str = "auto") -> tuple[Launch, torch.device]:
    """This process's :class:`Launch` and the device it computes on (``device`` as :func:`pick_device` reads
    it; launched on GPUs, 'auto' and 'cuda' mean this rank's own GPU).

    Outside a launch nothing distributed is imported or started.
    """
    from .inference import pick_device

    chosen = pick_device(device)
    if not launched() and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return Launch(), chosen
    from accelerate import PartialState

    state = PartialState(cpu=chosen.type == "cpu")
    if chosen.type == "cuda" and chosen.index is None:
        chosen = state.device
    return Launch(state.process_index, state.num_processes), chosen


def end_launch() -> None:
    """Leave the launch's process group, if this process joined one. A group left for interpreter exit to
    tear down can abort a rank (gloo's threads: "terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
