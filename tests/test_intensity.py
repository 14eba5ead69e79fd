"""Histogram standardisation (data.intensity): applied in training and at inference, recorded by the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmseg.config import config_from_dict
from gmseg.data.transforms import StandardizeIntensity, build_transform
from gmseg.errors import ConfigError
from gmseg.models import GMS, UNet, load_model
from gmseg.predict import image_to_tensor, predict_files
from gmseg.synthetic import make_synthetic_dataset
from gmseg.training.trainer import make_dataset


def low_contrast(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A dim gray ultrasound-like image: values 40..100 only, three equal channels."""
    gray = np.random.default_rng(seed).integers(40, 100, (height, width), dtype=np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


@pytest.mark.parametrize("method", ["equalize", "clahe"])
def test_standardisation_stretches_a_dim_image_and_keeps_gray_gray(method):
    image = low_contrast()
    out = StandardizeIntensity(method)(image=image.astype(np.float32))["image"]
    assert out.dtype == np.float32 and out.shape == image.shape
    assert out.std() > 1.5 * image.std(), "the histogram is spread"
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    if method == "equalize":  # a global equalisation reaches both ends of the range
        assert out.min() <= 5 and out.max() >= 250


def test_two_gains_of_one_image_look_alike_after_equalisation():
    """The point of the option: another scanner's gain (here a gamma curve) is undone to a large degree."""
    image = low_contrast().astype(np.float32)
    brighter = 255.0 * (image / 255.0) ** 0.6
    plain = np.abs(image - brighter).mean()
    eq = StandardizeIntensity("equalize")
    standardised = np.abs(eq(image=image)["image"] - eq(image=brighter)["image"]).mean()
    assert standardised < 0.25 * plain


def test_unknown_intensity_is_a_config_error():
    with pytest.raises(ConfigError, match="data.intensity must be one of"):
        config_from_dict({"data": {"root": "x", "intensity": "zscore"}})
    with pytest.raises(ConfigError, match="clahe"):
        build_transform(32, intensity="zscore")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=4, n_test=2, size=32, seed=3)


def run_config(data: Path, intensity: str, model: dict):
    return config_from_dict({"data": {"root": str(data), "image_size": 32, "intensity": intensity}, "model": model})


def test_training_data_is_standardised(tiny_data):
    config = run_config(tiny_data, "equalize", {"name": "unet", "channels": [8, 16]})
    name = json.loads((tiny_data / "split.json").read_text())["train"][0]
    image = make_dataset(config, [name], augment=False)[0]["image"]
    raw = np.asarray(Image.open(next((tiny_data / "images").glob(f"{name}.*"))).convert("RGB"))
    expected = build_transform(32, intensity="equalize")(image=raw.astype(np.float32), mask=raw[..., 0])["image"]
    assert torch.equal(image, expected)
    assert not torch.equal(image, build_transform(32)(image=raw.astype(np.float32), mask=raw[..., 0])["image"])


def test_unet_folder_records_intensity_and_predict_applies_it(tiny_data, tmp_path):
    model = UNet.from_run_config(run_config(tiny_data, "clahe", {"name": "unet", "channels": [8, 16]}))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["intensity"] == "clahe"
    loaded = load_model(tmp_path / "m")
    assert loaded.intensity == "clahe"

    image = low_contrast(40, 56)
    Image.fromarray(image).save(tmp_path / "in.png")
    report = predict_files(loaded, tmp_path / "in.png", tmp_path / "out", save_prob=True, progress=False)
    assert report.ok
    written = np.load(tmp_path / "out" / "in.prob.npy")
    with torch.no_grad():
        standardised = loaded.predict_proba(image_to_tensor(image, 32, "clahe")[None])[0, 0]
        plain = loaded.predict_proba(image_to_tensor(image, 32)[None])[0, 0]
    expected = torch.nn.functional.interpolate(standardised[None, None], size=(40, 56), mode="bilinear")[0, 0]
    assert np.allclose(written, expected.numpy(), atol=1e-6)
    assert not torch.allclose(standardised, plain, atol=1e-4), "without standardisation the answer differs"


def test_default_folders_do_not_mention_intensity(tiny_data, tiny_vae_dir, tmp_path):
    unet = UNet.from_run_config(run_config(tiny_data, "none", {"name": "unet", "channels": [8, 16]}))
    assert "intensity" not in unet.unet_config and unet.intensity == "none"
    gms = GMS.from_run_config(run_config(tiny_data, "none", {"name": "gms", "vae": str(tiny_vae_dir), "ch": 16}))
    assert "intensity" not in gms.gms_config.to_dict()
    equalised = GMS.from_run_config(
        run_config(tiny_data, "equalize", {"name": "gms", "vae": str(tiny_vae_dir), "ch": 16})
    )
    equalised.save_pretrained(tmp_path / "gms")
    assert json.loads((tmp_path / "gms" / "config.json").read_text())["intensity"] == "equalize"
    assert load_model(tmp_path / "gms").intensity == "equalize"


def test_a_resume_may_not_change_intensity(tmp_path):
    from gmseg.config import check_resume_config

    saved = config_from_dict({"data": {"root": "x"}})
    changed = config_from_dict({"data": {"root": "x", "intensity": "clahe"}})
    with pytest.raises(ConfigError, match="data.intensity"):
        check_resume_config(saved, changed, tmp_path)


def test_inference_reuses_one_evaluation_pipeline_and_matches_a_fresh_one():
    """Prediction builds the evaluation transform once per (size, intensity), with the same result."""
    from gmseg.predict import evaluation_transform

    assert evaluation_transform(24, "clahe") is evaluation_transform(24, "clahe")
    assert evaluation_transform(24, "clahe") is not evaluation_transform(24, "none")
    image = low_contrast()
    fresh = build_transform(24, intensity="clahe")(image=image.astype(np.float32), mask=np.zeros((48, 64), np.uint8))
    assert torch.equal(image_to_tensor(image, 24, "clahe"), fresh["image"] * 2.0 - 1.0)
