"""GMS end to end against the release's numbers, the loss details, and the model folder format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import relative_error
from gmseg.errors import CheckpointError, ConfigError
from gmseg.first_stage import load_first_stage
from gmseg.models import GMS, GMSConfig, load_model


@pytest.fixture
def release_model(parity) -> GMS:
    first_stage = load_first_stage(parity / "tiny_vae.ckpt", parity / "tiny_vae.yaml")
    model = GMS(GMSConfig(image_size=64), first_stage_module=first_stage)
    state = torch.load(parity / "lmm_official.pth", map_location="cpu", weights_only=True)["model"]
    model.mapping.load_state_dict(state, strict=True)
    return model.eval()


def test_pipeline_reproduces_the_release(release_model, parity, monkeypatch):
    io = load_file(str(parity / "pipeline_io.safetensors"))
    probability = release_model.predict_proba(io["image"])
    assert relative_error(probability, io["pred_prob"]) < 1e-4
    decided = (io["pred_prob"] - 0.5).abs() > 1e-4
    assert torch.equal((probability > 0.5)[decided], io["pred_mask"].bool()[decided])
    with torch.no_grad():
        mean, _ = release_model.encode(io["image"])
        mask_latent = release_model.encode_mask(io["mask"])
        losses = release_model.loss_from_latents(mean, mask_latent, io["mask"])
    assert relative_error(losses["loss_rec"], io["loss_rec"].squeeze()) < 1e-4
    assert relative_error(losses["loss_dice"], io["loss_dice"].squeeze()) < 1e-4
    # Without a mask (the latent-only epochs) the same latent term, and no decode at all.
    monkeypatch.setattr(release_model, "latent_to_probability", None)  # calling it would raise
    with torch.no_grad():
        latent_only = release_model.loss_from_latents(mean, mask_latent, None)
    assert relative_error(latent_only["loss_rec"], io["loss_rec"].squeeze()) < 1e-4
    assert latent_only["loss_dice"].item() == 0 and latent_only["loss"].item() == latent_only["loss_rec"].item()


def test_levels_decoded_in_one_batch_equal_separate_decodes(release_model, parity):
    io = load_file(str(parity / "pipeline_io.safetensors"))
    from monai.losses import DiceLoss

    with torch.no_grad():
        mean, _ = release_model.encode(io["image"])
        outputs = release_model.mapping(mean)
        batched = release_model.loss_from_latents(
            mean, release_model.encode_mask(io["mask"]), io["mask"], outputs=outputs
        )
        separate = sum(
            DiceLoss()(release_model.latent_to_probability(outputs[name]), io["mask"])
            for name in ("level2", "level1", "out")
        )
    assert batched["loss_dice"].item() == pytest.approx(separate.item(), rel=1e-5)


def test_latent_noise_is_the_release_formula(release_model):
    mean, logvar = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    release_model.gms_config.noise_probability = 1.0
    generator = torch.Generator().manual_seed(3)
    noisy = release_model.noisy_latent(mean, logvar, generator)
    replay = torch.Generator().manual_seed(3)
    torch.rand((), generator=replay)  # the coin flip
    expected = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=replay)  # sigma is not scaled
    assert torch.allclose(noisy, expected)
    release_model.gms_config.noise_probability = 0.0
    assert torch.equal(release_model.noisy_latent(mean, logvar, generator), mean)
    # Half the batches are augmented at the default p = 0.5.
    release_model.gms_config.noise_probability = 0.5
    augmented = sum(not torch.equal(release_model.noisy_latent(mean, logvar, generator), mean) for _ in range(400))
    assert 160 < augmented < 240


def test_deterministic_first_stage_gets_no_noise(taesd_dir):
    model = GMS(GMSConfig(), first_stage_module=load_first_stage(taesd_dir))
    mean = torch.randn(1, 4, 28, 28)
    assert torch.equal(model.noisy_latent(mean, None), mean)


def test_gradients_reach_the_mapping_model_only(release_model, parity):
    io = load_file(str(parity / "pipeline_io.safetensors"))
    release_model.train()
    losses = release_model.training_loss(io["image"], io["mask"])
    losses["loss"].backward()
    # Every weight but the unsupervised level3 head (as in the release) learns.
    for name, parameter in release_model.mapping.named_parameters():
        if parameter.dim() > 1 and not name.startswith("convds3"):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert release_model.mapping.convds3[2].weight.grad is None
    assert all(p.grad is None for p in release_model.first_stage.parameters())
    assert not release_model.first_stage.autoencoder.training  # frozen stays in eval mode


def test_model_folder_round_trip(release_model, parity, tmp_path):
    io = load_file(str(parity / "pipeline_io.safetensors"))
    release_model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["first_stage"]["kind"] == "ldm" and config["image_size"] == 64
    loaded = load_model(tmp_path / "model")
    assert torch.allclose(loaded.predict_proba(io["image"]), release_model.predict_proba(io["image"]))


def test_model_folder_with_first_stage_inside_works_when_the_source_is_gone(release_model, parity, tmp_path):
    import shutil

    io = load_file(str(parity / "pipeline_io.safetensors"))
    release_model.save_pretrained(tmp_path / "model", include_first_stage=True)
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "model", moved)
    loaded = GMS.from_pretrained(str(moved))
    stored = loaded.gms_config.first_stage
    assert {key: stored[key] for key in ("kind", "path")} == {"kind": "diffusers", "path": "first_stage"}
    # The stored copy is checked against what the model was trained with, like any recorded first stage.
    assert (stored["latent_channels"], stored["scaling_factor"], stored["shift_factor"]) == (4, 0.18215, 0.0)
    assert relative_error(loaded.predict_proba(io["image"]), io["pred_prob"]) < 1e-4


def test_bad_model_folders_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="not a gmseg model folder"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"bogus": 1}))
    with pytest.raises(ConfigError, match="bogus"):
        load_model(tmp_path)


def test_unreachable_hub_model_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="local model folder"):
        load_model("someone/gms-busi")


def test_corrupt_weights_are_named(release_model, tmp_path):
    release_model.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path / "model")


def test_unknown_supervised_level_is_rejected(release_model):
    with pytest.raises(ConfigError, match="supervised_levels"):
        GMS(GMSConfig(supervised_levels=["level9"]), first_stage_module=release_model.first_stage)


def test_dice_levels_limit_which_levels_are_decoded(release_model, parity):
    io = load_file(str(parity / "pipeline_io.safetensors"))
    from monai.losses import DiceLoss

    release_model.gms_config.dice_levels = ["out"]
    with torch.no_grad():
        mean, _ = release_model.encode(io["image"])
        outputs = release_model.mapping(mean)
        losses = release_model.loss_from_latents(
            mean, release_model.encode_mask(io["mask"]), io["mask"], outputs=outputs
        )
        only_out = DiceLoss()(release_model.latent_to_probability(outputs["out"]), io["mask"])
    assert losses["loss_dice"].item() == pytest.approx(only_out.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="dice_levels"):
        GMS(GMSConfig(dice_levels=["level3"]), first_stage_module=release_model.first_stage)
