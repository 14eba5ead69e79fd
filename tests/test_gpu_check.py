"""bench/gpu_check.sh: the GPU check runs end to end (``--device cpu`` at tiny sizes, as CI can), and the
device tests it runs: release parity to 1e-4, a training step and an exact resume on ``GMSEG_TEST_DEVICE``.

The device tests run only when ``GMSEG_TEST_DEVICE`` names a device (bench/gpu_check.sh sets it: ``cuda``
on a GPU, ``cpu`` in the CI run below); without it they skip with that reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, relative_error
from gmseg.config import config_from_dict
from gmseg.first_stage import load_first_stage
from gmseg.inference import make_predictor
from gmseg.models import GMS, GMSConfig
from gmseg.synthetic import make_synthetic_dataset
from gmseg.training import train

DEVICE = os.environ.get("GMSEG_TEST_DEVICE")
on_device = pytest.mark.skipif(
    DEVICE is None, reason="a device test of bench/gpu_check.sh: set GMSEG_TEST_DEVICE=cuda (or cpu) to run it"
)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=8, n_test=2, size=32, seed=1)


def tiny_run(data: Path, vae: Path, out: Path, epochs: int = 2) -> dict:
    return {
        "name": "tiny",
        "data": {"root": str(data), "image_size": 32, "val_fraction": 0.25},
        "model": {"vae": str(vae), "ch": 16, "ch_mult": [1, 2, 2]},
        "train": {"epochs": epochs, "batch_size": 4, "lr": 5e-3, "warmup_epochs": 0, "seed": 5, "output_dir": str(out)},
    }


def device_options(options: dict) -> dict:
    options["train"]["device"] = DEVICE
    return options


@on_device
def test_release_parity_on_device(parity):
    """The release's pipeline outputs (the parity fixture) reproduced on the device to 1e-4 of their range."""
    io = load_file(str(parity / "pipeline_io.safetensors"))
    first_stage = load_first_stage(parity / "tiny_vae.ckpt", parity / "tiny_vae.yaml")
    model = GMS(GMSConfig(image_size=64), first_stage_module=first_stage)
    state = torch.load(parity / "lmm_official.pth", map_location="cpu", weights_only=True)["model"]
    model.mapping.load_state_dict(state, strict=True)
    probability = make_predictor(model.eval(), DEVICE)(io["image"]).cpu()
    assert relative_error(probability, io["pred_prob"]) < 1e-4
    image, mask = io["image"].to(DEVICE), io["mask"].to(DEVICE)
    with torch.no_grad():
        mean, _ = model.encode(image)
        losses = model.loss_from_latents(mean, model.encode_mask(mask), mask)
    assert relative_error(losses["loss_rec"].cpu(), io["loss_rec"].squeeze()) < 1e-4
    assert relative_error(losses["loss_dice"].cpu(), io["loss_dice"].squeeze()) < 1e-4


@on_device
def test_a_training_step_on_device(tiny_data, tiny_vae_dir, tmp_path):
    run = train(config_from_dict(device_options(tiny_run(tiny_data, tiny_vae_dir, tmp_path, epochs=1))), progress=False)
    info = json.loads((run / "run_info.json").read_text())
    assert info[-1]["device"].startswith(DEVICE.split(":")[0]), "the run trained where it was asked to"
    rows = (run / "train_log.csv").read_text().splitlines()
    assert len(rows) == 2 and "nan" not in rows[1].lower()
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()


@on_device
def test_resume_on_device_continues_exactly(tiny_data, tiny_vae_dir, tmp_path, monkeypatch):
    from test_train import assert_resume_matches_uninterrupted

    options = device_options(tiny_run(tiny_data, tiny_vae_dir, tmp_path))
    options["data"]["augmentations"] = ["hflip", "vflip", "color_jitter"]
    assert_resume_matches_uninterrupted(options, tmp_path, monkeypatch)


def test_gpu_check_runs_on_the_cpu_at_tiny_size(tmp_path):
    """The whole script with --device cpu: device tests, the inference, training and backend benchmarks,
    and the tables for BENCHMARKS.md printed from their results."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu_check"
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--device", "cpu", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    summary = (out / "tests.log").read_text().strip().splitlines()[-1]  # pytest -q: "3 passed, ... in 31.4s"
    assert "failed" not in summary and int(re.search(r"(\d+) passed", summary).group(1)) >= 2, summary
    for title in ("### Inference", "### Training", "### Backends"):
        assert title in text, title
    for name in ("inference.json", "training.json", "backends.json", "tests.log"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "backends.json").read_text())["rows"]
    assert {row["model"] for row in rows} == {"gms-tiny-kl", "unet"}
    assert all(row["images_per_s"] > 0 for row in rows)
    variants = {row["variant"] for row in json.loads((out / "training.json").read_text())["results"][0]["rows"]}
    assert {"release", "gmseg", "gmseg+bf16"} <= variants
