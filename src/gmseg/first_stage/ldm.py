"""The release's format: an LDM single-file checkpoint (``{"state_dict": ...}``, original LDM keys) + yaml."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..errors import FirstStageError
from .sources import FirstStageSource
from .weights import first_line, load_state_dict_safely
from .wrapper import FirstStage


def load(spec: FirstStageSource, local_files_only: bool = False) -> FirstStage:
    """Convert the checkpoint to a diffusers AutoencoderKL; the scale is the yaml's ``scale_factor``."""
    import yaml
    from diffusers import AutoencoderKL

    config_path = Path(spec.config or "")
    try:
        ldm_config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FirstStageError(f"Cannot read the first-stage yaml {config_path}: {first_line(error)}") from error
    first_stage_config = find_first_stage_config(ldm_config, config_path)
    state_dict = load_state_dict_safely(spec.path)
    state_dict = state_dict.get("state_dict", state_dict)
    state_dict = {k.removeprefix("first_stage_model."): v for k, v in state_dict.items()}
    # diffusers reads the first-stage config from ``model.params.first_stage_config``; the release's
    # yaml has it at the top level, so wrap it the way a full LDM yaml would hold it.
    wrapped = {"model": {"params": {"first_stage_config": first_stage_config}}}
    with tempfile.TemporaryDirectory() as tmp:
        wrapped_path = Path(tmp) / "first_stage.yaml"
        wrapped_path.write_text(yaml.safe_dump(wrapped))
        try:
            autoencoder = AutoencoderKL.from_single_file(
                state_dict, original_config=str(wrapped_path), local_files_only=True
            )
        except Exception as error:  # diffusers raises several types for shape/key mismatches
            raise FirstStageError(
                f"{spec.path} does not match the autoencoder described by {config_path}: {first_line(error)}"
            ) from error
    scale = first_stage_config.get("scale_factor", ldm_config.get("scale_factor", 0.18215))
    return FirstStage(autoencoder, scale, spec)


def find_first_stage_config(ldm_config: Any, path: Path) -> dict:
    """Accept the release's top-level ``first_stage_config`` or a full LDM yaml's nested one."""
    if isinstance(ldm_config, dict):
        if "first_stage_config" in ldm_config:
            return ldm_config["first_stage_config"]
        nested = ldm_config.get("model", {}).get("params", {}).get("first_stage_config")
        if nested is not None:
            return nested
    raise FirstStageError(
        f"{path} has no 'first_stage_config' (expected at the top level, as in the release's "
        "v2-inference-v-first-stage-VAE.yaml, or under model.params)."
    )
