"""The volume study's scripts at tiny size: bench/volumes.sh (split, ceiling, both trainings, tests, predict
benchmark, table) on 6 real hippocampus cases, resumable by its done files; the table script on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED, TAESD, need

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = SHARED / "data" / "msd-hippocampus"


def run_study(out: Path, **env: str) -> subprocess.CompletedProcess:
    variables = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OUT": str(out),
        "SHARED": str(SHARED),
        "SCALE": "tiny",
        "CASES": "6",
        "SIZES": "32",
        "PREDICT_SHAPE": "3 40 48",
        "PREDICT_SIZE": "32",
        **env,
    }
    return subprocess.run(
        ["bash", str(REPO / "bench" / "volumes.sh")],
        cwd=REPO,
        env=variables,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=3000,
    )


@pytest.mark.slow
def test_volume_study_runs_end_to_end_at_tiny_size(tmp_path):
    need(HIPPOCAMPUS)
    need(TAESD)
    out = tmp_path / "study"
    done = run_study(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    split = json.loads((out / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 6 and split["test"] and split["val"]
    for model in ("gms", "unet"):
        assert (out / model / "done").is_file()
        rows = (out / model / "test" / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + len(split["test"])  # one row per test case
    table = json.loads((out / "table.json").read_text())
    assert [m["model"] for m in table["models"]] == ["GMS-TAESD", "U-Net"]
    assert set(table["models"][0]["classes"]) == {"Anterior", "Posterior"}
    assert set(table["unet_minus_gms"]) == {"Anterior", "Posterior"}
    assert set(table["ceiling"]["sizes"]) == {"32"}
    assert {"unet", "gms-taesd"} == set(table["predict"]["models"])
    assert all(m["peak_rss_gib"] > 0 for m in table["predict"]["models"].values())
    text = (out / "table.md").read_text()
    assert "Anterior Dice %" in text and "TAESD ceiling" in text and "peak RSS" in text
    # Resumable: a second run skips every done part.
    again = run_study(out)
    assert again.returncode == 0 and "gms: done" in again.stdout and "unet: done" in again.stdout


def test_table_leaves_out_parts_not_run(tmp_path):
    """Only the U-Net part present: its row, no paired difference, no ceiling or predict lines."""
    test = tmp_path / "unet" / "test"
    test.mkdir(parents=True)
    (test / "metrics.csv").write_text("name,dice_a,hd95_a,mean_dice\nc1,0.5,2.0,0.5\nc2,0.7,nan,0.7\n")
    (test / "timing.json").write_text(json.dumps({"seconds_per_volume": 1.25}))
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "volumes_table.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=True,
    )
    table = json.loads((tmp_path / "table.json").read_text())
    (row,) = table["models"]
    assert row["model"] == "U-Net" and row["cases"] == 2
    assert row["classes"]["a"]["dice"][0] == pytest.approx(0.6)
    assert row["classes"]["a"]["dice"][1] == pytest.approx(0.1)  # SE of (0.5, 0.7): std 0.1414 / sqrt 2
    assert row["classes"]["a"]["hd95_n"] == 1  # the nan HD95 (one mask empty) is left out and counted
    assert "unet_minus_gms" not in table and "ceiling" not in table
    assert "| U-Net | 2 | 60.00 ± 10.00 | 2.00 ± nan | 60.00 ± 10.00 | n/a (None/None) | 1.25 |" in done.stdout
