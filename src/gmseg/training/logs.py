"""The per-epoch log, ``train_log.csv``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

LOG_COLUMNS = ["epoch", "lr", "loss", "loss_rec", "loss_dice", "val_dice", "val_iou", "seconds"]


class EpochLog:
    """``train_log.csv``, one row per epoch, flushed at once so a crash keeps every finished epoch."""

    def __init__(self, path: Path, keep_epochs: int):
        self.path = path
        rows = []
        if path.is_file():  # on resume, drop rows of epochs that the checkpoint does not contain
            with path.open() as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) <= keep_epochs]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS).writerow({k: row.get(k, "") for k in LOG_COLUMNS})
