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
from torch import nn

from ..bounds import MAX_IMAGE_SIZE
from ..data.transforms import INTENSITIES
from ..errors import CheckpointError, ConfigError
from ..labels import BINARY, LabelSet
from .base import Autocast, SegmentationModel, load_weights

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


#: The keys of a U-Net model folder's config.json, beside ``_class_name`` and ``gmseg_version``.
UNET_KEYS = ("unet", "image_size", "input", "output", "threshold", "labels", "intensity", "volume")
#: ``monai.networks.nets.UNet`` keyword arguments a folder may hold.
MONAI_KEYS = (
    "spatial_dims", "in_channels", "out_channels", "channels", "strides", "kernel_size", "up_kernel_size",
    "num_res_units", "act", "norm", "dropout", "bias", "adn_ordering",
)  # fmt: skip
MAX_WIDTH = 4096


def _integer(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _monai_problems(unet: Any) -> list[str]:
    """What is wrong with the stored ``unet`` section (MONAI ``UNet`` keyword arguments), key by key."""
    if not isinstance(unet, dict):
        return [f"unet must be a JSON object of MONAI UNet arguments, got {unet!r}"]
    found = [
        f"unet.{key} is not a MONAI UNet argument gmseg stores (valid: {list(MONAI_KEYS)})"
        for key in unet
        if key not in MONAI_KEYS
    ]
    found += [f"unet.{key} is missing" for key in ("channels", "strides", "out_channels") if key not in unet]
    if unet.get("spatial_dims", 2) != 2 or unet.get("in_channels", 3) != 3:
        found.append("unet.spatial_dims must be 2 and unet.in_channels 3 (RGB images)")
    if "out_channels" in unet and not _integer(unet["out_channels"], 1, 256):
        found.append(f"unet.out_channels must be an integer in [1, 256], got {unet['out_channels']!r}")
    channels = unet.get("channels")
    if "channels" in unet and not (
        isinstance(channels, list) and 2 <= len(channels) <= 8 and all(_integer(c, 1, MAX_WIDTH) for c in channels)
    ):
        found.append(f"unet.channels must be 2 to 8 integers in [1, {MAX_WIDTH}], got {channels!r}")
    strides = unet.get("strides")
    if "strides" in unet and not (
        isinstance(strides, list)
        and isinstance(channels, list)
        and len(strides) == len(channels) - 1
        and all(_integer(s, 1, 4) for s in strides)
    ):
        found.append(f"unet.strides must be one integer in [1, 4] per channel level but the first, got {strides!r}")
    for key in ("kernel_size", "up_kernel_size"):
        if key in unet and not (_integer(unet[key], 1, 9) and unet[key] % 2):
            found.append(f"unet.{key} must be an odd integer in [1, 9], got {unet[key]!r}")
    if "num_res_units" in unet and not _integer(unet["num_res_units"], 0, 16):
        found.append(f"unet.num_res_units must be an integer in [0, 16], got {unet['num_res_units']!r}")
    dropout = unet.get("dropout", 0.0)
    if not (isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        found.append(f"unet.dropout must be a number in [0, 1), got {dropout!r}")
    for key in ("act", "norm", "adn_ordering"):
        if key in unet and not isinstance(unet[key], str):
            found.append(f"unet.{key} must be a string, got {unet[key]!r}")
    if "bias" in unet and not isinstance(unet["bias"], bool):
        found.append(f"unet.bias must be true or false, got {unet['bias']!r}")
    return found


def unet_config_problems(config: Any) -> list[str]:
    """One schema for a U-Net model folder's config.json: types, ranges and unknown keys, key by key."""
    if not isinstance(config, dict):
        return [f"a U-Net config must be a JSON object, got {type(config).__name__}"]
    found = [f"{key} is not a U-Net config key (valid: {list(UNET_KEYS)})" for key in config if key not in UNET_KEYS]
    if "unet" not in config:
        found.append("unet is missing (the MONAI UNet arguments)")
    else:
        found += _monai_problems(config["unet"])
    size = config.get("image_size")
    levels = len(config["unet"]["strides"]) if not found and "strides" in config["unet"] else 0
    if not _integer(size, 8, MAX_IMAGE_SIZE):
        found.append(f"image_size must be an integer in [8, {MAX_IMAGE_SIZE}], got {size!r}")
    elif levels and size % (2**levels):
        found.append(f"image_size {size} must be divisible by 2^{levels} = {2**levels} (the U-Net's levels)")
    threshold = config.get("threshold", THRESHOLD)
    if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0.0 < threshold < 1.0):
        found.append(f"threshold must be a probability strictly between 0 and 1, got {threshold!r}")
    if config.get("intensity", "none") not in INTENSITIES:
        found.append(f"intensity must be one of {INTENSITIES}, got {config.get('intensity')!r}")
    for key in ("input", "output"):
        if key in config and not isinstance(config[key], str):
            found.append(f"{key} must be a string (a description), got {config[key]!r}")
    if config.get("labels") is not None:
        try:
            LabelSet.from_labels(config["labels"])
        except ConfigError as error:
            found.append(f"labels: {error}")
    if config.get("volume") is not None:  # trained on volumes: how voxels become its input
        from ..data.normalization import VolumeInput

        try:
            VolumeInput.from_dict(config["volume"])
        except (ConfigError, TypeError) as error:
            found.append(f"volume: {error}")
    return found


def check_unet_config(config: Any, where: str) -> dict[str, Any]:
    """A stored U-Net description, with an error naming the file and every bad key when it is not one."""
    problems = unet_config_problems(config)
    if problems:
        raise ConfigError(f"{where}: invalid U-Net config: " + "; ".join(problems))
    return config


class UNet(SegmentationModel):
    """MONAI's U-Net behind gmseg's model contract: one logit per pixel, Dice + BCE."""

    name = "unet"
    Options = UNetOptions

    @staticmethod
    def config_problems(config: dict[str, Any]) -> list[str]:
        """The model folder's config.json schema (:func:`unet_config_problems`), checked where it is loaded."""
        return unet_config_problems(config)

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
        options = cls.run_options(config)
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
    def volume_input(self) -> Any:
        from ..data.normalization import VolumeInput

        record = self.unet_config.get("volume")
        return None if record is None else VolumeInput.from_dict(record)

    def record_volume_input(self, record: Any) -> None:
        self.unet_config["volume"] = record.to_dict()

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

    # ------------------------------------------------------------------ model folder (the base's hooks)
    def to_config(self) -> dict[str, Any]:
        return dict(self.unet_config)

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: Path, **not_needed: Any) -> UNet:
        """The network the stored MONAI arguments describe; loading keywords of other models (a first stage,
        Hub options) do not concern it."""
        return cls(config)

    @classmethod
    def from_legacy_folder(cls, folder: Path) -> UNet | None:
        """A run folder of the former baseline trainer, as its best U-Net."""
        return load_legacy_unet(folder) if is_legacy_unet_folder(folder) else None


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
