"""bench/first_stage_ceiling.py: the first stage's own reconstruction of true masks, scored like predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import KVASIR5, need

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "first_stage_ceiling.py"


def test_taesd_reconstructs_real_masks_almost_exactly(taesd_dir, tmp_path):
    data = need(KVASIR5)
    names = sorted(p.stem for p in (data / "masks").iterdir())
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:2], "test": names[2:]}))
    out = tmp_path / "ceiling"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--vae",
            str(taesd_dir),
            "--data",
            str(data),
            "--split",
            str(split),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "decode(encode(mask))" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["n_images"] == len(names) - 2  # only the test stage
    # A real autoencoder keeps a mask's shape (TAESD on the 130 BUSI test masks: 0.977); a broken
    # encode/decode convention (e.g. masks not mapped to [-1, 1]) would not come close.
    assert summary["metrics"]["dice"]["mean"] > 0.9
    assert sorted(p.stem for p in (out / "predictions").glob("*.png")) == names[2:]


def test_without_a_split_every_case_is_scored_and_recorded_as_all(taesd_dir, tmp_path):
    data = need(KVASIR5)
    out = tmp_path / "ceiling"
    cmd = [sys.executable, str(SCRIPT), "--vae", str(taesd_dir), "--data", str(data), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr
    ceiling = json.loads((out / "ceiling.json").read_text())
    assert ceiling["n"] == len(list((data / "masks").iterdir()))
    assert ceiling["stage"] == "all"
