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
* a model folder, written and read here for every model (diffusers' idea: the model's config is the folder's
  ``config.json``, naming its class in ``_class_name``) + ``model.safetensors`` with the weights of
  ``saved_module`` (the trainable part; frozen parts are recorded in the config instead). A subclass says
  only what differs, through the hooks ``to_config`` / ``from_config`` / ``config_problems`` (its config
  and schema), ``saved_module`` and ``save_artefacts`` (other files, e.g. GMS's first stage);
  ``gmseg.models.load_model`` dispatches on the stored class;
* ``from_run_config(config, labels)``: the model built from a run config's ``model`` section, read as its own
  options dataclass ``Options`` by ``run_options`` (the config keeps the section as a mapping: settings do
  not know the model classes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..config import named_section, raise_problems
from ..errors import CheckpointError, ConfigError
from ..labels import BINARY, LabelSet

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CLASS_KEY = "_class_name"
VERSION_KEY = "gmseg_version"

Autocast = Callable[[], AbstractContextManager]


class SegmentationModel(nn.Module, PyTorchModelHubMixin, library_name="gmseg", tags=["medical-image-segmentation"]):
    """Base class: subclasses set ``name`` (the registry key and ``model.name``) and ``Options``, and the
    model-folder hooks below. The Hub mixin contributes the model card and ``push_to_hub``."""

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
    def run_options(cls, config: Any) -> Any:
        """This model's ``Options`` from the run config's ``model`` section: every key and type, then the
        ranges checked, each problem a :class:`~gmseg.errors.ConfigError`."""
        options = named_section("model", config.model, {cls.name: cls}, cls.name)
        raise_problems(options.problems())
        return options

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
        """``folder/model.safetensors`` into the saved module (safetensors only: nothing is unpickled)."""
        if self.saved_module is not None:
            load_weights(self.saved_module, Path(folder) / WEIGHTS_NAME, strict=strict)

    # ------------------------------------------------------------------ model-folder hooks
    @staticmethod
    def config_problems(config: dict[str, Any]) -> list[str]:
        """The schema of the folder's config.json (without ``_class_name`` / ``gmseg_version``): every problem,
        key by key, so one error names them all before anything is built. Default: none checked."""
        return []

    def to_config(self) -> dict[str, Any]:
        """What config.json stores: everything :meth:`from_config` needs to rebuild this model."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: Path, **options: Any) -> SegmentationModel:
        """The model a checked config.json describes, before its weights are loaded. ``folder`` resolves what
        the config names relative to it; ``options`` are the loading keywords beyond the Hub's and torch's
        (``local_files_only``; GMS: ``first_stage_module``): a class takes those it needs."""
        raise NotImplementedError

    @property
    def saved_module(self) -> nn.Module | None:
        """The module whose weights are ``model.safetensors``: the trainable part, since frozen parts are
        recorded in the config (GMS's first stage) rather than copied; None: the folder has no weights file."""
        return self.trainable

    def save_artefacts(self, folder: Path) -> dict[str, Any]:
        """Write the folder's other files (a subclass's ``save_pretrained`` options arrive here) and return
        the config keys they change. Default: none."""
        return {}

    @classmethod
    def from_legacy_folder(cls, folder: Path) -> SegmentationModel | None:
        """A folder of a former format without config.json, as this class; None when it is not one."""
        return None

    # ------------------------------------------------------------------ model folder
    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | Path,
        *,
        config: None = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> str | None:
        """Write ``config.json`` (``to_config`` + ``_class_name`` + ``gmseg_version``), ``model.safetensors``,
        the subclass's artefacts (``options``) and a model card; ``push_to_hub`` uploads the folder."""
        if config is not None:
            raise ConfigError("a gmseg model folder's config.json is the model's own (to_config); leave config out")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        from .. import __version__

        stored = {**self.to_config(), **self.save_artefacts(folder, **options)}
        stored.update({CLASS_KEY: type(self).__name__, VERSION_KEY: __version__})
        return super().save_pretrained(
            folder, config=stored, push_to_hub=push_to_hub, repo_id=repo_id, model_card_kwargs=model_card_kwargs
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        """``model.safetensors`` (the Hub mixin calls this before it writes config.json)."""
        if self.saved_module is not None:
            save_weights(self.saved_module, Path(save_directory))

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **options: Any,
    ) -> Any:
        """A model folder (local, or a Hub id downloaded whole) of this class: config.json checked by
        ``config_problems``, the model built by ``from_config``, then the weights (safetensors only)."""
        folder = resolve_folder(
            str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        stored = read_folder_config(folder)
        path = folder / CONFIG_NAME
        name = stored_class_name(stored, path)
        if name is not None and name != cls.__name__:
            raise CheckpointError(
                f"{path} describes a {name} model, not a {cls.__name__}; load it with gmseg.models.load_model"
            )
        config = config_body(stored)
        problems = cls.config_problems(config)
        if problems:
            raise ConfigError(f"{path}: " + "; ".join(problems) + "; fix these keys or restore the file from its run")
        model = cls.from_config(config, folder, local_files_only=local_files_only, **options)
        model.load_trainable_weights(folder, strict=strict)
        return model.to(map_location).eval()


def read_folder_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a JSON object, with an error naming the file (its schema is the class's)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{folder} is not a gmseg model folder (expected config.json and model.safetensors). Create one "
            "with 'gmseg train' or 'gmseg import-official'."
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); restore it from the run's checkpoints.") from error
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a model config must be a JSON object, got {type(config).__name__}")
    return config


def stored_class_name(config: dict[str, Any], path: Path) -> str | None:
    """The class a stored config names; None for folders written before ``_class_name`` existed."""
    name = config.get(CLASS_KEY)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{path}: {CLASS_KEY} must be a string naming the model class, got {name!r}")
    return name


def config_body(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config without the folder's bookkeeping (class name, gmseg version): what the class reads."""
    return {key: value for key, value in config.items() if key not in (CLASS_KEY, VERSION_KEY)}


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
