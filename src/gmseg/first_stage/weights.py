"""Reading weight files without executing code from them (shared by the adapters and ``official.py``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights without ever executing code from the file.

    ``.safetensors`` holds no code at all; pickled formats (``.pth``, ``.ckpt``, ``.bin``) go through
    ``torch.load(weights_only=True)``, whose unpickler admits only tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a valid safetensors file ({first_line(error)}).") from error
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for unsafe globals, RuntimeError/EOFError for corrupt files
        # torch's weights-only unpickler refuses what it cannot prove inert (a global, an unknown opcode) with
        # UnpicklingError; damage shows as EOFError or a zip RuntimeError instead.
        unsafe = isinstance(error, pickle.UnpicklingError) or "unsupported global" in str(error).lower()
        reason = (
            "it contains Python objects beyond tensors, which may execute code when loaded, so it was refused"
            if unsafe
            else f"it is truncated, corrupt or not a PyTorch checkpoint ({type(error).__name__})"
        )
        raise CheckpointError(
            f"Cannot load {path}: {reason}. Re-download the file, or convert a trusted copy to .safetensors."
        ) from error
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, expected a dict of tensors.")
    return loaded


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
