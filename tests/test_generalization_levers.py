"""Options meant to help a model trained on one scanner read another's (issue #18): intensity augmentations
beyond the release's, and latent noise for first stages that have no posterior to sample (TAESD)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gmseg.config import config_from_dict
from gmseg.data.transforms import build_transform
from gmseg.errors import ConfigError
from gmseg.first_stage import load_first_stage
from gmseg.models import GMS, load_model, model_options


@pytest.mark.parametrize("name", ["gamma", "speckle"])
def test_intensity_augmentations_change_the_image_and_never_the_mask(name):
    rng = np.random.default_rng(0)
    image = rng.uniform(20, 235, (32, 32, 3)).astype(np.float32)
    mask = (rng.uniform(size=(32, 32)) > 0.5).astype(np.uint8)
    plain = build_transform(32)(image=image, mask=mask)
    changed = 0
    for seed in range(20):
        out = build_transform(32, [name], seed=seed)(image=image, mask=mask)
        assert torch.equal(out["mask"], plain["mask"])  # intensity only: no geometry
        assert out["image"].min() >= 0 and out["image"].max() <= 1
        changed += not torch.allclose(out["image"], plain["image"])
    assert 0 < changed < 20  # applied with a probability, not always


def test_the_release_augmentations_are_unchanged_and_unknown_names_fail():
    config = config_from_dict({"data": {"augmentations": ["hflip", "gamma", "speckle"]}})
    assert config.data.augmentations == ["hflip", "gamma", "speckle"]
    with pytest.raises(ConfigError, match="unknown"):
        config_from_dict({"data": {"augmentations": ["contrast"]}})


def test_latent_noise_for_a_deterministic_first_stage(taesd_dir, tmp_path):
    first_stage = load_first_stage(taesd_dir)
    mapping = {"in_channels": 4, "out_channels": 4, "ch": 16, "ch_mult": [1, 2, 2]}
    quiet = GMS({"mapping": mapping, "image_size": 32, "noise_probability": 1.0}, first_stage_module=first_stage)
    mean = torch.zeros(2, 4, 64, 64)
    assert torch.equal(quiet.noisy_latent(mean, None, torch.Generator().manual_seed(0)), mean)  # as the release
    noisy = GMS(
        {"mapping": mapping, "image_size": 32, "noise_probability": 1.0, "latent_noise_std": 0.2},
        first_stage_module=first_stage,
    )
    latent = noisy.noisy_latent(mean, None, torch.Generator().manual_seed(0))
    assert float(latent.std()) == pytest.approx(0.2, rel=0.05)
    noisy.save_pretrained(tmp_path / "noisy")
    quiet.save_pretrained(tmp_path / "quiet")
    assert json.loads((tmp_path / "noisy" / "config.json").read_text())["latent_noise_std"] == 0.2
    assert "latent_noise_std" not in json.loads((tmp_path / "quiet" / "config.json").read_text())
    assert load_model(tmp_path / "noisy").gms_config.latent_noise_std == 0.2
    with pytest.raises(ConfigError, match="latent_noise_std"):
        model_options(config_from_dict({"model": {"latent_noise_std": -1.0}}))
