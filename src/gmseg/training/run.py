"""``gmseg train``'s entry: a config (a file, a packaged name or a :class:`~gmseg.config.Config`) or a run
folder to resume, checked before anything is written, then the trainer variant it names."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config, check_resume_config, load_config
from ..errors import GmsegError
from ..models import model_options, with_model_options
from ..numerics import flush_denormals
from .variants import make_trainer, trainer_options


def train(
    config: Config | str | os.PathLike,
    overrides: list[str] | None = None,
    resume: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Train the config's model with its trainer variant; returns the run folder. ``resume`` continues a run folder from ``checkpoints/last`` with
    its own config.yaml (``overrides`` on top; see :func:`check_resume_config` for what they may not change)."""
    if resume is not None or run_dir is not None:
        from ..outputs import refuse_if_busy

        refuse_if_busy(resume if resume is not None else run_dir)  # first: names the run that holds it
    if resume is not None:
        resume = Path(resume)
        if config is not None:
            raise GmsegError(
                f"A resumed run keeps its own {resume / 'config.yaml'}: give no config beside resume "
                "(change settings with overrides, --set KEY=VALUE)."
            )
        saved = resume / "config.yaml"
        if not saved.is_file():
            raise GmsegError(f"{resume} is not a run folder (no config.yaml): cannot resume it.")
        config = load_config(saved, overrides)
        # Compared with the model's options completed: an option the file omits is its default.
        check_resume_config(with_model_options(load_config(saved)), with_model_options(config), resume)
    elif not isinstance(config, Config):
        config = load_config(config, overrides)
    model_options(config)  # the whole config is checked before the run folder is looked at
    trainer_options(config)
    if resume is None and run_dir is not None and Path(run_dir).exists() and any(Path(run_dir).iterdir()):
        raise GmsegError(
            f"run folder {run_dir} already exists and is not empty: continue it with --resume "
            f"{run_dir}, or choose another folder."
        )
    with flush_denormals(config.train.flush_denormals):  # before the trainer's first torch operation
        trainer = make_trainer(
            config, run_dir=None if run_dir is None else Path(run_dir), resume=resume, progress=progress
        )
        return trainer.fit()
