"""Every model gmseg trains, predicts and scores, behind one contract (:class:`SegmentationModel`).

A new model is one module with a :class:`SegmentationModel` subclass (and its ``Options`` dataclass, the
``model`` section of a run config) plus one line in :data:`MODELS`. Model folders name their class in
``config.json`` (``_class_name``) and :func:`load_model` dispatches on it.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..config import DEFAULT_MODEL, named_section, raise_problems
from ..errors import CheckpointError, ConfigError, GmsegError
from ..labels import BINARY, LabelSet
from .base import (
    CLASS_KEY,
    CONFIG_NAME,
    WEIGHTS_NAME,
    SegmentationModel,
    config_body,
    count_trainable,
    read_folder_config,
    resolve_folder,
    stored_class_name,
)
from .exported import ExportedModel
from .gms import GMS, GMSConfig, GMSOptions
from .unet import UNet, UNetOptions

#: model.name -> class. One line per model.
MODELS: dict[str, type[SegmentationModel]] = {"gms": GMS, "unet": UNet}
#: config.json's _class_name -> class.
BY_CLASS_NAME = {cls.__name__: cls for cls in MODELS.values()}
BY_CLASS_NAME[ExportedModel.__name__] = ExportedModel  # gmseg export's folders: inference only, not a model.name
#: The class of folders without _class_name: every folder written before the U-Net existed was a GMS.
UNNAMED_CLASS = GMS.__name__
#: The keywords of :func:`load_model` that find a Hub model's files (the rest go to the class).
HUB_KEYWORDS = ("revision", "cache_dir", "force_download", "local_files_only", "token")

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

__all__ = [
    "CLASS_KEY",
    "GMS",
    "ExportedModel",
    "MODELS",
    "WEIGHTS_NAME",
    "GMSConfig",
    "GMSOptions",
    "SegmentationModel",
    "UNet",
    "UNetOptions",
    "build_model",
    "count_trainable",
    "load_model",
    "model_class",
    "model_options",
    "read_model_config",
    "with_model_options",
]


def model_class(name: str) -> type[SegmentationModel]:
    """The class registered as ``model.name``; an error listing the names otherwise."""
    if name not in MODELS:
        raise ConfigError(f"model.name {name!r} is not a gmseg model; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def model_options(config: Any) -> Any:
    """The run config's ``model`` section as the ``Options`` of the model it names (every key, type and
    range checked, each problem a :class:`~gmseg.errors.ConfigError`). Naming another model
    (``--set model.name=unet`` on a GMS config) drops the options only the others have."""
    options = named_section("model", config.model, MODELS, DEFAULT_MODEL)
    raise_problems(options.problems())
    return options


def with_model_options(config: Any) -> Any:
    """``config`` with its ``model`` section checked and completed with the model's defaults (what a run's
    config.yaml records, so that a run folder says every option it was trained with)."""
    return replace(config, model=asdict(model_options(config)))


def build_model(config: Any, labels: LabelSet = BINARY) -> SegmentationModel:
    """A fresh model as the run config's ``model`` section describes it, for the dataset's ``labels``. The
    section is completed first: a switched one (``--set model.name=unet`` on a GMS config) then holds only the
    named model's options, which is what that model's ``run_options`` reads."""
    config = with_model_options(config)
    return model_class(config.model["name"]).from_run_config(config, labels)


def stored_class(config: dict[str, Any], path: Path) -> type[SegmentationModel]:
    """The class a stored config.json names, with an error naming the file and the known classes."""
    name = stored_class_name(config, path) or UNNAMED_CLASS
    if name not in BY_CLASS_NAME:
        raise CheckpointError(
            f"{path} names the model class {name!r}, which this gmseg does not know (known: "
            f"{', '.join(sorted(BY_CLASS_NAME))}); upgrade gmseg or use a folder it made."
        )
    return BY_CLASS_NAME[name]


def read_model_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, checked by its class, with an error naming the file."""
    config = read_folder_config(folder)
    path = Path(folder) / CONFIG_NAME
    problems = stored_class(config, path).config_problems(config_body(config))
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems) + "; fix these keys or restore the file from its run")
    return config


def local_folder(path_text: str, kwargs: dict[str, Any]) -> Path:
    """The folder ``path_text`` stands for: a model folder as is, a run folder's best model, a Hub id's
    snapshot (from the cache when offline); an error naming the path when it is none of these."""
    if os.path.isdir(path_text) and not os.path.isfile(os.path.join(path_text, CONFIG_NAME)):
        best = os.path.join(path_text, "checkpoints", "best")
        if os.path.isfile(os.path.join(best, CONFIG_NAME)):  # a run folder stands for its best model
            return Path(best)
    if os.path.isdir(path_text):
        return Path(path_text)
    if os.path.exists(path_text) or not HUB_ID.match(path_text):
        why = "it is a file" if os.path.exists(path_text) else "it does not exist, and is not a Hub id (owner/name)"
        raise CheckpointError(
            f"{path_text} is not a gmseg model folder ({why}); a model folder holds config.json and "
            "model.safetensors. Create one with 'gmseg train' or 'gmseg import-official'."
        )
    from ..hub import hub_reachable

    if not hub_reachable():
        kwargs["local_files_only"] = True  # offline: the Hub cache, or the error below without retries
    return resolve_folder(path_text, **{key: kwargs[key] for key in HUB_KEYWORDS if key in kwargs})


def load_model(path: str | os.PathLike, first_stage: Any = None, **kwargs: Any) -> SegmentationModel:
    """A model folder (local or a Hub id) as a model of its stored class; a run folder as its best model; a
    folder of a former format as the class that reads it. ``first_stage``: an autoencoder already loaded,
    for a model that has one (checked against the folder's record); ``kwargs`` go to ``from_pretrained``."""
    path_text = str(path)
    if first_stage is not None:
        kwargs["first_stage_module"] = first_stage
    try:
        folder = local_folder(path_text, kwargs)
        if not (folder / CONFIG_NAME).is_file():
            for cls in BY_CLASS_NAME.values():
                if (legacy := cls.from_legacy_folder(folder)) is not None:
                    return legacy
        cls = stored_class(read_model_config(folder), folder / CONFIG_NAME)
        return cls.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as error:  # Hub errors (offline, unknown repo) derive from these
        if isinstance(error, GmsegError) or os.path.isdir(path_text):
            raise  # a local folder's problem is its own, never the Hub's
        from ..hub import unavailable_reason

        why = unavailable_reason(path_text) or (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
        raise CheckpointError(
            f"{path_text!r} is not a local folder, and the Hugging Face Hub could not provide it ({why}). Check "
            "the path, or pass a local model folder."
        ) from error
