"""The contract every segmentation model of gmseg keeps, so one trainer, predictor and evaluator serve all.

A model is an ``nn.Module`` with:

* ``labels``: its classes (:class:`gmseg.labels.LabelSet`, binary by default);
* ``predict_proba(images)``: foreground probability (B, 1, H, W) for images in [-1, 1], no graph; with
  more than two classes the K class probabilities (B, K, H, W);
* ``image_size``, ``intensity`` and ``threshold``: the inference contract (square resize, histogram
  standardisation, binarisation);
* ``trainable``: the sub-module the optimizer trains (GMS: the mapping; the U-Net: all of it), which the
  trainer hands to accelerate and passes back as ``net`` (possibly DDP-wrapped);
* ``training_loss(image, mask, generator, net, autocast)``: ``{"loss", "loss_rec", "loss_dice"}``, the
  mask being the label set's target (binary {0, 1}, else class indices);
* ``validation_inputs(image)`` (cached once per run) and ``validation_probabilities(inputs, net, autocast)``;
* a model folder: ``config.json`` naming its class (``_class_name``) + ``model.safetensors`` with the
  trainable weights; ``gmseg.models.load_model`` dispatches on the stored class;
* ``from_run_config(config, labels)``: the model built from a run config's ``model`` section (its own options
  dataclass, ``Options``, checked when the config is read).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import CheckpointError
from ..labels import BINARY, LabelSet

WEIGHTS_NAME = "model.safetensors"
CLASS_KEY = "_class_name"

Autocast = Callable[[], AbstractContextManager]


class SegmentationModel(nn.Module):
    """Base class: subclasses set ``name`` (the registry key and ``model.name``) and ``Options``."""

    name: ClassVar[str]
    Options: ClassVar[type]
    labels: LabelSet = BINARY

    @property
    def trainable(self) -> nn.Module:
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def intensity(self) -> str:
        """The histogram standardisation every input gets (``data.intensity`` of its training)."""
        return "none"

    @property
    def volume_input(self) -> Any:
        """How a volume's voxels become this model's input (:class:`gmseg.data.normalization.VolumeInput`,
        recorded by training on volumes), or None for a model trained on 2D images."""
        return None

    def record_volume_input(self, record: Any) -> None:
        """Keep ``record`` (a VolumeInput) in the model folder's config.json, so prediction repeats it."""
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        raise NotImplementedError

    @classmethod
    def from_run_config(cls, config: Any, labels: LabelSet = BINARY) -> SegmentationModel:
        raise NotImplementedError

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inference_stages(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
        """(prepare, head) with ``head(prepare(images)) == predict_proba(images)``: ``torch.compile`` takes
        only ``head`` (a frozen encoder gains nothing from it). Default: the whole model is the head."""
        return (lambda image: image), self.predict_proba

    def training_loss(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        net: nn.Module | None = None,
        autocast: Autocast = nullcontext,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validation_inputs(self, image: torch.Tensor) -> torch.Tensor:
        """What validation feeds ``validation_probabilities``; computed once per run (no augmentation)."""
        return image

    def validation_probabilities(
        self, inputs: torch.Tensor, net: nn.Module | None = None, autocast: Autocast = nullcontext
    ) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A few facts for run_info.json and benchmark tables."""
        return {"model": self.name, "trainable_parameters": count_trainable(self.trainable)}

    def load_trainable_weights(self, folder: Path, strict: bool = True) -> None:
        """``folder/model.safetensors`` into the trainable module (safetensors only: nothing is unpickled)."""
        load_weights(self.trainable, Path(folder) / WEIGHTS_NAME, strict=strict)


def load_weights(module: nn.Module, path: Path, strict: bool = True) -> None:
    from safetensors.torch import load_model

    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the model folder holds no weights.")
    try:
        load_model(module, str(path), strict=strict)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} cannot be loaded into the model described by config.json: {error}") from error


def save_weights(module: nn.Module, folder: Path) -> None:
    """``folder/model.safetensors`` written atomically; save_model de-duplicates shared tensors."""
    from safetensors.torch import save_model

    from ..fileio import atomic_save_file

    atomic_save_file(Path(folder) / WEIGHTS_NAME, lambda name: save_model(module, name, metadata={"format": "pt"}))


def count_trainable(module: nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in module.parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def resolve_folder(
    model_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    **unused: Any,
) -> Path:
    """A local model folder as is; a Hub id downloaded (or found in the cache) with huggingface_hub."""
    folder = Path(model_id)
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            repo_id=model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
    )
