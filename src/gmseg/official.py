"""Reading the paper's released files into a gmseg model folder.

The release distributes the latent mapping model as a pickled ``{"model": state_dict}`` (``.pth``) and the
first stage as an LDM checkpoint plus yaml. Pickles can execute code, so everything goes through
``torch.load(weights_only=True)``; the mapping architecture is read off the tensor shapes rather than
trusted from a config the release never shipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError
from .first_stage import load_first_stage, load_state_dict_safely
from .models import GMS, GMSConfig
from .outputs import OutputGuard


def read_release_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The mapping model's weights from a release checkpoint (``{"model": ...}`` or a bare state dict)."""
    loaded = load_state_dict_safely(path)
    state = loaded.get("model", loaded)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__} under 'model', not the mapping model's state dict "
            "(expected the release's best_model.pth: {'model': {name: tensor}})."
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    if "input_blocks.weight" not in state:
        raise CheckpointError(
            f"{path} is not a GMS latent mapping model checkpoint: it has no 'input_blocks.weight' "
            f"(found keys such as {sorted(state)[:3]})."
        )
    return state


def infer_mapping_config(state: dict[str, torch.Tensor]) -> dict:
    """Recover in/out channels, base width and channel multipliers from tensor shapes."""
    stem = state["input_blocks.weight"]  # (ch, in_channels, 3, 3)
    ch, in_channels = int(stem.shape[0]), int(stem.shape[1])
    encoder_indices = sorted(
        int(m.group(1)) for key in state if (m := re.fullmatch(r"conv(\d+)_0\.resblock\.conv1\.2\.weight", key))
    )
    ch_mult = [int(state[f"conv{i}_0.resblock.conv1.2.weight"].shape[0]) // ch for i in encoder_indices]
    out_channels = int(state["convds0.2.weight"].shape[0])
    return {"in_channels": in_channels, "out_channels": out_channels, "ch": ch, "ch_mult": ch_mult}


def checked_mapping_config(state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict:
    """:func:`infer_mapping_config`, with a checkpoint that holds only some of the mapping's layers (or
    layers of impossible sizes) named as such instead of a KeyError."""
    from .models.gms import mapping_problems

    try:
        mapping = infer_mapping_config(state)
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise CheckpointError(
            f"{path} holds only some of the GMS mapping model's layers (no {error}): a partial or different "
            "checkpoint; use the release's complete best_model.pth"
        ) from None
    problems = mapping_problems(mapping)
    if problems:
        raise CheckpointError(f"{path}: its layers describe no GMS mapping model ({'; '.join(problems)})")
    return mapping


def import_official(
    lmm_path: str | os.PathLike,
    vae: str | os.PathLike,
    vae_config: str | os.PathLike | None = None,
    image_size: int = 224,
    out_dir: str | os.PathLike | None = None,
    include_first_stage: bool = False,
    overwrite: bool = False,
) -> GMS:
    """Build a GMS model from the release's files; save it as a model folder when ``out_dir`` is given.

    The folder follows the file rule (:class:`gmseg.outputs.OutputGuard`), checked before anything is
    loaded: never a folder that holds an input (not even with ``overwrite``), an existing non-empty folder
    only with ``overwrite``, and written beside its final name, then swapped in whole.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8 or image_size % 8:
        raise ConfigError(f"--image-size must be a positive multiple of 8 (the autoencoder's factor), got {image_size}")
    guard = OutputGuard("import-official", overwrite=overwrite)
    if out_dir is not None:
        guard.read(*[path for path in (lmm_path, vae, vae_config) if path is not None and Path(path).exists()])
        guard.plan_folder(Path(out_dir))
    state = read_release_state_dict(lmm_path)
    mapping = checked_mapping_config(state, lmm_path)  # before the first stage is loaded
    first_stage = load_first_stage(vae, vae_config)
    config = GMSConfig(mapping=mapping, image_size=image_size)
    model = GMS(config, first_stage_module=first_stage)
    try:
        model.mapping.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{lmm_path} does not match the GMS mapping architecture: {error}") from error
    model.eval()
    if out_dir is not None:
        guard.write_folder(
            Path(out_dir), lambda folder: model.save_pretrained(folder, include_first_stage=include_first_stage)
        )
    return model
