"""The per-epoch log, ``train_log.csv``."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text

LOG_COLUMNS = ["epoch", "lr", "loss", "loss_rec", "loss_dice", "val_dice", "val_iou", "seconds"]


def _complete(row: dict[str, Any]) -> bool:
    """A row written whole: every column present (a kill mid-append leaves a short last line) and an epoch."""
    if any(row.get(key) is None for key in LOG_COLUMNS):
        return False
    try:
        int(row["epoch"])
    except ValueError:
        return False
    return True


class EpochLog:
    """``train_log.csv``, one row per epoch, flushed at once so a crash keeps every finished epoch.

    On resume the rows of epochs the checkpoint does not contain (and a row a kill cut short) are dropped
    by rewriting the file atomically, never in place; each new epoch is then one appended line.
    """

    def __init__(self, path: Path, keep_epochs: int):
        self.path = path
        rows = []
        if path.is_file():  # on resume, drop rows of epochs that the checkpoint does not contain
            with path.open(newline="", encoding="utf-8", errors="replace") as handle:
                rows = [r for r in csv.DictReader(handle) if _complete(r) and int(r["epoch"]) <= keep_epochs]
        text = io.StringIO()
        writer = csv.DictWriter(text, LOG_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, text.getvalue())

    def append(self, row: dict[str, Any]) -> None:
        """One line in one ``write`` call on an O_APPEND handle: a kill leaves at most a short last line."""
        text = io.StringIO()
        csv.DictWriter(text, LOG_COLUMNS, lineterminator="\r\n").writerow({k: row.get(k, "") for k in LOG_COLUMNS})
        handle = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(handle, text.getvalue().encode("utf-8"))
        finally:
            os.close(handle)
