"""int8 calibration sets: training images only (a split's training stage when one is given), and for a volume
dataset slices of its training cases prepared exactly as volume prediction prepares them."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_msd
from gmseg.calibration import calibration_set
from gmseg.cli import main
from gmseg.data.normalization import VolumeInput
from gmseg.errors import GmsegError
from gmseg.inference import BACKENDS, InferenceSpec
from gmseg.labels import LabelSet
from gmseg.models import UNet, load_model
from gmseg.models.unet import unet_arguments
from gmseg.synthetic import make_synthetic_dataset

SIZE = 24
THREE = LabelSet.from_labels({"background": 0, "anterior": 1, "posterior": 2})


@pytest.fixture
def task(tmp_path) -> Path:
    return make_tiny_msd(tmp_path / "Task98_Tiny")


@pytest.fixture
def unet_dir(tmp_path) -> Path:
    """A 3-class U-Net that records a non-trivial volume input (z-score scaled to +-2 SD, clahe intensity)."""
    torch.manual_seed(0)
    model = UNet(unet_arguments([4, 8], SIZE, labels=THREE, intensity="clahe")).eval()
    model.record_volume_input(VolumeInput(scheme="zscore", modality="MRI", z_range=2.0))
    model.save_pretrained(tmp_path / "unet")
    return tmp_path / "unet"


def write_split(path: Path, train: list[str], test: list[str]) -> Path:
    path.write_text(json.dumps({"train": train, "val": [], "test": test}))
    return path


def test_volume_calibration_slices_are_what_volume_prediction_feeds_the_model(task, unet_dir, tmp_path, monkeypatch):
    """Every calibration slice equals the batch row ``gmseg predict`` gives the model for that slice of that
    case (recorded by a backend): the model's normalisation, slice axis, size and intensity, not the files'."""
    model = load_model(unet_dir)
    calibration = calibration_set(task, InferenceSpec.of(model), size=8, seed=3, volume_input=model.volume_input)
    assert calibration.stage == "all", "MSD ships no split: every labelled case, and the record says so"
    assert len(calibration.names) == 8 and len({n.split("@")[0] for n in calibration.names}) == 4
    seen: list[torch.Tensor] = []

    def build(model, device, options):
        def run(images: torch.Tensor) -> torch.Tensor:
            seen.append(images.clone())
            return torch.zeros(len(images), 3, SIZE, SIZE)

        return run

    monkeypatch.setitem(sys.modules, "recording_backend", types.SimpleNamespace(build=build))
    monkeypatch.setitem(BACKENDS, "recording", "recording_backend")
    for name, image in zip(calibration.names, calibration.images):
        case, where = name.split("@")
        axis, index = (int(v) for v in where.split(":"))
        assert axis == 0, "the axis of largest spacing"
        seen.clear()
        argv = ["predict", "--model", str(unet_dir), "--input", str(task / "imagesTr" / f"{case}.nii.gz")]
        argv += ["--output", str(tmp_path / "out" / name.replace(":", "_")), "--backend", "recording"]
        assert main(argv) == 0
        slices = torch.cat(seen).numpy()
        assert slices.shape == (6, 3, SIZE, SIZE)
        assert np.array_equal(image[0], slices[index])


def test_volume_calibration_takes_only_the_split_s_training_cases(task, unet_dir, tmp_path):
    model = load_model(unet_dir)
    split = write_split(tmp_path / "split.json", ["vol_002"], ["vol_000", "vol_001", "vol_003"])
    calibration = calibration_set(task, InferenceSpec.of(model), size=50, split=split, volume_input=model.volume_input)
    assert calibration.stage == "train"
    assert sorted(calibration.names) == sorted(f"vol_002@0:{i}" for i in range(6)), "every slice of the one case"

    def sample(seed: int) -> tuple[str, ...]:
        return tuple(calibration_set(task, InferenceSpec.of(model), size=5, seed=seed, split=split).names)

    assert sample(1) == sample(1) and len(sample(1)) == 5
    assert len({sample(seed) for seed in range(6)}) > 1, "the seed chooses the slices"


def test_a_2d_split_file_names_the_training_images(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", n_train=6, n_test=2, size=32, seed=5)
    own = json.loads((data / "split.json").read_text())
    split = write_split(tmp_path / "mine.json", own["train"][:2], own["train"][2:] + own["test"])
    calibration = calibration_set(data, InferenceSpec(image_size=32), size=100, split=split)
    assert calibration.stage == "train" and calibration.names == sorted(own["train"][:2])
    with pytest.raises(GmsegError, match="does not exist"):
        calibration_set(data, InferenceSpec(image_size=32), split=tmp_path / "missing.json")
    with pytest.raises(GmsegError, match="plain folder"):
        calibration_set(data / "images", InferenceSpec(image_size=32), split=split)


def test_an_int8_export_calibrates_on_a_volume_dataset_and_predicts_volumes(task, unet_dir, tmp_path):
    """``gmseg export --precision int8 --calibration TASK --split`` records the training slices it used, and
    the folder predicts a volume through ``gmseg predict`` like the torch model (same labels on most voxels)."""
    pytest.importorskip("onnxruntime", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")
    split = write_split(tmp_path / "split.json", ["vol_000", "vol_001"], ["vol_002", "vol_003"])
    argv = ["export", "--model", str(unet_dir), "--format", "onnx", "--out", str(tmp_path / "int8")]
    argv += ["--precision", "int8", "--calibration", str(task), "--split", str(split), "--calibration-size", "6"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "int8" / "config.json").read_text())["calibration"]
    assert record["stage"] == "train" and record["count"] == 6
    assert {name.split("@")[0] for name in record["names"]} <= {"vol_000", "vol_001"}
    volume = str(task / "imagesTr" / "vol_003.nii.gz")
    for model, out in ((unet_dir, "torch"), (tmp_path / "int8", "int8")):
        assert main(["predict", "--model", str(model), "--input", volume, "--output", str(tmp_path / out)]) == 0
    from gmseg.data.readers import read_volume

    torch_labels = read_volume(tmp_path / "torch" / "vol_003.nii.gz").array
    int8_labels = read_volume(tmp_path / "int8" / "vol_003.nii.gz").array
    assert torch_labels.shape == int8_labels.shape == (6, 20, 16)
    assert (torch_labels == int8_labels).mean() > 0.9
