"""The U-Net baseline: trains on the GMS config, keeps the best weights, obeys a time budget, predicts, scores."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmseg.baseline import build_parser, count_trainable, load_unet, main, predict_unet, train_unet
from gmseg.config import config_from_dict
from gmseg.errors import CheckpointError, ConfigError, GmsegError
from gmseg.predict import image_to_tensor
from gmseg.synthetic import make_synthetic_dataset
from gmseg.train import LOG_COLUMNS, release_lr_factor

CHANNELS = (8, 16, 32)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=8, n_test=2, size=32, seed=3)


def tiny_config(data: Path, out: Path, **train_options) -> dict:
    return {
        "name": "tiny",
        "data": {"root": str(data), "image_size": 32, "val_fraction": 0.25},
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
    out = tmp_path_factory.mktemp("runs")
    config = config_from_dict(tiny_config(tiny_data, out))
    return train_unet(config, run_dir=out / "unet", channels=CHANNELS, progress=False)


def test_smooth_schedule_is_shared_with_gms(tiny_data, tmp_path):
    from gmseg.train import smooth_lr_factor

    config = config_from_dict(tiny_config(tiny_data, tmp_path, epochs=3, warmup_epochs=1, lr_schedule="smooth"))
    run_dir = train_unet(config, run_dir=tmp_path / "unet", channels=CHANNELS, progress=False)
    rows = read_log(run_dir)
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-3 * smooth_lr_factor(e, 1, 3) for e in range(3)])


def test_run_folder_log_and_summary(trained):
    for name in ("best.safetensors", "unet_config.json", "config.yaml", "split.json", "train_log.csv", "run_info.json"):
        assert (trained / name).is_file(), name
    assert not list(trained.glob(".*tmp*")), "temporary files left behind"
    with (trained / "train_log.csv").open() as handle:
        assert next(csv.reader(handle)) == LOG_COLUMNS
    rows = read_log(trained)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(float(row["loss"]))
        assert float(row["loss"]) == pytest.approx(float(row["loss_rec"]) + float(row["loss_dice"]), rel=1e-5)
        assert 0.0 <= float(row["val_dice"]) <= 1.0
    # The GMS schedule over the planned epochs (warm-up 0: full lr, then half a cosine).
    assert [float(r["lr"]) for r in rows] == pytest.approx([5e-3 * release_lr_factor(e, 0, 2) for e in range(2)])
    info = json.loads((trained / "run_info.json").read_text())
    assert info["epochs_completed"] == 2 and not info["stopped_by_budget"]
    assert info["training_seconds"] > 0
    assert info["trainable_parameters"] == count_trainable(load_unet(trained)) > 0
    best = max(range(2), key=lambda i: float(rows[i]["val_dice"]))  # first of ties, as "improved" is strict
    assert info["best_epoch"] == best + 1
    assert info["best_val_dice"] == pytest.approx(float(rows[best]["val_dice"]))
    split = json.loads((trained / "split.json").read_text())
    assert split["val"] and not set(split["val"]) & set(split["train"])


def test_load_unet_reloads_the_saved_weights(trained):
    from safetensors.torch import load_file

    model = load_unet(trained)
    assert not model.training
    saved = load_file(str(trained / "best.safetensors"))
    state = model.state_dict()
    assert saved.keys() <= state.keys()
    for key, tensor in saved.items():
        assert torch.equal(state[key], tensor), key
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert json.loads((trained / "unet_config.json").read_text())["unet"]["channels"] == list(CHANNELS)


def test_load_unet_names_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match="unet_config.json"):
        load_unet(tmp_path)


def test_predict_writes_masks_at_original_size(trained, tmp_path):
    # Two sizes, neither the training size: masks must come back at each image's own size.
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "square.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    report = predict_unet(trained, tmp_path, tmp_path / "out", batch_size=2)
    assert report["written"] == 2 and report["seconds_per_image"] > 0
    assert list(report["failed"]) == ["broken.png"]
    for name, (h, w) in (("wide", (40, 56)), ("square", (32, 32))):
        mask = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}


def test_predict_with_tta_thresholds_the_mirror_averaged_probability(trained, tiny_data, tmp_path):
    image_file = sorted((tiny_data / "images").iterdir())[0]
    model = load_unet(trained).eval()
    image = image_to_tensor(np.asarray(Image.open(image_file).convert("RGB")), 32)[None]  # as predict reads it
    with torch.no_grad():
        views = [torch.sigmoid(model(image.flip(axes))).flip(axes) for axes in ((), (-1,), (-2,), (-2, -1))]
    expected = (torch.stack(views).mean(0)[0, 0] > 0.5).numpy()
    for tta in (False, True):
        predict_unet(trained, [image_file], tmp_path / str(tta), tta=tta)
    with_tta = np.asarray(Image.open(tmp_path / "True" / f"{image_file.stem}.png")) > 0
    assert np.array_equal(with_tta, expected)
    assert 0 < expected.sum() < expected.size, "a mask with both classes, or the comparison proves little"
    assert build_parser().parse_args(["--config", "c", "--tta"]).tta


def test_budget_stops_after_the_first_epoch(tiny_data, tmp_path):
    config = config_from_dict(tiny_config(tiny_data, tmp_path, epochs=5))
    run_dir = train_unet(config, run_dir=tmp_path / "budget", max_minutes=0.0001, channels=CHANNELS, progress=False)
    rows = read_log(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["stopped_by_budget"] and info["epochs_completed"] == 1 and info["epochs_planned"] == 5
    assert (run_dir / "best.safetensors").is_file()


def test_bad_arguments_fail_before_training(tiny_data, trained, tmp_path):
    config = config_from_dict(tiny_config(tiny_data, tmp_path))
    with pytest.raises(ConfigError, match="max_minutes"):
        train_unet(config, run_dir=tmp_path / "a", max_minutes=0, channels=CHANNELS, progress=False)
    with pytest.raises(ConfigError, match="divisible"):  # 32 is not divisible by 2^6
        train_unet(config, run_dir=tmp_path / "b", channels=(4,) * 7, progress=False)
    with pytest.raises(GmsegError, match="already holds"):
        train_unet(config, run_dir=trained, channels=CHANNELS, progress=False)


def test_cli_trains_predicts_and_scores_the_test_split(tiny_data, tmp_path, capsys):
    config_file = tmp_path / "cfg.yaml"
    config_from_dict(tiny_config(tiny_data, tmp_path)).save(config_file)
    out = tmp_path / "cli-run"
    code = main(
        [
            "--config",
            str(config_file),
            "--set",
            "train.epochs=1",
            "--channels",
            "8,16",
            "--out",
            str(out),
            "--predict-test",
            "--no-progress",
        ]
    )
    assert code == 0
    test_names = json.loads((tiny_data / "split.json").read_text())["test"]
    assert sorted(p.stem for p in (out / "predictions").glob("*.png")) == sorted(test_names)
    summary = json.loads((out / "test" / "summary.json").read_text())
    assert summary["counts"]["n_images"] == len(test_names)
    assert (out / "test" / "metrics.csv").is_file()
    printed = capsys.readouterr().out
    assert "dice" in printed and "trainable parameters" in printed
    assert "test_seconds_per_image" in json.loads((out / "run_info.json").read_text())


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "error:" in capsys.readouterr().err


def test_ema_weights_are_validated_and_saved(tiny_data, tmp_path, monkeypatch):
    import gmseg.baseline as baseline

    made, saves = [], []
    original_make_ema, original_save = baseline.make_ema, baseline.save_weights

    def recording_make_ema(parameters, decay):
        made.append(original_make_ema(parameters, decay))
        return made[-1]

    def checking_save(model, path, metadata):
        (ema,) = made
        current = [p.detach().clone() for p in model.parameters()]
        # While saving, the model holds the average; the training weights wait in the EMA's store.
        saves.append(
            (
                all(torch.equal(a, b) for a, b in zip(current, ema.shadow_params)),
                any(not torch.equal(a, b) for a, b in zip(current, ema.temp_stored_params)),
            )
        )
        original_save(model, path, metadata)

    monkeypatch.setattr(baseline, "make_ema", recording_make_ema)
    monkeypatch.setattr(baseline, "save_weights", checking_save)
    config = config_from_dict(tiny_config(tiny_data, tmp_path, epochs=3, batch_size=2, ema_decay=0.9))
    run_dir = train_unet(config, run_dir=tmp_path / "ema", channels=CHANNELS, progress=False)
    assert made[0].optimization_step == 9  # 6 training names, batch 2: 3 steps x 3 epochs
    assert saves and all(holds_average and differs for holds_average, differs in saves)
    for parameter in load_unet(run_dir).parameters():  # and the saved file is a full model again
        assert parameter.isfinite().all()
