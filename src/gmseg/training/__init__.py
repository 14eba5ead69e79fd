"""Training any gmseg model: the entry (:mod:`.run`), the loop (:mod:`.trainer`), its variants
(:mod:`.variants`), lr schedules, checkpoints and resume, the epoch log and the weight average, one module each."""

from .checkpoints import (
    STATE_NAME,
    RunState,
    checkpoint_epoch,
    checkpoint_target,
    load_training_state,
    new_run_dir,
    save_checkpoint,
)
from .ema import averaged_weights, make_ema
from .logs import LOG_COLUMNS, EpochLog
from .run import train
from .schedules import (
    SMOOTH_START,
    lr_factor,
    release_lr_factor,
    schedule_factor,
    smooth_lr_factor,
    smooth_schedule_factor,
)
from .trainer import Trainer, TrainingDivergedError, make_dataset, resolve_split
from .variants import TRAINERS, CachedLatentTrainer, make_trainer, trainer_class, trainer_options

__all__ = [
    "LOG_COLUMNS",
    "SMOOTH_START",
    "STATE_NAME",
    "TRAINERS",
    "CachedLatentTrainer",
    "EpochLog",
    "RunState",
    "Trainer",
    "TrainingDivergedError",
    "averaged_weights",
    "checkpoint_epoch",
    "checkpoint_target",
    "load_training_state",
    "lr_factor",
    "make_dataset",
    "make_ema",
    "make_trainer",
    "new_run_dir",
    "release_lr_factor",
    "resolve_split",
    "save_checkpoint",
    "schedule_factor",
    "smooth_lr_factor",
    "smooth_schedule_factor",
    "train",
    "trainer_class",
    "trainer_options",
]
