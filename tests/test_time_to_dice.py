"""bench/time_to_dice.py: racing two runs' training logs by wall-clock minutes."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import time_to_dice  # noqa: E402
from gmseg.errors import GmsegError  # noqa: E402
from gmseg.training import LOG_COLUMNS  # noqa: E402


def write_log(
    path: Path, seconds: list[float], val_dice: list[float | str], loss_dice: list[float] | None = None
) -> Path:
    """A train_log.csv with the trainer's own columns; seconds, val_dice and (for --retime) loss_dice matter."""
    loss_dice = loss_dice or [0.0] * len(seconds)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "train_log.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for epoch, (sec, dice, term) in enumerate(zip(seconds, val_dice, loss_dice), start=1):
            writer.writerow(
                {
                    "epoch": epoch,
                    "lr": 1e-3,
                    "loss": 1.0,
                    "loss_rec": 1.0,
                    "loss_dice": term,
                    "val_dice": dice,
                    "val_iou": "",
                    "seconds": sec,
                }
            )
    return path


def run_script(*args: str) -> subprocess.CompletedProcess:
    """bench/time_to_dice.py run as a user runs it, its output captured."""
    return subprocess.run(
        [sys.executable, str(BENCH / "time_to_dice.py"), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )


def test_curve_is_cumulative_minutes_and_best_so_far(tmp_path):
    # A cheap first phase (30 s epochs after a 3-minute encode), then slow epochs; validation swings.
    run = write_log(tmp_path / "a", [180, 30, 30, 120, 120], ["", 0.5, 0.4, 0.7, 0.6])
    minutes, best = time_to_dice.race_curve(run)
    assert minutes.tolist() == pytest.approx([3.0, 3.5, 4.0, 6.0, 8.0])
    assert math.isnan(best[0])  # no validation yet: no answer, not 0
    assert best[1:].tolist() == pytest.approx([0.5, 0.5, 0.7, 0.7])  # a worse epoch does not undo the best
    assert time_to_dice.minutes_to_reach(minutes, best, 0.5) == pytest.approx(3.5)
    assert time_to_dice.minutes_to_reach(minutes, best, 0.65) == pytest.approx(6.0)
    assert time_to_dice.minutes_to_reach(minutes, best, 0.8) is None
    assert math.isnan(time_to_dice.best_after(minutes, best, 2.0))  # no epoch finished yet
    assert time_to_dice.best_after(minutes, best, 5.9) == pytest.approx(0.5)
    assert time_to_dice.best_after(minutes, best, 6.0) == pytest.approx(0.7)  # finished exactly at the mark


def test_command_prints_both_tables_and_writes_json(tmp_path):
    fast = write_log(tmp_path / "fast", [60] * 6, [0.5, 0.6, 0.65, 0.66, 0.67, 0.68])
    slow = write_log(tmp_path / "slow", [150] * 3, [0.55, 0.7, 0.72])
    short = write_log(tmp_path / "short", [60] * 2, [0.4, 0.5])  # stopped after 2 minutes
    out = tmp_path / "race.json"
    done = run_script(
        f"latent first={fast}",
        f"full loss={slow / 'train_log.csv'}",
        f"stopped={short}",
        "--thresholds",
        "0.6",
        "0.7",
        "--every",
        "3",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "| >= 0.6 | 2.0 min | 5.0 min | – |" in done.stdout
    assert "| >= 0.7 | – | 5.0 min | – |" in done.stdout
    assert "| 3 min | 0.650 | 0.550 | 0.500 (ended) |" in done.stdout
    assert "| 6 min | 0.680 | 0.700 | 0.500 (ended) |" in done.stdout, "a run that ended exactly at the mark has not"
    result = json.loads(out.read_text())
    assert result["runs"]["full loss"]["best_val_dice"] == pytest.approx(0.72)
    assert result["minutes_to_reach"]["0.7"] == {"latent first": None, "full loss": 5.0, "stopped": None}
    assert list(result["best_after_minutes"]) == ["3", "6"]


def test_a_log_without_validation_is_refused_by_name(tmp_path):
    run = write_log(tmp_path / "noval", [60, 60], ["", ""])
    with pytest.raises(GmsegError, match="val_dice"):
        time_to_dice.race_curve(run)
    done = run_script(f"x={run}")
    assert done.returncode != 0 and str(run) in done.stderr
    bad = run_script(str(run))
    assert bad.returncode == 2 and "LABEL=RUN" in bad.stderr


def test_retime_puts_an_old_log_on_todays_epoch_seconds(tmp_path):
    # Logged on a faster day: cache epoch 180 s, latent-only 30 s, full-loss 120 s. Today: 300 / 50 / 200 s.
    run = write_log(tmp_path / "old", [180, 30, 30, 120, 120], ["", 0.5, 0.6, 0.7, 0.75], [0, 0, 0, 0.4, 0.3])
    minutes, best = time_to_dice.race_curve(run, retime=(300, 50, 200))
    assert minutes.tolist() == pytest.approx([5.0, 50 / 60 + 5, 100 / 60 + 5, 300 / 60 + 5, 500 / 60 + 5])
    assert best[1:].tolist() == pytest.approx([0.5, 0.6, 0.7, 0.75])  # the Dice per epoch is the log's
    result = time_to_dice.race({"old": str(run)}, [0.7], 0, {"old": (300, 50, 200)})
    assert result["minutes_to_reach"]["0.7"]["old"] == pytest.approx(10.0)
    assert result["runs"]["old"]["retimed_seconds"] == [300, 50, 200]
    with pytest.raises(GmsegError, match="not a run label"):
        time_to_dice.race({"old": str(run)}, [0.7], 0, {"new": (1, 1, 1)})
    bad = run_script(f"old={run}", "--retime", "old=300,50")
    assert bad.returncode == 2 and "FIRST,LATENT,FULL" in bad.stderr
