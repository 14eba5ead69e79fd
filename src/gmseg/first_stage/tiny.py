"""Tiny autoencoders (diffusers ``AutoencoderTiny``): taesd, taesdxl, taesd3, taef1 by Ollin Boer Bohan.

Two ways in: a folder with the upstream files ``<name>_encoder.*`` + ``<name>_decoder.*`` (``nn.Sequential``
indices, often bf16; the latent width is read from the weights), or a diffusers repo (Hub ids such as
``madebyollin/taef1``, or a diffusers folder whose config names ``AutoencoderTiny``: :mod:`.pretrained` loads
it, :func:`wrap` wraps it). The files' naming rules are :mod:`.tiny_files`'.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import FirstStageError
from .sources import OFFLINE_HINT, FirstStageSource
from .tiny_files import find_tiny_files
from .weights import first_line, load_state_dict_safely
from .wrapper import FirstStage


def wrap(autoencoder: nn.Module, spec: FirstStageSource | None = None) -> FirstStage:
    """Scale 1, shift 0 (the config's): taesd/xl/3/f1 already output their big VAE's (mean - shift) * scale."""
    # Upstream distils each encoder onto the big VAE's scaled (and, for SD3 / FLUX, shifted) latents: ComfyUI
    # feeds taef1 (raw - 0.1159) * 0.3611 and taesd3 (raw - 0.0609) * 1.5305, and diffusers' Hub configs say
    # 1.0 / 0.0 (shift_factor was added to AutoencoderTiny, PR 8618, so SD3 / FLUX pipelines pass latents
    # through). Their latents come out with a standard deviation of about 1 (tests). Scaling them again would
    # break TAESD's bit-for-bit behaviour and put GMS's latents off unit scale.
    config = autoencoder.config
    return FirstStage(
        autoencoder,
        config.get("scaling_factor", 1.0),
        spec,
        shift_factor=config.get("shift_factor") or 0.0,
        latent_channels=config.get("latent_channels"),
    )


def latent_width(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor]) -> int:
    """The latent channels: the encoder's last conv outputs them, the decoder's first conv takes them."""

    def convs(state_dict: dict[str, torch.Tensor]) -> list[tuple[int, torch.Tensor]]:
        weights = []
        for key, value in state_dict.items():
            index, _, rest = key.partition(".")
            if rest == "weight" and index.isdigit() and value.dim() == 4:
                weights.append((int(index), value))
        return sorted(weights, key=lambda item: item[0])

    encoder_convs, decoder_convs = convs(encoder), convs(decoder)
    if not encoder_convs or not decoder_convs:
        raise ValueError("no conv weights with upstream nn.Sequential keys")
    produced, taken = encoder_convs[-1][1].shape[0], decoder_convs[0][1].shape[1]
    if produced != taken:
        raise ValueError(f"the encoder gives {produced} latent channels but the decoder takes {taken}")
    return int(produced)


def load(spec: FirstStageSource, local_files_only: bool = False) -> FirstStage:
    """Kind ``taesd``: upstream weights (``nn.Sequential`` indices, often bf16) mapped onto ``AutoencoderTiny``
    (``local_files_only`` is moot: the files are local)."""
    from diffusers import AutoencoderTiny

    files = find_tiny_files(Path(spec.path), spec.name)
    if files is None:
        stem = spec.name or "<name>"
        raise FirstStageError(f"No {stem}_encoder.* / {stem}_decoder.* files in {spec.path}. {OFFLINE_HINT}")
    name, encoder_file, decoder_file = files
    encoder = {key: value.float() for key, value in load_state_dict_safely(encoder_file).items()}
    decoder = {key: value.float() for key, value in load_state_dict_safely(decoder_file).items()}
    try:
        channels = latent_width(encoder, decoder)
        state_dict = {f"encoder.layers.{key}": value for key, value in encoder.items()}
        for key, value in decoder.items():
            index, rest = key.split(".", 1)
            # Upstream's decoder starts with a parameter-free Clamp that diffusers applies in forward().
            state_dict[f"decoder.layers.{int(index) - 1}.{rest}"] = value
        autoencoder = AutoencoderTiny(latent_channels=channels)
        autoencoder.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError) as error:
        raise FirstStageError(
            f"{spec.path}: the {name} files do not match AutoencoderTiny: {first_line(error)}"
        ) from error
    return wrap(autoencoder, spec)
