"""The first-stage adapters: the four tiny autoencoders, a 16-channel shifted AutoencoderKL, Hub id kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import KVASIR5, SHARED, make_shifted_kl, need, offline_hub_snapshot
from gmseg.errors import FirstStageError
from gmseg.first_stage import FirstStage, FirstStageSource, identify_source, load_first_stage
from gmseg.first_stage.sources import TINY_HUB_IDS, adapter_for
from gmseg.first_stage.tiny_files import find_tiny_files, tiny_pairs

WEIGHTS = SHARED / "weights"

#: (folder, latent channels, PSNR bar). The bar sits a little under the mean round-trip PSNR measured on the
#: 5 Kvasir images at 224 px (fp32, CPU, torch 2.13, diffusers 0.42): taesd 27.75 dB, taesdxl 27.89 dB,
#: taesd3 32.36 dB, taef1 30.66 dB. Random weights of the same architecture give under 10 dB.
TINY_AUTOENCODERS = [("taesd", 4, 27.0), ("taesdxl", 4, 27.0), ("taesd3", 16, 31.5), ("taef1", 16, 30.0)]


def kvasir_images() -> tuple[torch.Tensor, np.ndarray]:
    """The 5 Kvasir images at 224 px: as a [-1, 1] batch and as [0, 1] HWC arrays."""
    from PIL import Image

    need(KVASIR5)
    files = sorted((KVASIR5 / "images").glob("*.png"))
    arrays = np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) / 255.0 for f in files]
    )
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() * 2 - 1, arrays


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(1.0 / mse))


@pytest.mark.parametrize("name, channels, bar", TINY_AUTOENCODERS)
def test_tiny_autoencoder_folder_loads_reports_its_width_and_round_trips_kvasir(name, channels, bar):
    folder = need(WEIGHTS / name)
    images, arrays = kvasir_images()
    first_stage = load_first_stage(folder)
    assert first_stage.is_tiny and not first_stage.has_variance
    assert first_stage.describe() == {
        "kind": "tiny",
        "latent_channels": channels,
        "scaling_factor": 1.0,
        "shift_factor": 0.0,
    }
    assert first_stage.source == FirstStageSource(
        "taesd", str(folder), name=name, latent_channels=channels, scaling_factor=1.0, shift_factor=0.0
    )
    with torch.no_grad():
        latent, logvar = first_stage.encode(images)
        decoded = first_stage.decode(latent)
    assert logvar is None and latent.shape == (5, channels, 28, 28)
    reconstructions = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    psnrs = [psnr(a, r) for a, r in zip(arrays, reconstructions)]
    assert np.mean(psnrs) >= bar, psnrs


def test_tiny_latents_are_already_in_the_scaled_space():
    """Unit-scale latents (std about 1) with scale 1, shift 0: the tiny encoders output scaled latents."""
    images, _ = kvasir_images()
    for name, _, _ in TINY_AUTOENCODERS:
        first_stage = load_first_stage(need(WEIGHTS / name))
        with torch.no_grad():
            latent, _ = first_stage.encode(images[:2])
        assert 0.5 < latent.std().item() < 2.0, name


def link_pairs(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        for part in ("encoder", "decoder"):
            file = f"{name}_{part}.safetensors"
            (folder / file).symlink_to(need(WEIGHTS / name / file))
    return folder


def test_encoder_file_picks_its_pair_in_a_folder_of_several(tmp_path):
    folder = link_pairs(tmp_path / "vae_approx", ["taesd", "taef1"])
    assert sorted(tiny_pairs(folder)) == ["taef1", "taesd"]
    with pytest.raises(FirstStageError, match="several tiny autoencoders.*taef1_encoder"):
        identify_source(str(folder))
    source = identify_source(str(folder / "taef1_decoder.safetensors"))
    assert source == FirstStageSource("taesd", str(folder.resolve()), name="taef1")
    assert load_first_stage(source).latent_channels == 16
    # A source stored before sources recorded the name meant the taesd_* files.
    assert find_tiny_files(folder)[0] == "taesd"
    assert load_first_stage({"kind": "taesd", "path": str(folder)}).latent_channels == 4


def test_recorded_width_scale_and_shift_are_checked():
    folder = need(WEIGHTS / "taef1")
    recorded = load_first_stage(folder).source.to_dict()
    assert load_first_stage(recorded).describe()["latent_channels"] == 16
    with pytest.raises(FirstStageError, match="latent_channels 16 \\(recorded: 4\\)"):
        load_first_stage({**recorded, "latent_channels": 4})
    with pytest.raises(FirstStageError, match="shift_factor"):
        load_first_stage({**recorded, "shift_factor": 0.1159})


def test_mismatched_tiny_encoder_and_decoder_are_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "mix_encoder.safetensors").symlink_to(need(WEIGHTS / "taef1" / "taef1_encoder.safetensors"))
    (folder / "mix_decoder.safetensors").symlink_to(need(WEIGHTS / "taesd" / "taesd_decoder.safetensors"))
    with pytest.raises(FirstStageError, match="encoder gives 16 latent channels but the decoder takes 4"):
        load_first_stage(folder)


# ------------------------------------------------------------------------------ diffusers AutoencoderKL, 16 ch
@pytest.fixture
def shifted_kl_dir(tmp_path) -> Path:
    folder = tmp_path / "kl16"
    make_shifted_kl().save_pretrained(folder)
    return folder


def test_shifted_16_channel_kl_folder_applies_shift_and_scale(shifted_kl_dir, monkeypatch):
    first_stage = load_first_stage(shifted_kl_dir)
    assert first_stage.source.kind == "diffusers" and first_stage.has_variance
    assert first_stage.describe() == {"kind": "kl", "latent_channels": 16, "scaling_factor": 0.5, "shift_factor": 0.1}
    assert first_stage.source.recorded() == {"latent_channels": 16, "scaling_factor": 0.5, "shift_factor": 0.1}
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        raw = first_stage.autoencoder.encode(image).latent_dist
        latent, logvar = first_stage.encode(image)
    assert latent.shape == (2, 16, 8, 8)
    assert torch.equal(latent, (raw.mean - 0.1) * 0.5)
    assert torch.equal(logvar, raw.logvar)

    seen = []
    decode = first_stage.autoencoder.decode

    def recording(z, *args, **kwargs):
        seen.append(z)
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(first_stage.autoencoder, "decode", recording)
    with torch.no_grad():
        decoded = first_stage.decode(latent)
    assert decoded.shape == image.shape
    assert torch.allclose(seen[0], latent / 0.5 + 0.1, atol=1e-6)
    assert torch.allclose(seen[0], raw.mean, atol=1e-6)  # decode undoes encode's shift and scale


def test_first_stage_saved_with_its_own_scale_and_shift_loads_back_the_same(tmp_path):
    autoencoder = make_shifted_kl()
    FirstStage(autoencoder, 0.25, shift_factor=0.2).save_pretrained(tmp_path / "saved")
    loaded = load_first_stage(tmp_path / "saved")
    assert (loaded.scaling_factor, loaded.shift_factor, loaded.latent_channels) == (0.25, 0.2, 16)


def test_kl_without_shift_factor_has_shift_zero(tiny_vae_dir):
    first_stage = load_first_stage(tiny_vae_dir)
    assert first_stage.autoencoder.config.shift_factor is None
    assert first_stage.describe() == {
        "kind": "kl",
        "latent_channels": 4,
        "scaling_factor": 0.18215,
        "shift_factor": 0.0,
    }
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latent, _ = first_stage.encode(image)
        raw = first_stage.autoencoder.encode(image).latent_dist.mean
    assert torch.equal(latent, raw * 0.18215)


def test_direct_first_stage_reads_its_width_from_the_config():
    """What bench/common.py builds: an autoencoder and a scale, no source."""
    first_stage = FirstStage(make_shifted_kl(), 0.5)
    assert first_stage.latent_channels == 16 and first_stage.shift_factor == 0.0 and first_stage.source is None
    assert first_stage.kind == "kl"


# ------------------------------------------------------------------------------ Hub ids, no network
@pytest.mark.parametrize(
    "text, adapter, channels",
    [
        ("madebyollin/taesd", "tiny", 4),
        ("madebyollin/taesdxl", "tiny", 4),
        ("madebyollin/taesd3", "tiny", 16),
        ("madebyollin/taef1", "tiny", 16),
        ("stabilityai/stable-diffusion-2/vae", "kl", None),
        ("black-forest-labs/FLUX.1-dev/vae", "kl", None),
        ("someone/some-vae", "kl", None),
    ],
)
def test_hub_id_resolves_to_its_adapter_without_the_network(text, adapter, channels, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("identify_source / adapter_for must not reach the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    source = identify_source(text)
    assert source.kind == "hub"
    assert adapter_for(source) == adapter
    assert TINY_HUB_IDS.get(source.path) == channels


def test_local_sources_resolve_to_their_adapter(tmp_path, tiny_vae_dir):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4).save_pretrained(
        tmp_path / "tiny_diffusers"
    )
    assert adapter_for(identify_source(str(tmp_path / "tiny_diffusers"))) == "tiny"
    assert adapter_for(identify_source(str(tiny_vae_dir))) == "kl"
    first_stage = load_first_stage(tmp_path / "tiny_diffusers")
    assert first_stage.describe() == {"kind": "tiny", "latent_channels": 4, "scaling_factor": 1.0, "shift_factor": 0.0}


def test_tiny_hub_id_loads_through_the_hub_cache(tmp_path, monkeypatch):
    """The real Hub code path for madebyollin/taef1, fed from a local cache laid out as huggingface_hub writes it."""
    from diffusers import AutoencoderTiny

    snapshot = offline_hub_snapshot(tmp_path, monkeypatch, "madebyollin/taef1")
    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4, latent_channels=16
    ).save_pretrained(snapshot)
    first_stage = load_first_stage("madebyollin/taef1")
    assert first_stage.source == FirstStageSource(
        "hub", "madebyollin/taef1", latent_channels=16, scaling_factor=1.0, shift_factor=0.0
    )
    assert first_stage.is_tiny and first_stage.latent_channels == 16
    with torch.no_grad():
        latent, logvar = first_stage.encode(torch.zeros(1, 3, 16, 16))
    assert latent.shape == (1, 16, 2, 2) and logvar is None
