"""diffusers ``AutoencoderKL`` first stages (a Hub id or a diffusers folder, loaded by :mod:`.pretrained`).

The scale and shift come from the autoencoder's config: ``scaling_factor`` (0.18215 for the SD VAEs) and
``shift_factor`` (SD3 and FLUX VAEs; ``None`` in older configs, which means 0).
"""

from __future__ import annotations

from torch import nn

from .sources import FirstStageSource
from .wrapper import FirstStage

#: The SD VAE's scale, for a config that does not say (diffusers' own default).
DEFAULT_SCALING_FACTOR = 0.18215


def wrap(autoencoder: nn.Module, spec: FirstStageSource | None = None) -> FirstStage:
    """An AutoencoderKL with its config's scale and shift."""
    config = autoencoder.config
    scale = config.get("scaling_factor", DEFAULT_SCALING_FACTOR)
    return FirstStage(autoencoder, scale, spec, shift_factor=config.get("shift_factor") or 0.0)
