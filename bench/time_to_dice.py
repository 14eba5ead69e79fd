"""Which schedule reaches a validation Dice first: best-so-far validation Dice against training minutes.

The question behind ``trainer.latent_epochs`` is not which schedule ends higher but which gets to a given
Dice *sooner*: the latent-only phase (cached latents, no decoder in the loop) buys cheap epochs, the full
loss buys the Dice term. Every run's ``train_log.csv`` records each epoch's wall-clock seconds (the first
epoch includes the encoding of cached latents) and its validation Dice, so two runs on the same machine
can be raced without re-running anything:

    python bench/time_to_dice.py "latent first=RUN_A" "full loss from the start=RUN_B" \
        --json time_to_dice.json

``RUN`` is a run folder or its ``train_log.csv``. At every moment a run's answer is its best validation
epoch so far (the checkpoint it would hand over if stopped then), so the curves compared are best-so-far.
Prints two Markdown tables: minutes to first reach each Dice threshold, and best Dice after each time mark.

A run logged on another day (the machine's speed drifts) is put on today's time axis with ``--retime
LABEL=FIRST,LATENT,FULL``: its first epoch, each latent-only epoch (``loss_dice`` 0 in its log) and each
full-loss epoch take those seconds, measured today; its validation Dice per epoch stays its log's.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from gmseg.errors import GmsegError
from gmseg.visualize import read_training_log, training_log_path


def retimed_seconds(log: dict[str, np.ndarray], retime: tuple[float, float, float]) -> np.ndarray:
    """Each epoch's seconds as measured today: (first epoch, latent-only epoch, full-loss epoch); an epoch is
    latent-only when its logged Dice term is 0 (no decoder in the loop)."""
    first, latent, full = retime
    seconds = np.where(np.nan_to_num(log["loss_dice"]) == 0.0, latent, full)
    seconds[0] = first
    return seconds


def race_curve(run: str | Path, retime: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training minutes at the end of each epoch (logged, or ``retime``d), and the best validation Dice up to
    that epoch (nan before any)."""
    path = Path(run)
    log = read_training_log(training_log_path(path))
    for column in ("seconds", "val_dice") + (("loss_dice",) if retime else ()):
        if column not in log or np.isnan(log[column]).all():
            raise GmsegError(f"{path}: train_log.csv has no '{column}' values; it needs a run trained with validation")
    seconds = retimed_seconds(log, retime) if retime else np.nan_to_num(log["seconds"])
    minutes = np.cumsum(seconds) / 60.0
    best = np.fmax.accumulate(np.where(np.isnan(log["val_dice"]), -np.inf, log["val_dice"]))
    return minutes, np.where(np.isinf(best), np.nan, best)


def minutes_to_reach(minutes: np.ndarray, best: np.ndarray, threshold: float) -> float | None:
    """When the run first had a validation Dice >= threshold; None if it never did."""
    reached = np.nan_to_num(best, nan=-1.0) >= threshold
    return float(minutes[np.argmax(reached)]) if reached.any() else None


def best_after(minutes: np.ndarray, best: np.ndarray, mark: float) -> float:
    """Best validation Dice among the epochs finished within ``mark`` minutes (nan if none had)."""
    finished = np.flatnonzero(minutes <= mark + 1e-9)
    return float(best[finished[-1]]) if finished.size else math.nan


def _cell(value: float | None, fmt: str, unit: str = "") -> str:
    return "–" if value is None or math.isnan(value) else format(value, fmt) + unit


def _table(first: str, labels: list[str], rows: list[list[str]]) -> list[str]:
    header = ["| " + " | ".join([first, *labels]) + " |", "|" + "---|" * (len(labels) + 1)]
    return header + ["| " + " | ".join(row) + " |" for row in rows]


def race(
    runs: dict[str, str],
    thresholds: list[float],
    every: float,
    retimes: dict[str, tuple[float, float, float]] | None = None,
) -> dict:
    """Both tables' figures for the labelled runs (``retimes``: label -> today's epoch seconds), as one
    JSON-ready dict."""
    retimes = retimes or {}
    unknown = sorted(set(retimes) - set(runs))
    if unknown:
        raise GmsegError(f"--retime names {', '.join(unknown)}, which is not a run label ({', '.join(runs)})")
    curves = {label: race_curve(path, retimes.get(label)) for label, path in runs.items()}
    longest = max(float(minutes[-1]) for minutes, _ in curves.values())
    marks = [every * k for k in range(1, int(longest // every) + 1)] if every > 0 else []
    return {
        "runs": {
            label: {
                "path": str(runs[label]),
                "minutes": round(float(m[-1]), 2),
                "best_val_dice": float(np.nanmax(b)),
                "epochs": len(m),
                **({"retimed_seconds": list(retimes[label])} if label in retimes else {}),
            }
            for label, (m, b) in curves.items()
        },
        "minutes_to_reach": {
            f"{t:g}": {label: minutes_to_reach(m, b, t) for label, (m, b) in curves.items()} for t in thresholds
        },
        "best_after_minutes": {
            f"{t:g}": {label: best_after(m, b, t) for label, (m, b) in curves.items()} for t in marks
        },
    }


def format_tables(result: dict) -> str:
    """The two Markdown tables of :func:`race`, then one line per run (epochs, minutes, best)."""
    labels = list(result["runs"])
    reach = [
        [f">= {t}", *(_cell(row[lab], ".1f", " min") for lab in labels)]
        for t, row in result["minutes_to_reach"].items()
    ]
    runs = result["runs"]
    after = [  # a run that ended before the mark still answers with its best, marked as ended
        [
            f"{t} min",
            *(_cell(row[lab], ".3f") + (" (ended)" if float(t) > runs[lab]["minutes"] else "") for lab in labels),
        ]
        for t, row in result["best_after_minutes"].items()
    ]
    ends = [
        f"{lab}: {r['epochs']} epochs, {r['minutes']} min, best {r['best_val_dice']:.3f}"
        for lab, r in result["runs"].items()
    ]
    return "\n".join(
        _table("validation Dice reached", labels, reach)
        + [""]
        + _table("best validation Dice after", labels, after)
        + [""]
        + ends
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a label and a run folder or train_log.csv")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.55, 0.6, 0.65, 0.7, 0.72, 0.74])
    parser.add_argument("--every", type=float, default=15.0, help="time marks for the second table, in minutes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--retime",
        action="append",
        default=[],
        metavar="LABEL=FIRST,LATENT,FULL",
        help="put a run on today's time axis: seconds of its first, each latent-only and each full-loss epoch",
    )
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, path = item.rpartition("=")
        if not sep or not label:
            parser.error(f"expected LABEL=RUN, got {item!r}")
        runs[label] = path
    retimes = {}
    for item in args.retime:
        label, sep, values = item.rpartition("=")
        try:
            first, latent, full = (float(v) for v in values.split(","))
        except ValueError:
            parser.error(f"--retime expects LABEL=FIRST,LATENT,FULL (seconds), got {item!r}")
        if not sep or not label or min(first, latent, full) <= 0:
            parser.error(f"--retime expects LABEL=FIRST,LATENT,FULL with positive seconds, got {item!r}")
        retimes[label] = (first, latent, full)
    try:
        result = race(runs, args.thresholds, args.every, retimes)
    except GmsegError as err:
        raise SystemExit(f"error: {err}") from None
    print(format_tables(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
