"""diffusers ``AutoencoderKL`` first stages: a Hub id or a diffusers folder, through ``from_pretrained``.

The scale and shift come from the autoencoder's config: ``scaling_factor`` (0.18215 for the SD VAEs) and
``shift_factor`` (SD3 and FLUX VAEs; ``None`` in older configs, which means 0).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import FirstStageError
from .sources import OFFLINE_HINT, FirstStageSource
from .weights import first_line
from .wrapper import FirstStage

#: The SD VAE's scale, for a config that does not say (diffusers' own default).
DEFAULT_SCALING_FACTOR = 0.18215


def load(spec: FirstStageSource, local_files_only: bool = False) -> FirstStage:
    """A Hub id or diffusers folder; a config naming ``AutoencoderTiny`` gets the tiny adapter's wrapping."""
    return wrap(from_pretrained(spec, local_files_only=local_files_only), spec)


def wrap(autoencoder: nn.Module, spec: FirstStageSource | None = None) -> FirstStage:
    """The wrapper for whichever class ``from_pretrained`` gave."""
    from diffusers import AutoencoderTiny

    if isinstance(autoencoder, AutoencoderTiny):
        from . import tiny

        return tiny.wrap(autoencoder, spec)
    return wrap_kl(autoencoder, spec)


def wrap_kl(autoencoder: nn.Module, spec: FirstStageSource | None = None) -> FirstStage:
    config = autoencoder.config
    scale = config.get("scaling_factor", DEFAULT_SCALING_FACTOR)
    return FirstStage(autoencoder, scale, spec, shift_factor=config.get("shift_factor") or 0.0)


def from_pretrained(spec: FirstStageSource, local_files_only: bool = False) -> nn.Module:
    """``from_pretrained`` on a Hub id (offline: straight to the local cache) or a diffusers folder.

    The config's ``_class_name`` decides between AutoencoderKL and AutoencoderTiny; it is read first
    (``AutoencoderKL.load_config``) for every source, so an offline Hub id fails at that one call.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny

    if spec.kind == "hub" and not local_files_only:
        from ..hub import hub_reachable

        local_files_only = not hub_reachable()  # offline: the local cache or a clear error, no retries
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if spec.subfolder:
        kwargs["subfolder"] = spec.subfolder
    from ..hub import quiet_hub_deprecations, unavailable_reason

    try:
        with quiet_hub_deprecations():
            config = AutoencoderKL.load_config(spec.path, **kwargs)
            cls = AutoencoderTiny if config.get("_class_name") == "AutoencoderTiny" else AutoencoderKL
            return cls.from_pretrained(spec.path, **kwargs)
    except (OSError, ValueError) as error:
        where = "the Hugging Face Hub" if spec.kind == "hub" else "disk"
        name = spec.path + (f"/{spec.subfolder}" if spec.subfolder else "")
        offline = unavailable_reason(name) if spec.kind == "hub" else None
        raise FirstStageError(
            f"Could not load the first stage {name!r} from {where}: {offline or first_line(error)}\n{OFFLINE_HINT}"
        ) from error
