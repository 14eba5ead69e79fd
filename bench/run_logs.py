"""What the study tables read from a run folder's train_log.csv; kept free of torch so that tables stay quick."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml


def log_rows(run: Path) -> list[dict] | None:
    """The epochs of the run's train_log.csv, one dict each; None before it exists."""
    log = run / "train_log.csv"
    if not log.is_file():
        return None
    with log.open() as handle:
        return list(csv.DictReader(handle))


def log_facts(run: Path) -> tuple[float | None, float | None]:
    """(best validation Dice, training minutes) from the run's train_log.csv; (None, None) before it exists."""
    rows = log_rows(run)
    if rows is None:
        return None, None
    return max(float(r["val_dice"]) for r in rows), sum(float(r["seconds"]) for r in rows) / 60


def epochs_trained(run: Path) -> tuple[int | None, int | None]:
    """(epochs in train_log.csv, epochs its config.yaml schedules): a run scored before its schedule ended
    must say so beside its figures."""
    rows, config = log_rows(run), run / "config.yaml"
    if rows is None or not config.is_file():
        return None, None
    return len(rows), int(yaml.safe_load(config.read_text())["train"]["epochs"])
