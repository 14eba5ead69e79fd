"""What the study tables read from a run folder's train_log.csv; kept free of torch so that tables stay quick."""

from __future__ import annotations

import csv
from pathlib import Path


def log_facts(run: Path) -> tuple[float | None, float | None]:
    """(best validation Dice, training minutes) from the run's train_log.csv; (None, None) before it exists."""
    log = run / "train_log.csv"
    if not log.is_file():
        return None, None
    with log.open() as handle:
        rows = list(csv.DictReader(handle))
    return max(float(r["val_dice"]) for r in rows), sum(float(r["seconds"]) for r in rows) / 60


def epochs_trained(run: Path) -> tuple[int | None, int | None]:
    """(epochs in train_log.csv, epochs its config.yaml schedules): a run scored before its schedule ended
    must say so beside its figures."""
    import yaml

    log, config = run / "train_log.csv", run / "config.yaml"
    if not log.is_file() or not config.is_file():
        return None, None
    with log.open() as handle:
        done = len(list(csv.DictReader(handle)))
    return done, int(yaml.safe_load(config.read_text())["train"]["epochs"])
