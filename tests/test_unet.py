"""The U-Net baseline through the same verbs as GMS: gmseg train (model.name=unet), predict, test."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gmseg.cli import main
from gmseg.config import config_from_dict
from gmseg.errors import CheckpointError, ConfigError
from gmseg.models import UNet, count_trainable, load_model
from gmseg.predict import image_to_tensor
from gmseg.synthetic import make_synthetic_dataset
from gmseg.training import LOG_COLUMNS, release_lr_factor, smooth_lr_factor, train

CHANNELS = [8, 16, 32]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=8, n_test=2, size=32, seed=3)


def tiny_config(data: Path, out: Path, **train_options) -> dict:
    return {
        "name": "tiny",
        "data": {"root": str(data), "image_size": 32, "val_fraction": 0.25},
        "model": {"name": "unet", "channels": CHANNELS},
        "train": {
            "epochs": 2,
            "batch_size": 4,
            "lr": 5e-3,
            "warmup_epochs": 0,
            "seed": 5,
            "output_dir": str(out),
            **train_options,
        },
    }


def read_log(run_dir: Path) -> list[dict]:
    with (run_dir / "train_log.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """Trained through the CLI from a GMS-style config switched to the U-Net with --set, as a user would."""
    out = tmp_path_factory.mktemp("runs")
    gms_style = tiny_config(tiny_data, out)
    gms_style["model"] = {"vae": "madebyollin/taesd", "ch": 16}  # a GMS config: its model keys are dropped
    config_file = out / "config.yaml"
    config_file.write_text(yaml.safe_dump(gms_style))
    args = ["train", "--config", str(config_file), "--set", "model.name=unet", "--set", f"model.channels={CHANNELS}"]
    assert main([*args, "--run-dir", str(out / "unet"), "--no-progress"]) == 0
    return out / "unet"


def test_unet_trains_with_the_shared_trainer(trained):
    for name in ("config.yaml", "split.json", "train_log.csv", "run_info.json"):
        assert (trained / name).is_file(), name
    for name in ("config.json", "model.safetensors", "training_state.pt"):
        assert (trained / "checkpoints" / "best" / name).is_file(), name
    with (trained / "train_log.csv").open() as handle:
        assert next(csv.reader(handle)) == LOG_COLUMNS
    rows = read_log(trained)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(float(row["loss"]))
        assert float(row["loss"]) == pytest.approx(float(row["loss_rec"]) + float(row["loss_dice"]), rel=1e-5)
        assert 0.0 <= float(row["val_dice"]) <= 1.0
    # GMS's schedule over the planned epochs (warm-up 0: full lr, then half a cosine).
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-3 * release_lr_factor(e, 0, 2) for e in range(2)])
    saved = yaml.safe_load((trained / "config.yaml").read_text())
    assert saved["model"] == {"name": "unet", "channels": CHANNELS, "num_res_units": 2}
    info = json.loads((trained / "run_info.json").read_text())[-1]
    assert info["model"] == "unet" and info["trainable_parameters"] > 0


def test_model_folder_dispatches_on_its_class_and_reloads_the_weights(trained):
    from safetensors.torch import load_file

    folder = trained / "checkpoints" / "best"
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "UNet"
    model = load_model(folder)
    assert isinstance(model, UNet) and not model.training
    assert model.image_size == 32 and model.threshold == 0.5
    assert count_trainable(model.trainable) == model.describe()["trainable_parameters"] > 0
    saved = load_file(str(folder / "model.safetensors"))
    state = model.net.state_dict()
    assert saved.keys() <= state.keys()
    for key, tensor in saved.items():
        assert torch.equal(state[key], tensor), key
    assert model.predict_proba(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert isinstance(load_model(trained), UNet), "a run folder stands for its checkpoints/best"


def test_predict_and_test_take_the_unet_folder(trained, tiny_data, tmp_path):
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(inputs / "wide.png")
    model = str(trained / "checkpoints" / "best")
    assert main(["predict", "--model", model, "--input", str(inputs), "--output", str(tmp_path / "out")]) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "wide.png"))
    assert mask.shape == (40, 56) and set(np.unique(mask)) <= {0, 255}
    assert main(["test", "--model", model, "--data", str(tiny_data), "--out", str(tmp_path / "test")]) == 0
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert summary["counts"]["n_images"] == len(json.loads((tiny_data / "split.json").read_text())["test"])


def test_predict_with_tta_thresholds_the_mirror_averaged_probability(trained, tiny_data, tmp_path):
    image_file = sorted((tiny_data / "images").iterdir())[0]
    model = load_model(trained / "checkpoints" / "best")
    image = image_to_tensor(np.asarray(Image.open(image_file).convert("RGB")), 32)[None]  # as predict reads it
    with torch.no_grad():
        views = [torch.sigmoid(model.net(image.flip(axes))).flip(axes) for axes in ((), (-1,), (-2,), (-2, -1))]
    expected = (torch.stack(views).mean(0)[0, 0] > 0.5).numpy()
    out = tmp_path / "tta"
    argv = ["predict", "--model", str(trained / "checkpoints" / "best"), "--input", str(image_file)]
    assert main([*argv, "--output", str(out), "--tta"]) == 0
    with_tta = np.asarray(Image.open(out / f"{image_file.stem}.png")) > 0
    assert np.array_equal(with_tta, expected)
    assert 0 < expected.sum() < expected.size, "a mask with both classes, or the comparison proves little"


def test_former_baseline_run_folders_still_load(trained, tmp_path):
    from safetensors.torch import save_model

    model = load_model(trained / "checkpoints" / "best")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "unet_config.json").write_text(json.dumps(model.unet_config))
    save_model(model.net, str(legacy / "best.safetensors"))
    again = load_model(legacy)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(again.predict_proba(image), model.predict_proba(image))
    (legacy / "best.safetensors").unlink()
    with pytest.raises(CheckpointError, match="best.safetensors"):
        load_model(legacy)


def test_smooth_schedule_and_budget_are_the_trainer_s(tiny_data, tmp_path, capsys):
    config = config_from_dict(tiny_config(tiny_data, tmp_path, epochs=3, warmup_epochs=1, lr_schedule="smooth"))
    rows = read_log(train(config, run_dir=tmp_path / "smooth", progress=False))
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-3 * smooth_lr_factor(e, 1, 3) for e in range(3)])
    config = config_from_dict(tiny_config(tiny_data, tmp_path, epochs=5, max_minutes=0.0001))
    run_dir = train(config, run_dir=tmp_path / "budget", progress=False)
    assert [int(r["epoch"]) for r in read_log(run_dir)] == [1]
    assert "max_minutes" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "best" / "model.safetensors").is_file()


def test_bad_unet_options_fail_before_training(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="divisible"):  # 32 is not divisible by 2^6
        train(config_from_dict(tiny_config(tiny_data, tmp_path), ["model.channels=[4,4,4,4,4,4,4]"]), progress=False)
    with pytest.raises(ConfigError, match="model.channels"):
        train(config_from_dict(tiny_config(tiny_data, tmp_path), ["model.channels=[8]"]), progress=False)
    with pytest.raises(ConfigError, match="Unknown key"):
        train(config_from_dict(tiny_config(tiny_data, tmp_path), ["model.chanels=[8,16]"]), progress=False)
    with pytest.raises(ConfigError, match="latent model"):
        cached = config_from_dict(tiny_config(tiny_data, tmp_path), ["trainer.name=cached_latents"])
        train(cached, run_dir=tmp_path / "cached", progress=False)
    assert not (tmp_path / "cached").exists()
    with pytest.raises(ConfigError, match="model.name 'unet2'"):
        train(config_from_dict(tiny_config(tiny_data, tmp_path), ["model.name=unet2"]), progress=False)
