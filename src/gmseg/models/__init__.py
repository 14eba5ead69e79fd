"""Every model gmseg trains, predicts and scores, behind one contract (:class:`SegmentationModel`).

A new model is one module with a :class:`SegmentationModel` subclass (and its ``Options`` dataclass, the
``model`` section of a run config) plus one line in :data:`MODELS`. Model folders name their class in
``config.json`` (``_class_name``) and :func:`load_model` dispatches on it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..labels import BINARY, LabelSet
from .base import CLASS_KEY, WEIGHTS_NAME, SegmentationModel, count_trainable
from .exported import ExportedModel
from .gms import GMS, GMSConfig, GMSOptions
from .unet import UNet, UNetOptions, is_legacy_unet_folder, load_legacy_unet

#: model.name -> class. One line per model.
MODELS: dict[str, type[SegmentationModel]] = {"gms": GMS, "unet": UNet}
#: config.json's _class_name -> class; folders without one are GMS (all folders before the U-Net had one).
BY_CLASS_NAME = {cls.__name__: cls for cls in MODELS.values()}
BY_CLASS_NAME[ExportedModel.__name__] = ExportedModel  # gmseg export's folders: inference only, not a model.name

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
    "read_model_config",
]


def model_class(name: str) -> type[SegmentationModel]:
    """The class registered as ``model.name``; an error listing the names otherwise."""
    if name not in MODELS:
        raise ConfigError(f"model.name {name!r} is not a gmseg model; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(config: Any, labels: LabelSet = BINARY) -> SegmentationModel:
    """A fresh model as the run config's ``model`` section describes it, for the dataset's ``labels``."""
    return model_class(config.model.name).from_run_config(config, labels)


def stored_class(config: dict[str, Any], path: Path) -> type[SegmentationModel]:
    name = config.get(CLASS_KEY, GMS.__name__)
    if not isinstance(name, str):
        raise ConfigError(
            f"{path}: {CLASS_KEY} must be a string naming the model class (one of "
            f"{', '.join(sorted(BY_CLASS_NAME))}), got {name!r}"
        )
    if name not in BY_CLASS_NAME:
        raise CheckpointError(
            f"{path} names the model class {name!r}, which this gmseg does not know (known: "
            f"{', '.join(sorted(BY_CLASS_NAME))}); upgrade gmseg or use a folder it made."
        )
    return BY_CLASS_NAME[name]


def read_model_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, checked by its class, with an error naming the file."""
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
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a model config must be a JSON object, got {type(config).__name__}")
    # Each class owns its config.json schema (``config_problems``); a class without one checks nothing here.
    schema = getattr(stored_class(config, path), "config_problems", None)
    problems = schema(config) if schema is not None else []
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems) + "; fix these keys or restore the file from its run")
    return config


def hub_model_class(repo_id: str, kwargs: dict[str, Any]) -> type[SegmentationModel]:
    """The class a Hub model's config.json names (a U-Net on the Hub loads as a U-Net). When config.json
    cannot be fetched, GMS: its ``from_pretrained`` then reports the Hub's error as for any model."""
    from huggingface_hub import hf_hub_download

    options = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
    try:
        config_file = Path(hf_hub_download(repo_id, "config.json", **options))
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return GMS
    return stored_class(config, config_file) if isinstance(config, dict) else GMS


def load_model(path: str | os.PathLike, first_stage: Any = None, **kwargs: Any) -> SegmentationModel:
    """A model folder (local or a Hub id) as a model of its stored class; a former U-Net baseline run
    folder too. The error names the path when it is none of these."""
    from ..hub import hub_reachable

    path_text = str(path)
    cls: type[SegmentationModel] = GMS
    if os.path.isdir(path_text) and not os.path.isfile(os.path.join(path_text, "config.json")):
        best = os.path.join(path_text, "checkpoints", "best")
        if os.path.isfile(os.path.join(best, "config.json")):  # a run folder stands for its best model
            path_text = best
    if os.path.isdir(path_text):
        if is_legacy_unet_folder(path_text):
            return load_legacy_unet(path_text)
        cls = stored_class(read_model_config(Path(path_text)), Path(path_text) / "config.json")
    elif os.path.exists(path_text) or not HUB_ID.match(path_text):
        why = "it is a file" if os.path.exists(path_text) else "it does not exist, and is not a Hub id (owner/name)"
        raise CheckpointError(
            f"{path_text} is not a gmseg model folder ({why}); a model folder holds config.json and "
            "model.safetensors. Create one with 'gmseg train' or 'gmseg import-official'."
        )
    else:
        if not hub_reachable():
            kwargs["local_files_only"] = True  # offline: the Hub cache, or the error below without retries
        cls = hub_model_class(path_text, kwargs)
    if cls is GMS:
        kwargs["first_stage_module"] = first_stage
    try:
        return cls.from_pretrained(path_text, **kwargs)
    except (OSError, ValueError) as error:  # Hub errors (offline, unknown repo) derive from these
        if isinstance(error, CheckpointError | ConfigError) or os.path.isdir(path_text):
            raise  # a local folder's problem is its own, never the Hub's
        from ..hub import unavailable_reason

        why = unavailable_reason(path_text) or (
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
        raise CheckpointError(
            f"{path_text!r} is not a local folder, and the Hugging Face Hub could not provide it ({why}). Check "
            "the path, or pass a local model folder."
        ) from error
