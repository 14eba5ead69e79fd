"""GMS = frozen first stage + latent mapping model.

This module owns the paper's maths end to end: image -> latent -> mask latent -> probability map, and the
training loss (latent MSE + Dice on decoded masks over the deep-supervision levels). It also owns the model
folder format: ``config.json`` (mapping architecture, how to obtain the first stage, loss settings) plus
``model.safetensors`` holding only the 1.5 M trainable weights; the first stage is referenced, or stored in
``first_stage/`` for offline use.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .errors import CheckpointError, ConfigError
from .first_stage import DEFAULT_VAE, FirstStage, identify_source, load_first_stage
from .hub import hub_reachable
from .mapping import LatentMappingModel

WEIGHTS_NAME = "model.safetensors"
FIRST_STAGE_DIR = "first_stage"


@dataclass
class GMSConfig:
    """Everything needed to rebuild a GMS model, stored as a model folder's ``config.json``."""

    mapping: dict[str, Any] = field(
        default_factory=lambda: {"in_channels": 4, "out_channels": 4, "ch": 32, "ch_mult": [1, 2, 4, 4]}
    )
    first_stage: dict[str, Any] = field(default_factory=lambda: identify_source(DEFAULT_VAE).to_dict())
    image_size: int = 224
    supervised_levels: list[str] = field(default_factory=lambda: ["level2", "level1", "out"])
    # Levels whose decoded masks enter the Dice term (None: all supervised levels, as the paper). Each one
    # costs a decoder pass with gradients, the dominant cost of a training step.
    dice_levels: list[str] | None = None
    rec_weight: float = 1.0
    dice_weight: float = 1.0
    noise_probability: float = 0.5
    threshold: float = 0.5

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GMSConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a GMS config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"gmseg_version"})
        if unknown:
            raise ConfigError(f"Unknown GMS config keys {unknown}; valid keys: {sorted(known)}")
        config = cls(**{k: v for k, v in data.items() if k in known})
        config.check()
        return config

    def check(self) -> None:
        """Types and ranges, checked where a config enters (a hand-edited config.json, say)."""

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        problems = []
        if not (
            isinstance(self.image_size, int)
            and not isinstance(self.image_size, bool)
            and self.image_size >= 8
            and self.image_size % 8 == 0
        ):
            problems.append(f"image_size must be a positive multiple of 8, got {self.image_size!r}")
        for key in ("threshold", "noise_probability"):
            value = getattr(self, key)
            if not (number(value) and 0.0 <= value <= 1.0):
                problems.append(f"{key} must be a number in [0, 1], got {value!r}")
        for key in ("rec_weight", "dice_weight"):
            if not (number(getattr(self, key)) and getattr(self, key) >= 0):
                problems.append(f"{key} must be a non-negative number, got {getattr(self, key)!r}")
        if not isinstance(self.mapping, dict) or not isinstance(self.first_stage, dict):
            problems.append("mapping and first_stage must be JSON objects")
        for key in ("supervised_levels", "dice_levels"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                problems.append(f"{key} must be a list of level names, got {value!r}")
        if problems:
            raise ConfigError("invalid GMS config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        from . import __version__

        return {**asdict(self), "gmseg_version": __version__}


class GMS(nn.Module, PyTorchModelHubMixin, library_name="gmseg", tags=["medical-image-segmentation", "gms"]):
    """Generative Medical Segmentation: segment by mapping latents of a frozen autoencoder.

    Inputs are images in [-1, 1] (B, 3, H, W) with H, W multiples of 8, and masks in {0, 1} (B, 1, H, W).
    """

    def __init__(self, config: GMSConfig | dict[str, Any] | None = None, first_stage_module: FirstStage | None = None):
        super().__init__()
        if config is None:
            config = GMSConfig()
        self.gms_config = config if isinstance(config, GMSConfig) else GMSConfig.from_dict(config)
        if first_stage_module is None:
            first_stage_module = load_first_stage(self.gms_config.first_stage)
        elif first_stage_module.source is not None:
            self.gms_config.first_stage = first_stage_module.source.to_dict()
        self.first_stage = first_stage_module
        self.mapping = LatentMappingModel(**self.gms_config.mapping)
        supervised = self.gms_config.supervised_levels
        if not supervised or set(supervised) - set(self.mapping.level_names):
            raise ConfigError(
                f"supervised_levels {supervised} must be a non-empty subset of {self.mapping.level_names}"
            )
        if set(self.dice_levels) - set(supervised):
            raise ConfigError(f"dice_levels {self.dice_levels} must be a subset of supervised_levels {supervised}")
        from monai.losses import DiceLoss

        self.dice_loss = DiceLoss()

    @property
    def image_size(self) -> int:
        """The square size images are resized to before the first stage (the inference contract)."""
        return int(self.gms_config.image_size)

    @property
    def threshold(self) -> float:
        return float(self.gms_config.threshold)

    @property
    def dice_levels(self) -> list[str]:
        levels = self.gms_config.dice_levels
        return list(self.gms_config.supervised_levels if levels is None else levels)

    # ------------------------------------------------------------------ inference
    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled latent mean and log-variance of an image; no gradients (the first stage is frozen)."""
        with torch.no_grad():
            return self.first_stage.encode(image)

    def encode_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A {0,1} mask enters the autoencoder as three equal channels in [-1, 1], as in the release."""
        with torch.no_grad():
            return self.first_stage.encode(mask_to_image(mask))[0]

    def encode_pair(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(image latent mean, image log-variance or None, mask latent) from one first-stage call.

        Image and mask go through the encoder as one batch: per-sample arithmetic (convolutions,
        per-sample GroupNorm), one call instead of two.
        """
        with torch.no_grad():
            means, logvars = self.first_stage.encode(torch.cat([image, mask_to_image(mask)]))
        image_mean, mask_latent = means.chunk(2)
        return image_mean, None if logvars is None else logvars.chunk(2)[0], mask_latent

    def latent_to_probability(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode a mask latent to a foreground probability: mean over RGB, mapped to [0, 1]."""
        decoded = self.first_stage.decode(latent)
        return torch.clamp((decoded.mean(dim=1, keepdim=True) + 1.0) / 2.0, 0.0, 1.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W) for images in [-1, 1]."""
        latent, _ = self.encode(image)
        return self.map_to_probability(latent)

    def map_to_probability(self, image_latent: torch.Tensor) -> torch.Tensor:
        """Image latent -> foreground probability: only the 'out' head is evaluated, then decoded."""
        return self.latent_to_probability(self.mapping(image_latent, levels=["out"])["out"])

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Inference entry point: like ``forward`` but without building a graph."""
        return self.forward(image)

    # ------------------------------------------------------------------ training
    def noisy_latent(
        self, mean: torch.Tensor, logvar: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The release's latent augmentation: with probability p use s*mu + sigma*eps, sigma unscaled.

        The release adds exp(logvar/2) to the *scaled* mean without scaling sigma; we keep that exactly
        because the published numbers depend on it. Deterministic first stages (TAESD) have no variance.
        """
        if logvar is None or self.gms_config.noise_probability <= 0:
            return mean
        if torch.rand((), generator=generator).item() >= self.gms_config.noise_probability:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        return mean + torch.exp(0.5 * logvar) * noise

    def loss_from_latents(
        self,
        image_latent: torch.Tensor,
        mask_latent: torch.Tensor,
        mask: torch.Tensor | None,
        outputs: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Latent MSE + Dice of the decoded masks, summed over the supervised levels.

        All levels go through the decoder as one batch: the decoder dominates the cost and batching
        is the same arithmetic per sample (its GroupNorms are per sample). ``mask=None`` leaves the Dice
        term out (zero): the latent-only epochs train without the decoder in the loop.
        """
        levels = self.gms_config.supervised_levels
        if outputs is None:
            outputs = self.mapping(image_latent, levels=levels)
        loss_rec = sum(F.mse_loss(outputs[name], mask_latent) for name in levels)
        loss_dice = image_latent.new_zeros(())
        dice_levels = self.dice_levels
        if mask is not None and self.gms_config.dice_weight > 0 and dice_levels:
            probabilities = self.latent_to_probability(torch.cat([outputs[name] for name in dice_levels]))
            loss_dice = sum(self.dice_loss(p, mask) for p in probabilities.chunk(len(dice_levels)))
        loss_rec = self.gms_config.rec_weight * loss_rec
        loss_dice = self.gms_config.dice_weight * loss_dice
        return {"loss": loss_rec + loss_dice, "loss_rec": loss_rec, "loss_dice": loss_dice}

    def training_loss(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """One training step's loss from pixels (image in [-1, 1], mask in {0, 1})."""
        mean, logvar, mask_latent = self.encode_pair(image, mask)
        return self.loss_from_latents(self.noisy_latent(mean, logvar, generator), mask_latent, mask)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | Path, *, include_first_stage: bool = False, **kwargs: Any
    ) -> str | None:
        """Write ``config.json`` + ``model.safetensors``; ``include_first_stage`` also stores the
        autoencoder in ``first_stage/`` so the folder works offline and on machines without the source."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        config = self.gms_config.to_dict()
        if include_first_stage:
            self.first_stage.save_pretrained(save_directory / FIRST_STAGE_DIR)
            config["first_stage"] = {"kind": "diffusers", "path": FIRST_STAGE_DIR}
        return super().save_pretrained(save_directory, config=config, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_model

        # save_model de-duplicates the PReLU weights the release registers under two names.
        from .fileio import atomic_save_file

        atomic_save_file(
            Path(save_directory) / WEIGHTS_NAME, lambda name: save_model(self.mapping, name, metadata={"format": "pt"})
        )

    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        config: dict[str, Any] | None = None,
        first_stage_module: FirstStage | None = None,
        **unused: Any,
    ) -> GMS:
        folder = Path(model_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(
                    repo_id=model_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    local_files_only=local_files_only,
                    token=token,
                )
            )
        if config is None:
            raise CheckpointError(f"{folder} has no config.json: it is not a gmseg model folder.")
        gms_config = GMSConfig.from_dict(config)
        if first_stage_module is None:
            first_stage_module = load_first_stage(
                gms_config.first_stage, base_dir=folder, local_files_only=local_files_only
            )
        model = cls(gms_config, first_stage_module=first_stage_module)
        # Keep the stored (possibly folder-relative) source so a re-save stays portable.
        model.gms_config.first_stage = dict(config["first_stage"])
        load_mapping_weights(model.mapping, folder / WEIGHTS_NAME, strict=strict)
        model.to(map_location)
        model.eval()
        return model


def load_mapping_weights(mapping: LatentMappingModel, path: Path, strict: bool = True) -> None:
    from safetensors.torch import load_model

    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the model folder holds no weights.")
    try:
        load_model(mapping, str(path), strict=strict)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(
            f"{path} cannot be loaded into the mapping model described by config.json: {error}"
        ) from error


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    """{0,1} mask (B,1,H,W) -> the 3-channel [-1,1] image the autoencoder expects."""
    return (2.0 * mask - 1.0).expand(-1, 3, -1, -1)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def read_model_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, with an error naming the file and what is wrong with it."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{folder} is not a gmseg model folder (expected config.json and model.safetensors). Create one "
            "with 'gmseg train' or 'gmseg import-official'."
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); restore it from the run's checkpoints.") from error
    try:
        GMSConfig.from_dict(config)
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    return config


def load_model(path: str | os.PathLike, first_stage: FirstStage | None = None, **kwargs: Any) -> Any:
    """A model folder as a model: a U-Net baseline run folder, else ``GMS.from_pretrained`` (with an error
    naming the path when it is neither)."""
    path_text = str(path)
    if os.path.isdir(path_text):
        from .baseline import is_unet_folder, load_unet_model

        if is_unet_folder(path_text):
            return load_unet_model(path_text)
        read_model_config(Path(path_text))  # a clear error for a missing or broken config.json
    elif os.path.exists(path_text) or not HUB_ID.match(path_text):
        why = "it is a file" if os.path.exists(path_text) else "it does not exist, and is not a Hub id (owner/name)"
        raise CheckpointError(
            f"{path_text} is not a gmseg model folder ({why}); a model folder holds config.json and "
            "model.safetensors, or is a U-Net run folder. Create one with 'gmseg train' or 'gmseg import-official'."
        )
    elif not hub_reachable():
        kwargs["local_files_only"] = True  # offline: the Hub cache, or the error below without retries
    try:
        return GMS.from_pretrained(path_text, first_stage_module=first_stage, **kwargs)
    except (OSError, ValueError) as error:  # Hub errors (offline, unknown repo) derive from these
        if isinstance(error, CheckpointError | ConfigError):
            raise
        raise CheckpointError(
            f"{path_text!r} is not a local folder, and the Hugging Face Hub could not provide it "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). Check the path, or "
            "pass a local model folder."
        ) from error
