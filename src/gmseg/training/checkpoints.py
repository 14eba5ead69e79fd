"""Run folders and checkpoints: complete model folders swapped in atomically, with the optimizer,
schedule, RNG and run state beside them, so a kill never leaves a broken one and a resume continues exactly.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..errors import CheckpointError
from ..fileio import atomic_write_text, clean_stale_temporaries, swap_in, temporary_sibling

STATE_NAME = "training_state.pt"


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0


def new_run_dir(config: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.train.output_dir) / f"{config.name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        run_dir = Path(config.train.output_dir) / f"{config.name}-{stamp}-{suffix}"
        suffix += 1
    return run_dir


def checkpoint_target(checkpoints: Path, name: str) -> Path | None:
    """The folder ``checkpoints/name`` (a real folder, or an old run's symlink), or the one a kill
    mid-swap left aside; None when there is neither."""
    for candidate in (checkpoints / name, checkpoints / f".{name}.old"):
        if candidate.exists():
            return candidate
    return None


def checkpoint_epoch(folder: Path) -> int:
    """The number of epochs the checkpoint in ``folder`` had completed."""
    return int(load_training_state(folder)["run_state"]["epoch"])


def save_checkpoint(
    model: Any,
    optimizer: Any,
    scheduler: Any,
    state: RunState,
    checkpoints: Path,
    names: list[str],
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete model folder under a temporary name, then rename it to each of ``names`` in turn
    (a copy for all but the last name), so that each is a plain, self-contained folder.

    A kill before a rename leaves that name's previous folder untouched. ``extra_state`` joins the resume
    state (the EMA's). Returns the folder of the last name.
    """
    checkpoints.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(checkpoints)  # what a killed run left half-written (by its PID)
    temp = temporary_sibling(checkpoints / f"epoch-{state.epoch:04d}")
    model.save_pretrained(temp)
    torch.save(
        {
            "run_state": state.__dict__,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng(),
            **(extra_state or {}),
        },
        temp / STATE_NAME,
    )
    for name in names[:-1]:
        copy = temporary_sibling(checkpoints / name)
        shutil.copytree(temp, copy)
        swap_in(copy, checkpoints / name)
    swap_in(temp, checkpoints / names[-1])
    remove_unreferenced(checkpoints)
    return checkpoints / names[-1]


def copy_checkpoint(source: Path, final: Path) -> None:
    """Copy a checkpoint folder to ``final`` via a temporary sibling, so ``final`` is never partial."""
    clean_stale_temporaries(final.parent)
    temp = temporary_sibling(final)
    shutil.copytree(source, temp)
    swap_in(temp, final)


def remove_unreferenced(checkpoints: Path) -> None:
    """Drop an old run's ``epoch-NNNN`` folders once no symlink points at them any more."""
    keep = {p.resolve() for p in checkpoints.iterdir() if p.is_symlink()}
    for folder in checkpoints.glob("epoch-*"):
        if folder.resolve() not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def capture_rng() -> dict[str, Any]:
    # Plain containers and tensors only, so the state file loads with weights_only=True.
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }


def restore_rng(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    kind, keys, *rest = saved["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate((saved["python_version"], tuple(saved["python"]), saved["python_gauss"]))


def load_training_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {folder} cannot be resumed (it holds weights only).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is corrupt or unsafe to load ({type(error).__name__}).") from error


def write_run_info(run_dir: Path, accelerator: Any, facts: dict[str, Any] | None = None) -> None:
    """Where and how the run ran, for the record (appended to on resume)."""
    from .. import __version__

    path = run_dir / "run_info.json"
    try:
        sessions = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (UnicodeDecodeError, ValueError) as error:  # a record, not state: say which file, never a traceback
        raise CheckpointError(f"{path} is not the run's JSON record ({error}); move it aside to resume") from None
    if not isinstance(sessions, list):
        raise CheckpointError(f"{path} is not the run's JSON record (a list of sessions); move it aside to resume")
    sessions.append(
        {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "mixed_precision": accelerator.mixed_precision,
            "gmseg": __version__,
            "torch": torch.__version__,
            **(facts or {}),
        }
    )
    atomic_write_text(path, json.dumps(sessions, indent=2))
