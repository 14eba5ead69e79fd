"""The model contract: any first stage's width reaches the mapping model, any model folder dispatches on its
class, and a mismatch between a model and a first stage fails with both named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_shifted_kl, offline_hub_snapshot
from gmseg.cli import main
from gmseg.config import config_from_dict
from gmseg.errors import ConfigError, GmsegError
from gmseg.first_stage import load_first_stage
from gmseg.models import GMS, MODELS, SegmentationModel, load_model
from gmseg.synthetic import make_synthetic_dataset
from gmseg.training import train


@pytest.fixture(scope="module")
def shifted_kl_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kl16") / "vae"
    make_shifted_kl().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=8, n_test=2, size=32, seed=2)


def test_every_registered_model_keeps_the_contract():
    for name, cls in MODELS.items():
        assert issubclass(cls, SegmentationModel) and cls.name == name
        options = cls.Options()
        assert options.name == name and options.problems() == []
        for method in ("predict_proba", "training_loss", "validation_probabilities", "from_run_config"):
            assert getattr(cls, method) is not getattr(SegmentationModel, method), (name, method)


def test_gms_on_a_16_channel_shifted_autoencoder_trains_and_predicts(shifted_kl_dir, tiny_data, tmp_path):
    config = config_from_dict(
        {
            "data": {"root": str(tiny_data), "image_size": 32, "val_fraction": 0.25},
            "model": {"vae": str(shifted_kl_dir), "ch": 16, "ch_mult": [1, 2, 2]},
            "train": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0, "output_dir": str(tmp_path)},
        }
    )
    run = train(config, run_dir=tmp_path / "run", progress=False)
    folder = run / "checkpoints" / "best"
    stored = json.loads((folder / "config.json").read_text())
    assert stored["_class_name"] == "GMS"
    assert (stored["mapping"]["in_channels"], stored["mapping"]["out_channels"]) == (16, 16)
    recorded = stored["first_stage"]
    assert (recorded["latent_channels"], recorded["scaling_factor"], recorded["shift_factor"]) == (16, 0.5, 0.1)
    model = load_model(folder)
    assert isinstance(model, GMS) and model.first_stage.shift_factor == pytest.approx(0.1)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    latent, _ = model.encode(images)
    raw = model.first_stage.autoencoder.encode(images).latent_dist.mean
    assert torch.allclose(latent, (raw - 0.1) * 0.5, atol=1e-6)  # z = (mean - shift) * scale
    probability = model.predict_proba(images)
    assert probability.shape == (2, 1, 32, 32) and probability.isfinite().all()
    rows = (run / "train_log.csv").read_text().splitlines()
    assert len(rows) == 2 and "nan" not in rows[1]
    out = tmp_path / "masks"
    argv = ["predict", "--model", str(folder), "--input", str(tiny_data / "images"), "--output", str(out)]
    assert main(argv) == 0
    mask = np.asarray(Image.open(sorted(out.glob("*.png"))[0]))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}


def test_a_width_mismatch_names_both_widths(shifted_kl_dir, tiny_vae_dir):
    sixteen = load_first_stage(shifted_kl_dir)
    four = load_first_stage(tiny_vae_dir)
    config = {"mapping": {"in_channels": 4, "out_channels": 4, "ch": 16, "ch_mult": [1, 2, 2]}, "image_size": 32}
    with pytest.raises(ConfigError, match=r"4-channel latents .* has 16 latent channels"):
        GMS(config, first_stage_module=sixteen)
    model = GMS(config, first_stage_module=four)  # the matching width builds and maps
    assert model.predict_proba(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_a_model_folder_refuses_a_first_stage_it_was_not_trained_with(shifted_kl_dir, tiny_vae_dir, tmp_path):
    four = load_first_stage(tiny_vae_dir)
    config = {"mapping": {"in_channels": 4, "out_channels": 4, "ch": 16, "ch_mult": [1, 2, 2]}, "image_size": 32}
    GMS(config, first_stage_module=four).save_pretrained(tmp_path / "m")
    with pytest.raises(GmsegError, match="latent_channels 16"):
        load_model(tmp_path / "m", first_stage=load_first_stage(shifted_kl_dir))


def test_an_unknown_stored_class_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "SAM"}))
    with pytest.raises(GmsegError, match="'SAM'"):
        load_model(tmp_path)


def test_a_unet_on_the_hub_loads_as_a_unet(tmp_path, monkeypatch):
    """A Hub id dispatches on its config.json's class (a fake offline Hub cache, see conftest)."""
    from gmseg.models import UNet
    from gmseg.models.unet import unet_arguments

    snapshot = offline_hub_snapshot(tmp_path, monkeypatch, "someone/busi-unet")
    torch.manual_seed(0)
    UNet(unet_arguments([8, 16], 32)).save_pretrained(snapshot)
    model = load_model("someone/busi-unet")
    assert isinstance(model, UNet) and model.image_size == 32
    assert model.predict_proba(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
