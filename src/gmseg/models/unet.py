"""A discriminative baseline for GMS: MONAI's residual U-Net on pixels, Dice + BCE (``model.name: unet``);
with K > 2 classes, K output channels, softmax, Dice (foreground classes) + cross-entropy.

It is trained by the same trainer as GMS (same split, augmentation, input normalisation, lr schedule,
model selection and logs), predicted and scored by the same verbs, so a comparison differs only in the
method. Its model folder is ``config.json`` (MONAI ``UNet`` keyword arguments, with MONAI's defaults
written out so a folder rebuilds the same network under a future MONAI) + ``model.safetensors``.
Run folders of the former ``python -m gmseg.baseline`` (``unet_config.json`` + ``best.safetensors``)
still load for prediction and testing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..config import INTENSITIES
from ..errors import CheckpointError, ConfigError
from ..labels import BINARY, LabelSet
from .base import CLASS_KEY, Autocast, SegmentationModel, load_weights, save_weights

DEFAULT_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256)
THRESHOLD = 0.5
LEGACY_CONFIG_NAME = "unet_config.json"
LEGACY_WEIGHTS_NAME = "best.safetensors"


@dataclass
class UNetOptions:
    """The ``model`` section of a run config for the U-Net."""

    name: str = "unet"
    channels: list[int] = field(default_factory=lambda: list(DEFAULT_CHANNELS))
    num_res_units: int = 2

    def problems(self) -> list[str]:
        found = []
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            found.append(
                f"model.channels must be at least two positive integers, e.g. [16, 32, 64]; got {self.channels}"
            )
        if self.num_res_units < 0:
            found.append(f"model.num_res_units must be >= 0, got {self.num_res_units}")
        return found


def unet_arguments(
    channels: Sequence[int],
    image_size: int,
    num_res_units: int = 2,
    labels: LabelSet = BINARY,
    intensity: str = "none",
) -> dict[str, Any]:
    """The model folder's config: ``monai.networks.nets.UNet`` keyword arguments + the inference facts
    (+ ``labels`` for more than two classes and ``intensity`` when not none: a default config is what it
    always was)."""
    channels = [int(c) for c in channels]
    if len(channels) < 2 or any(c < 1 for c in channels):
        raise ConfigError(f"U-Net channels must be at least two positive integers, e.g. 16,32,64; got {channels}")
    levels = len(channels) - 1
    if image_size % (2**levels):
        raise ConfigError(
            f"data.image_size {image_size} must be divisible by 2^{levels} = {2**levels} for a U-Net with "
            f"{len(channels)} channel levels; use fewer channel levels or another image size."
        )
    config: dict[str, Any] = {
        "unet": {
            "spatial_dims": 2,
            "in_channels": 3,
            "out_channels": 1 if labels.is_binary else labels.num_classes,
            "channels": channels,
            "strides": [2] * levels,
            "kernel_size": 3,
            "up_kernel_size": 3,
            "num_res_units": int(num_res_units),
            "act": "PRELU",
            "norm": "INSTANCE",
            "dropout": 0.0,
            "bias": True,
            "adn_ordering": "NDA",
        },
        "image_size": int(image_size),
        "input": "rgb / 255 * 2 - 1",
        "output": "one logit per pixel; foreground = sigmoid > threshold",
        "threshold": THRESHOLD,
    }
    if not labels.is_binary:
        config["output"] = "one logit per class and pixel; class = argmax of the softmax"
        config["labels"] = labels.to_labels()
    if intensity != "none":
        config["intensity"] = intensity
    return config


def build_unet(config: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import UNet as MonaiUNet

    kwargs = dict(config["unet"])
    for key in ("channels", "strides"):
        kwargs[key] = tuple(kwargs[key])
    return MonaiUNet(**kwargs)


def check_unet_config(config: Any, where: str) -> dict[str, Any]:
    """A stored U-Net description, with an error naming the file when it is not one."""
    try:
        config["unet"]["channels"]
        int(config["image_size"])
        if config.get("intensity", "none") not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}, got {config['intensity']!r}")
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where} is not a U-Net description ({type(error).__name__}: {error}).") from error
    return config


class UNet(SegmentationModel, PyTorchModelHubMixin, library_name="gmseg", tags=["medical-image-segmentation"]):
    """MONAI's U-Net behind gmseg's model contract: one logit per pixel, Dice + BCE."""

    name = "unet"
    Options = UNetOptions

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        self.unet_config = check_unet_config(config or unet_arguments(DEFAULT_CHANNELS, 224), "the U-Net config")
        self.net = build_unet(self.unet_config)
        labels = self.unet_config.get("labels")
        self.labels = BINARY if labels is None else LabelSet.from_labels(labels)
        if int(self.unet_config["unet"]["out_channels"]) != (1 if self.labels.is_binary else self.labels.num_classes):
            raise CheckpointError(
                f"the U-Net config has {self.unet_config['unet']['out_channels']} output channels but "
                f"{self.labels.num_classes} classes {list(self.labels.names)}"
            )
        from monai.losses import DiceLoss

        self.dice_loss = (
            DiceLoss(sigmoid=True)
            if self.labels.is_binary
            else DiceLoss(softmax=True, to_onehot_y=True, include_background=False)
        )

    @classmethod
    def from_run_config(cls, config: Any, labels: LabelSet = BINARY) -> UNet:
        options = config.model
        return cls(
            unet_arguments(
                options.channels, config.data.image_size, options.num_res_units, labels, config.data.intensity
            )
        )

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Foreground probability (sigmoid), or the K class probabilities (softmax over channels)."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.labels.is_binary else torch.softmax(logits, dim=1)

    @property
    def trainable(self) -> nn.Module:
        return self.net

    @property
    def image_size(self) -> int:
        return int(self.unet_config["image_size"])

    @property
    def intensity(self) -> str:
        return str(self.unet_config.get("intensity", "none"))

    @property
    def threshold(self) -> float:
        return float(self.unet_config.get("threshold", THRESHOLD))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W), or K class probabilities (B, K, H, W), for images in [-1, 1]."""
        return self.probabilities(self.net(image))

    def training_loss(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        net: nn.Module | None = None,
        autocast: Autocast = nullcontext,
    ) -> dict[str, torch.Tensor]:
        """MONAI DiceLoss(sigmoid) + BCE-with-logits (what ``DiceCELoss(sigmoid=True)`` computes), in parts;
        the loss is computed in float32 outside mixed precision."""
        with autocast():
            logits = (net or self.net)(image)
        logits = logits.float()
        if self.labels.is_binary:
            bce = F.binary_cross_entropy_with_logits(logits, mask)
        else:  # the mask holds class indices
            bce = F.cross_entropy(logits, mask[:, 0].round().long())
        dice = self.dice_loss(logits, mask)
        return {"loss": bce + dice, "loss_rec": bce, "loss_dice": dice}

    def validation_probabilities(
        self, inputs: torch.Tensor, net: nn.Module | None = None, autocast: Autocast = nullcontext
    ) -> torch.Tensor:
        with autocast():
            logits = (net or self.net)(inputs)
        return self.probabilities(logits)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "channels": self.unet_config["unet"]["channels"]}

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> str | None:  # type: ignore[override]
        from .. import __version__

        config = {CLASS_KEY: type(self).__name__, **self.unet_config, "gmseg_version": __version__}
        return super().save_pretrained(save_directory, config=config, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        save_weights(self.net, Path(save_directory))

    @classmethod
    def _from_pretrained(  # type: ignore[override]
        cls,
        *,
        model_id: str,
        config: dict[str, Any] | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **hub: Any,
    ) -> UNet:
        from .base import resolve_folder

        folder = resolve_folder(model_id, **hub)
        if config is None:
            raise CheckpointError(f"{folder} has no config.json: it is not a gmseg model folder.")
        stored = {k: v for k, v in config.items() if k not in (CLASS_KEY, "gmseg_version")}
        model = cls(check_unet_config(stored, str(folder / "config.json")))
        model.load_trainable_weights(folder, strict=strict)
        return model.to(map_location).eval()


def is_legacy_unet_folder(path: str | os.PathLike) -> bool:
    """A run folder of the former baseline trainer (``unet_config.json`` beside ``best.safetensors``)."""
    return (Path(path) / LEGACY_CONFIG_NAME).is_file()


def load_legacy_unet(run_dir: str | os.PathLike) -> UNet:
    """The best U-Net of a former baseline run folder (safetensors only: nothing is unpickled)."""
    folder = Path(run_dir)
    path = folder / LEGACY_CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is unreadable or not a U-Net description: {error}") from error
    model = UNet(check_unet_config(config, str(path)))
    weights = folder / LEGACY_WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing: the run has not finished an epoch yet.")
    load_weights(model.net, weights)
    return model.eval()
