"""First-stage sources: LDM checkpoint + yaml, diffusers folders, the Hub code path, TAESD files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import KVASIR5, need, offline_hub_snapshot
from gmseg.errors import CheckpointError, FirstStageError
from gmseg.first_stage import (
    FirstStageSource,
    identify_source,
    load_first_stage,
    load_state_dict_safely,
)


def test_ldm_checkpoint_and_yaml_give_the_release_latents(parity):
    first_stage = load_first_stage(parity / "tiny_vae.ckpt", parity / "tiny_vae.yaml")
    io = load_file(str(parity / "pipeline_io.safetensors"))
    assert first_stage.scaling_factor == pytest.approx(0.18215)
    assert first_stage.has_variance
    assert first_stage.describe() == {
        "kind": "ldm",
        "latent_channels": 4,
        "scaling_factor": pytest.approx(0.18215),
        "shift_factor": 0.0,
    }
    assert first_stage.source.kind == "ldm" and first_stage.source.latent_channels == 4
    with torch.no_grad():
        mean, logvar = first_stage.encode(io["image"])
        mask_mean, _ = first_stage.encode(io["mask"].expand(-1, 3, -1, -1) * 2 - 1)
    for actual, expected in [
        (mean, "image_latent_mean"),
        (logvar, "image_latent_logvar"),
        (mask_mean, "mask_latent_mean"),
    ]:
        reference = io[expected]
        assert ((actual - reference).abs().max() / reference.abs().max()).item() < 1e-4, expected


def test_ldm_checkpoint_needs_its_yaml(parity):
    with pytest.raises(FirstStageError, match="--vae-config"):
        load_first_stage(parity / "tiny_vae.ckpt")


def test_ldm_yaml_without_first_stage_config_is_named(parity, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  params: {}\n")
    with pytest.raises(FirstStageError, match="first_stage_config"):
        load_first_stage(parity / "tiny_vae.ckpt", bad)


def test_diffusers_folder_loads_and_decodes_its_own_encoding(tiny_vae_dir):
    first_stage = load_first_stage(tiny_vae_dir)
    assert first_stage.source.kind == "diffusers"
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        mean, logvar = first_stage.encode(image)
        decoded = first_stage.decode(mean)
    assert mean.shape == (1, 4, 4, 4) and logvar.shape == (1, 4, 4, 4)
    assert decoded.shape == image.shape
    assert all(not p.requires_grad for p in first_stage.parameters())


def test_hub_id_loads_through_the_hub_cache(tiny_vae_dir, tmp_path, monkeypatch):
    """The real Hub code path, fed from a local cache laid out as huggingface_hub writes it."""
    snapshot = offline_hub_snapshot(tmp_path, monkeypatch, "someone/some-sd")
    shutil.copytree(tiny_vae_dir, snapshot / "vae")
    source = identify_source("someone/some-sd/vae")
    assert source == FirstStageSource("hub", "someone/some-sd", subfolder="vae")
    first_stage = load_first_stage(source)
    assert first_stage.scaling_factor == pytest.approx(0.18215)


def test_unreachable_hub_id_says_what_to_pass(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FirstStageError, match="--vae") as error:
        load_first_stage("madebyollin/taesd")
    assert "taesd_encoder" in str(error.value)


@pytest.mark.parametrize("text", ["./missing-folder", "missing.ckpt", "nothing"])
def test_unknown_local_sources_are_named(text):
    with pytest.raises(FirstStageError, match="neither an existing path nor a Hub id"):
        identify_source(text)


def test_folder_without_weights_is_explained(tmp_path):
    with pytest.raises(FirstStageError, match="config.json.*taesd3, taef1"):
        identify_source(str(tmp_path))


def test_stored_source_with_unknown_keys_is_named():
    with pytest.raises(FirstStageError, match="'colour' is not a source key"):
        load_first_stage({"kind": "taesd", "path": ".", "colour": "red"})
    with pytest.raises(FirstStageError, match="Unknown first-stage kind 'vqgan'"):
        load_first_stage({"kind": "vqgan", "path": "."})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(1.0 / mse))


def test_real_taesd_reconstructs_real_images_and_masks(taesd_dir):
    from PIL import Image

    need(KVASIR5)
    first_stage = load_first_stage(taesd_dir)
    assert first_stage.source.kind == "taesd" and not first_stage.has_variance
    assert first_stage.source.name == "taesd" and first_stage.latent_channels == 4
    psnrs, dices = [], []
    for image_file in sorted((KVASIR5 / "images").glob("*.png")):
        image = np.asarray(Image.open(image_file).convert("RGB").resize((224, 224), Image.BILINEAR)) / 255.0
        mask = (
            np.asarray(Image.open(KVASIR5 / "masks" / image_file.name).convert("L").resize((224, 224), Image.NEAREST))
            > 127
        )
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() * 2 - 1
        m = torch.from_numpy(mask)[None, None].float().expand(-1, 3, -1, -1) * 2 - 1
        with torch.no_grad():
            latent, logvar = first_stage.encode(torch.cat([x, m]))
            decoded = first_stage.decode(latent)
        assert logvar is None and latent.shape == (2, 4, 28, 28)
        reconstruction = ((decoded[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
        psnrs.append(psnr(image, reconstruction))
        predicted = ((decoded[1].mean(0) + 1) / 2).numpy() > 0.5
        dices.append(2 * (predicted & mask).sum() / (predicted.sum() + mask.sum()))
    assert len(psnrs) == 5
    assert np.mean(psnrs) >= 26.0, psnrs
    assert min(dices) >= 0.99, dices


def test_taesd_folder_with_wrong_tensors_is_refused(taesd_dir, tmp_path):
    for name in ("taesd_encoder.safetensors", "taesd_decoder.safetensors"):
        tensors = load_file(str(taesd_dir / name))
        first = sorted(tensors)[0]
        tensors[first] = torch.zeros(3)
        save_file(tensors, str(tmp_path / name))
    with pytest.raises(FirstStageError, match="do not match"):
        load_first_stage(tmp_path)


class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_crafted_pickle_is_refused_without_running_it(tmp_path, suffix):
    marker = tmp_path / "executed"
    evil = tmp_path / f"evil{suffix}"
    torch.save({"state_dict": {"x": RunsACommand(marker)}}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict_safely(evil)
    assert not marker.exists()


def test_corrupt_checkpoints_are_named(tmp_path):
    for name in ("broken.pth", "broken.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"\x00garbage" * 10)
        with pytest.raises(CheckpointError, match=name):
            load_state_dict_safely(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_safely(tmp_path / "absent.ckpt")
