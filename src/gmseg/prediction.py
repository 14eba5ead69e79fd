"""What 2D prediction (:mod:`gmseg.predict`) and volume prediction (:mod:`gmseg.volume_predict`) share.

The report of a run, training's evaluation transform, reading ahead and writing behind the model (so file
I/O overlaps compute), and the frame of a run across the ranks of a launch (:mod:`gmseg.distributed`):
rank 0 claims the output folder and plans every output, each rank predicts its share, the reports are
gathered and merged, so every rank ends with the launch's report (and its exit status) and rank 0's is
the one printed.
"""

from __future__ import annotations

import functools
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .distributed import Launch

__all__ = ["BackgroundWriter", "PredictionReport", "claim_and_plan", "evaluation_transform", "finish", "read_ahead"]

T = TypeVar("T")


@dataclass
class PredictionReport:
    written: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # complete outputs kept by --continue
    seconds: float = 0.0  # wall time of the whole loop: reading, inference, writing (a launch: its slowest rank)
    notes: list[str] = field(default_factory=list)  # e.g. --gt masks left off an overlay, and why
    printed: bool = True  # False on a launch's ranks > 0: rank 0 prints the launch's summary

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """What the run prints (empty on a launch's ranks > 0, whose rank 0 prints the same report)."""
        if not self.printed:
            return ""
        lines = [f"Wrote {len(self.written)} prediction(s)."]
        if self.skipped:
            lines[0] += f" Kept {len(self.skipped)} complete from an earlier run (--continue)."
        lines += [f"warning: {note}" for note in self.notes]
        if self.failed:
            lines.append(f"{len(self.failed)} input(s) failed:")
            lines += [f"  - {name}: {reason}" for name, reason in self.failed.items()]
        return "\n".join(lines)

    def timing(self, unit: str, device: str, tta: bool) -> dict:
        """What ``timing.json`` of a scored folder records: seconds per ``unit`` (image or volume)."""
        return {
            f"{unit}s": len(self.written),
            "predict_seconds": round(self.seconds, 3),
            f"seconds_per_{unit}": round(self.seconds / max(1, len(self.written)), 4),
            "device": device,
            "tta": tta,
        }

    @classmethod
    def merge(cls, reports: Sequence[PredictionReport], order: Sequence[str]) -> PredictionReport:
        """One report of the ranks' ``reports``, names in input ``order`` (as one process lists them)."""
        rank_of = {name: index for index, name in enumerate(order)}
        merged = cls(seconds=max((r.seconds for r in reports), default=0.0))
        for report in reports:
            merged.written += report.written
            merged.failed.update(report.failed)
            merged.skipped += report.skipped
            merged.notes += report.notes
        merged.written.sort(key=lambda name: rank_of.get(name, len(order)))
        return merged


@functools.lru_cache(maxsize=8)
def evaluation_transform(size: int, intensity: str) -> Callable[..., dict[str, Any]]:
    """The evaluation steps of training (so predictions match validation scores), built once per setting."""
    from .data.transforms import build_transform

    return build_transform(size, intensity=intensity)


# ------------------------------------------------------------------------------------------ overlap


class BackgroundWriter:
    """Runs writes one at a time, in order, on a thread, so encoding and saving overlap the next batch.

    At most ``depth`` writes wait (their arrays stay in memory until written); a write's error is raised in
    the caller at a later :meth:`submit` or at the end of the ``with`` block. Disabled, it writes at once.
    """

    def __init__(self, enabled: bool, depth: int = 8):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gmseg-write") if enabled else None
        self._pending: deque[Future] = deque()
        self._depth = max(1, depth)

    def submit(self, write: Callable[..., object], *args: Any) -> None:
        if self._pool is None:
            write(*args)
            return
        self._pending.append(self._pool.submit(write, *args))
        while len(self._pending) > self._depth or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if self._pool is None:
            return
        try:
            if kind is None:  # finished: every write must have succeeded
                while self._pending:
                    self._pending.popleft().result()
            else:  # already failing: stop queued writes, let a running one end
                for future in self._pending:
                    future.cancel()
        finally:
            self._pool.shutdown(wait=True)


def read_ahead(items: Iterable[T], enabled: bool) -> Iterator[T]:
    """``items`` produced one ahead on a thread while the caller works on the current one (a volume: its
    decompression and parsing release the GIL); an error in producing is raised where the caller reaches it."""
    if not enabled:
        yield from items
        return
    source, end = iter(items), object()
    with ThreadPoolExecutor(1, thread_name_prefix="gmseg-read") as pool:
        upcoming = pool.submit(next, source, end)
        while (item := upcoming.result()) is not end:
            upcoming = pool.submit(next, source, end)
            yield item


# ------------------------------------------------------------------------------------------- launch


def claim_and_plan(launch: Launch, guard: Any, output: Path, plan: Callable[[], T]) -> T:
    """Claim ``output`` and run ``plan()`` (every output checked before the first is written) on rank 0;
    the plan goes to every rank, and ranks > 0 join the claim (:meth:`gmseg.outputs.OutputGuard.join`)."""
    if not launch.distributed:
        guard.claim(output)  # one run per folder, claimed before the folder is checked
        return plan()

    def on_main() -> tuple[str, T]:
        token = uuid.uuid4().hex
        guard.claim(output, launch=token)
        return token, plan()

    token, planned = launch.from_main(on_main)
    if not launch.is_main:
        guard.join(output, token, launch.rank)
    return planned


def finish(launch: Launch, output: Path, report: PredictionReport, order: Sequence[str]) -> PredictionReport:
    """The launch's report from every rank's (on every rank, so each exits non-zero when any input failed);
    once all ranks are done writing, rank 0 merges their manifest parts into ``output``'s manifest."""
    if not launch.distributed:
        return report
    from .outputs import merge_manifest_parts

    merged = PredictionReport.merge(launch.gather(report), order)
    if launch.is_main:
        merge_manifest_parts(output)
    merged.printed = launch.is_main
    return merged
