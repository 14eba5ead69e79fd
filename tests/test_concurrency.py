"""Two processes, one folder (issue 41, part B): real `gmseg` processes started against one output folder.

The first run stops itself (SIGSTOP) the moment its first claim returns, so the second always meets it
mid-run however fast the machine is (polling for the lock raced a predict that took 40 ms); the second must
refuse at once naming the first, and the first must then finish alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gmseg.outputs import LOCK
from gmseg.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals (SIGSTOP/SIGCONT)")

S = 32
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}


# Runs the CLI with OutputGuard.claim wrapped: after the first claim the process stops itself, holding the lock.
PAUSE_AFTER_CLAIM = """
import os, signal, sys
from gmseg import cli, outputs
claim, paused = outputs.OutputGuard.claim, []
def claim_then_stop(self, folder):
    created = claim(self, folder)
    if not paused:
        paused.append(True)
        os.kill(os.getpid(), signal.SIGSTOP)
    return created
outputs.OutputGuard.claim = claim_then_stop
sys.exit(cli.main(sys.argv[1:]))
"""


def gmseg(*args: str, pause_after_claim: bool = False) -> subprocess.Popen:
    command = ["-c", PAUSE_AFTER_CLAIM, *args] if pause_after_claim else ["-m", "gmseg.cli", *args]
    return subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=ENV,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def held(*args: str, folder: Path, timeout: float = 180) -> subprocess.Popen:
    """Start ``gmseg *args`` and return once it has claimed ``folder`` and stopped itself there."""
    process = gmseg(*args, pause_after_claim=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the first run ended without claiming {folder}: {process.communicate()[1][-2000:]}")
        pid, status = os.waitpid(process.pid, os.WNOHANG | os.WUNTRACED)
        if pid and os.WIFSTOPPED(status):
            assert json.loads((folder / LOCK).read_text())["pid"] == process.pid
            return process
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"the first run never claimed {folder}")


def images(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (S, S, 3), dtype=np.uint8)).save(folder / f"{folder.name}{i}.png")
    return folder


@pytest.fixture(scope="module")
def train_config(tiny_vae_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    data = make_synthetic_dataset(root / "data", n_train=8, n_test=2, size=S, seed=1)
    config = {
        "name": "tiny",
        "data": {"root": str(data), "image_size": S, "val_fraction": 0.25},
        "model": {"vae": str(tiny_vae_dir), "ch": 16, "ch_mult": [1, 2, 2]},
        "train": {"epochs": 2, "batch_size": 4, "lr": 5e-3, "warmup_epochs": 0, "output_dir": str(root / "runs")},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_trainings_into_one_run_folder(train_config, tmp_path):
    run = tmp_path / "run"
    first = held("train", "--config", str(train_config), "--run-dir", str(run), "--no-progress", folder=run)
    try:
        code, err = finish(gmseg("train", "--config", str(train_config), "--run-dir", str(run), "--no-progress"))
        # Variant: resuming the folder while it trains is the same collision.
        resumed, resumed_err = finish(gmseg("train", "--resume", str(run), "--no-progress"))
    finally:
        first.send_signal(signal.SIGCONT)
    assert code == 2 and f"gmseg train (PID {first.pid}" in err, err
    assert resumed == 2 and f"PID {first.pid}" in resumed_err, resumed_err
    assert finish(first)[0] == 0
    log = (run / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log] == ["epoch", "1", "2"]  # one run's epochs, not two interleaved
    assert not (run / LOCK).exists()  # released on exit


def test_two_predictions_into_one_output_folder(model_dir, tmp_path):
    out = tmp_path / "out"
    a, b = images(tmp_path / "a", 3, seed=0), images(tmp_path / "b", 3, seed=1)
    first = held("predict", "--model", str(model_dir), "--input", str(a), "--output", str(out), folder=out)
    try:
        code, err = finish(gmseg("predict", "--model", str(model_dir), "--input", str(b), "--output", str(out)))
        # Variant: scoring the folder while it is being written would score a mix of old and new masks.
        scored, scored_err = finish(gmseg("evaluate", "--pred", str(out), "--gt", str(b)))
    finally:
        first.send_signal(signal.SIGCONT)
    assert code == 2 and f"gmseg predict (PID {first.pid}" in err, err
    assert scored == 2 and f"PID {first.pid}" in scored_err, scored_err
    returncode, _ = finish(first)
    assert returncode == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a0.png", "a1.png", "a2.png"]  # none of b's


def test_a_killed_runs_lock_is_taken_over_with_a_note(model_dir, tmp_path):
    out = tmp_path / "out"
    a = images(tmp_path / "a", 2, seed=0)
    first = held("predict", "--model", str(model_dir), "--input", str(a), "--output", str(out), folder=out)
    first.kill()  # SIGKILL: no cleanup ran, the lock file stays behind
    first.wait()
    assert (out / LOCK).exists()
    code, err = finish(gmseg("predict", "--model", str(model_dir), "--input", str(a), "--output", str(out)))
    assert code == 0, err
    assert f"PID {first.pid}" in err and "taking it over" in err
    assert sorted(p.name for p in out.glob("*.png")) == ["a0.png", "a1.png"]
