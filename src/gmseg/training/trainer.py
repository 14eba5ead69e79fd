"""The training loop for any gmseg model (``model.training_loss``), on top of Hugging Face accelerate.

What it adds to the release's loop, and why:
- model selection on a validation split carved from the training names (the release selects on test);
- validation inputs computed once per run (GMS: the latents; the first stage is frozen, validation is not
  augmented);
- every random choice (shuffling, augmentation, latent noise) is a function of (seed, epoch, index), so a
  resumed run continues exactly as an uninterrupted one would;
- checkpoints are complete model folders swapped in atomically, so a kill never leaves a broken one;
- a non-finite loss stops the run at once, naming the epoch and step, with the last good checkpoint kept;
- optionally (``train.ema_decay``) an exponential moving average of the weights is what gets validated and saved.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import Config, named_section, raise_problems
from ..data.dataset import item_seed
from ..errors import CheckpointError, GmsegError
from ..fileio import atomic_write_text
from ..labels import BINARY, CLASS_COLOURS
from .checkpoints import (
    RunState,
    checkpoint_target,
    copy_checkpoint,
    load_training_state,
    new_run_dir,
    restore_rng,
    save_checkpoint,
    write_run_info,
)
from .ema import averaged_weights, ema_checkpoint_state, make_ema, restore_ema
from .logs import EpochLog
from .schedules import lr_factor

VAL_BEST = "val_best.csv"  # the best model's per-image validation scores, in the run folder


class TrainingDivergedError(GmsegError):
    """The loss became NaN or infinite."""


def make_dataset(config: Config, names: list[str], augment: bool, volume_input: Any = None) -> Any:
    """The run's images and targets (the classes of the dataset's dataset.json; binary without one).

    An MSD or nnU-Net folder (``volume_input``: the run's :class:`~gmseg.data.normalization.VolumeInput`)
    gives the planned slices of the cases ``names`` (:class:`~gmseg.data.volume_dataset.VolumeSliceDataset`).
    """
    from ..data.dataset import SegmentationDataset, dataset_labels
    from ..data.transforms import build_transform

    augmentations = config.data.augmentations if augment else None
    transform = build_transform(config.data.image_size, augmentations, intensity=config.data.intensity)
    if volume_input is not None:
        from ..data.layouts import open_layout
        from ..data.volume_dataset import VolumeSliceDataset

        return VolumeSliceDataset(
            open_layout(config.data.root),
            names,
            volume_input,
            transform=transform,
            empty_fraction=config.data.empty_slice_fraction,
            seed=config.train.seed,
            augmentation_seed=config.train.seed if augment else None,
        )
    return SegmentationDataset(
        config.data.root,
        names,
        transform=transform,
        labels=dataset_labels(config.data.root),
        mask_threshold=config.data.mask_threshold,
        augmentation_seed=config.train.seed if augment else None,
    )


def resolve_split(config: Config) -> dict[str, list[str]]:
    """The run's split: the given file (or ``<root>/split.json``), with validation carved from train."""
    from ..data.splits import load_split, with_validation
    from ..data.volume_dataset import is_volume_layout

    split_path = Path(config.data.split) if config.data.split else Path(config.data.root) / "split.json"
    if not config.data.split and is_volume_layout(config.data.root):  # by case: its own split file, else seeded
        from ..data.layouts import open_layout

        split = open_layout(config.data.root).split(seed=config.train.seed, val_fraction=config.data.val_fraction)
        return with_validation(split, config.data.val_fraction, config.train.seed, config.data.protocol)
    if not split_path.is_file():
        raise GmsegError(
            f"Split file {split_path} not found. Give data.split (JSON or the release's .pkl) or create "
            "it with 'gmseg prepare'."
        )
    split = load_split(split_path)
    return with_validation(split, config.data.val_fraction, config.train.seed, config.data.protocol)


def binary_scores(prediction: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of {0, 1} masks (B, 1, H, W); both empty scores 1."""
    from monai.metrics import compute_dice, compute_iou

    dice = compute_dice(prediction, mask, include_background=True, ignore_empty=False).view(-1)
    iou = compute_iou(prediction, mask, include_background=True, ignore_empty=False).view(-1)
    return dice, iou


def class_scores(prediction: torch.Tensor, target: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of class-index maps (B, 1, H, W), averaged over the foreground classes
    present in the truth or the prediction (1 when neither holds any)."""
    from monai.networks.utils import one_hot

    pred = one_hot(prediction.long(), classes)[:, 1:].flatten(2)
    true = one_hot(target.round().long(), classes)[:, 1:].flatten(2)
    overlap, total = (pred * true).sum(-1), pred.sum(-1) + true.sum(-1)
    present = total > 0
    dice = torch.where(present, 2 * overlap / total.clamp_min(1), torch.zeros_like(total))
    iou = torch.where(present, overlap / (total - overlap).clamp_min(1), torch.zeros_like(total))
    count = present.sum(-1)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return torch.where(count > 0, values.sum(-1) / count.clamp_min(1), torch.ones_like(count, dtype=values.dtype))

    return mean(dice), mean(iou)


class Trainer:
    """Owns one run of any model: builds everything from a :class:`Config`, then ``fit()``.

    This is the paper's trainer (``trainer.name: default``); variants subclass it and are selected by
    name (:data:`gmseg.training.variants.TRAINERS`). Its ``Options`` are the ``trainer`` section's, read
    into ``self.options`` (:meth:`read_options`).
    """

    name = "default"

    @dataclass
    class Options:
        name: str = "default"

        def problems(self, config: Config) -> list[str]:
            return []

    def __init__(self, config: Config, run_dir: Path | None = None, resume: Path | None = None, progress: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, broadcast_object_list

        from ..models import with_model_options

        if config.train.device == "cuda" and not torch.cuda.is_available():
            raise GmsegError(
                "train.device is 'cuda' but no CUDA device is available; use --set train.device=auto "
                "(or cpu) to train on the CPU."
            )
        config = with_model_options(config)  # checked, and recorded whole in the run's config.yaml
        self.config = config
        self.options = self.read_options(config)
        self.progress = progress
        cpu = config.train.device == "cpu" or (config.train.device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(
            mixed_precision=config.train.mixed_precision,
            gradient_accumulation_steps=config.train.gradient_accumulation_steps,
            cpu=cpu,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.train.seed),
        )
        # Every process must agree on the run folder: the main process names it.
        chosen = [str(resume or run_dir or new_run_dir(config))]
        broadcast_object_list(chosen)
        self.run_dir = Path(chosen[0])
        self.checkpoints = self.run_dir / "checkpoints"
        self.resume = resume is not None
        self.stopped_by_budget = False
        self.created = not self.resume and not self.run_dir.exists()  # only then may a failure remove it

    @classmethod
    def read_options(cls, config: Config) -> Any:
        """This variant's ``Options`` from ``config.trainer``: every key and type, then the ranges checked
        against the whole config (``Options.problems``), each a :class:`~gmseg.errors.ConfigError`."""
        options = named_section("trainer", config.trainer, {cls.name: cls}, cls.name)
        raise_problems(options.problems(config))
        return options

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def setup(self) -> None:
        """Build everything (and restore the checkpoint on resume) before writing anything to the run
        folder, so a run that fails here leaves a resumed folder as it was and creates no fresh one."""
        from ..data.dataset import check_dataset, dataset_labels
        from ..data.splits import load_split, save_split
        from ..models import build_model

        config, accelerator = self.config, self.accelerator
        labels = dataset_labels(config.data.root)
        if labels.num_classes > len(CLASS_COLOURS):  # the mask files gmseg writes hold at most that many
            raise GmsegError(
                f"{config.data.root}/dataset.json declares {labels.num_classes} classes {list(labels.names)}; gmseg "
                f"trains, predicts and writes masks for at most {len(CLASS_COLOURS)} (background included): "
                "merge classes in dataset.json and the masks"
            )
        if self.resume:
            self.split = load_split(self.run_dir / "split.json")
        else:
            self.split = resolve_split(config)
        if not self.split.get("train"):
            raise GmsegError("The split has no training names.")
        # Find every broken file now, not at epoch 37.
        self.volume_input = self.fit_volume_input()
        if self.volume_input is None:  # a volume layout's cases are checked as they are read
            check_dataset(config.data.root, sorted(set(self.split["train"]) | set(self.split.get("val", []))))

        torch.manual_seed(config.train.seed)
        self.model = build_model(config, labels).to(accelerator.device)
        if self.volume_input is not None:  # recorded in every model folder, applied again at prediction
            self.model.record_volume_input(self.volume_input)
        self.check_model()
        if config.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(
            self.model.trainable.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        # Kept for its state in training_state.pt; the lr itself is set every step by apply_step_lr.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: self.lr_factor(e))
        self.state = RunState()
        self.ema = None  # started by start_ema at train.ema_start_epoch, or restored
        if self.resume:
            self.restore()
            if self.finished:
                return  # fit() says so; nothing more to build, nothing to write

        self.train_set = make_dataset(config, self.split["train"], augment=True, volume_input=self.volume_input)
        train_loader = DataLoader(
            self.train_set,
            batch_size=config.train.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) > config.train.batch_size,  # the release drops the last batch
            num_workers=config.data.num_workers,
        )
        val_names = self.split.get("val") or []
        val_loader = DataLoader(
            make_dataset(config, val_names, augment=False, volume_input=self.volume_input) if val_names else [],
            batch_size=config.train.batch_size,
            num_workers=config.data.num_workers,
        )
        # net: the trained module as accelerate prepared it (DDP-wrapped on several processes).
        self.net, self.optimizer, self.train_loader, self.val_loader = accelerator.prepare(
            self.model.trainable, self.optimizer, train_loader, val_loader
        )
        if config.train.compile:
            self.net = torch.compile(self.net)
        self.val_cache = self.encode_validation() if val_names else []
        self.validation_scores: dict[str, tuple[float, float]] = {}
        no_foreground = bool(self.val_cache) and not self.validation_has_foreground()
        if no_foreground:  # Dice would be 1 for predicting nothing: epoch 1 would always be "best"
            self.val_cache = []
        if self.is_main:
            if not val_names or no_foreground:
                print(f"warning: {self.run_dir}: {self.no_validation_reason(val_names)}", file=sys.stderr)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.yaml")
            save_split(self.split, self.run_dir / "split.json")
            write_run_info(self.run_dir, accelerator, self.model.describe())
        accelerator.wait_for_everyone()

    def fit_volume_input(self) -> Any:
        """For an MSD / nnU-Net folder: how voxels become the model's input, from the training cases
        (:mod:`gmseg.data.normalization`); None for a prepared 2D folder."""
        from ..data.volume_dataset import fit_layout_input, is_volume_layout

        if not is_volume_layout(self.config.data.root):
            return None
        from ..data.layouts import open_layout

        layout = open_layout(self.config.data.root)
        return fit_layout_input(layout, self.split["train"], self.config.train.seed, self.config.data.slice_axis)

    def check_model(self) -> None:
        """A variant that needs a particular kind of model says so here, before anything is written."""

    @property
    def finished(self) -> bool:
        """A resumed run that has already trained ``train.epochs`` epochs."""
        return self.resume and self.state.epoch >= self.config.train.epochs

    def restore(self) -> None:
        last = checkpoint_target(self.checkpoints, "last")
        if last is None:
            raise CheckpointError(f"{self.checkpoints}/last does not exist: nothing to resume in {self.run_dir}.")
        saved = load_training_state(last)
        if "training_weights" in saved:  # the model folder holds the EMA; training goes on from these
            self.model.trainable.load_state_dict(saved["training_weights"])
        else:
            self.model.load_trainable_weights(last)
        if "ema" in saved:  # else the average starts at train.ema_start_epoch or now, from the training weights
            train = self.config.train
            self.ema = restore_ema(
                self.model.trainable.parameters(),
                saved["ema"],
                train.ema_decay,
                train.ema_start_epoch > 0,
                self.accelerator.device,
            )
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = RunState(**saved["run_state"])
        restore_rng(saved["rng"])
        # The optimizer comes back with the lr its last epoch set; apply_step_lr replaces it at the first
        # step, so a resume that changes the schedule (e.g. more epochs) trains at the new schedule's lr.

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validation_has_foreground(self) -> bool:
        """Whether any validation mask holds a foreground pixel (summed over every process's shard)."""
        count = sum(float((mask > 0).sum()) for _, _, mask in self.val_cache)
        total = self.accelerator.reduce(torch.tensor([count], device=self.accelerator.device), reduction="sum")
        return bool(total.item() > 0)

    def no_validation_reason(self, val_names: list[str]) -> str:
        """Why checkpoints/best will be the last epoch, in the user's terms."""
        data = self.config.data
        if val_names:
            return (
                f"the {len(val_names)} validation image(s) hold no foreground: Dice is 1 for predicting nothing, "
                "so it cannot select a model; checkpoints/best will be the last epoch (add images with "
                "foreground to the split's 'val' list to select on validation)."
            )
        n = len(self.split.get("train", []))
        if data.protocol == "paper":
            return "no validation set: the split's test list is empty; checkpoints/best will be the last epoch."
        if data.val_fraction > 0 and n >= 2:
            return "no validation set: the split file's 'val' list is empty; checkpoints/best will be the last epoch."
        if data.val_fraction > 0:
            return (
                f"no validation set: {n} training image(s) are too few to hold out data.val_fraction="
                f"{data.val_fraction} (at least 2 are needed); checkpoints/best will be the last epoch."
            )
        return "no validation set (data.val_fraction=0): checkpoints/best will be the last epoch."

    def encode_validation(self) -> list[tuple[list[str], torch.Tensor, torch.Tensor]]:
        """Validation is not augmented (and GMS's first stage is frozen): its inputs are computed once."""
        from tqdm.auto import tqdm

        cache = []
        for batch in tqdm(
            self.val_loader,
            desc="encode validation",
            unit="batch",
            leave=False,
            disable=not (self.progress and self.is_main),
        ):
            inputs = self.model.validation_inputs(batch["image"] * 2 - 1)
            cache.append((list(batch["name"]), inputs, batch["mask"]))
        return cache

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean per-image Dice and IoU (threshold 0.5; an empty mask predicted empty scores 1). With more
        than two classes, an image's score is the mean over the foreground classes in its truth or its
        prediction (1 when there are none). The per-image scores stay in ``validation_scores``."""
        from accelerate.utils import gather_object

        self.net.eval()
        scores: list[tuple[str, float, float]] = []
        for names, inputs, mask in self.val_cache:
            probability = self.model.validation_probabilities(inputs, self.net, self.accelerator.autocast)
            if self.model.labels.is_binary:
                dice, iou = binary_scores(BINARY.to_mask(probability, self.model.threshold).float(), mask)
            else:
                dice, iou = class_scores(probability.argmax(dim=1, keepdim=True), mask, probability.shape[1])
            scores += zip(names, dice.tolist(), iou.tolist())
        self.net.train()
        # Shards are padded to equal length across processes: de-duplicate by name.
        unique = dict((name, (d, i)) for name, d, i in gather_object(scores))
        self.validation_scores = unique
        values = np.array(list(unique.values()), dtype=np.float64)
        return float(values[:, 0].mean()), float(values[:, 1].mean())

    def write_best_validation(self) -> None:
        """``val_best.csv``: the best model's Dice and IoU per validation image. Two runs on the same split
        can then be compared image by image (far less noisy than two means) after their checkpoints are
        gone. Written before the checkpoint, so an exact resume rewrites it if a kill fell in between."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")  # quotes a file name that holds a comma
        writer.writerow(["name", "dice", "iou"])
        writer.writerows([name, repr(d), repr(i)] for name, (d, i) in sorted(self.validation_scores.items()))
        atomic_write_text(self.run_dir / VAL_BEST, text.getvalue())

    # ------------------------------------------------------------------ training epochs
    def noise_generator(self, epoch: int, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            item_seed(self.config.train.seed, epoch, step, self.accelerator.process_index, 7)
        )

    def check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0], device=self.accelerator.device)
        if self.accelerator.reduce(bad, reduction="sum").item() > 0:
            last = checkpoint_target(self.checkpoints, "last")
            kept = (
                f"the last good checkpoint is {last} (epoch {self.state.epoch})"
                if last
                else ("no checkpoint had been written yet")
            )
            raise TrainingDivergedError(
                f"Loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; training stopped and "
                f"{kept}. Lower train.lr or try train.mixed_precision=no."
            )

    def lr_factor(self, progress: float) -> float:
        t = self.config.train
        return lr_factor(t.lr_schedule, progress, t.warmup_epochs, t.epochs)

    def apply_step_lr(self, epoch: int, step: int, steps: int) -> None:
        """Set the lr for step ``step`` of ``steps`` in ``epoch``: a function of the position only, so a
        resumed run (even one with a changed schedule) follows it exactly."""
        factor = self.lr_factor(epoch + step / max(1, steps))
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base_lr * factor

    def optimisation_step(self, losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        self.check_finite(losses["loss"], epoch, step)
        self.accelerator.backward(losses["loss"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and self.accelerator.sync_gradients:  # once per real optimizer step
            self.ema.step(self.model.trainable.parameters())

    def full_epoch(self, epoch: int, bar: Any) -> dict[str, float]:
        """One pass over the augmented training set with the model's own loss (GMS: the paper's step)."""
        self.train_set.epoch = epoch
        self.train_loader.set_epoch(epoch)
        return self.run_steps(self.full_steps(epoch), bar)

    def full_steps(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        for step, batch in enumerate(self.train_loader):
            self.apply_step_lr(epoch, step, len(self.train_loader))
            with self.accelerator.accumulate(self.net):
                losses = self.model.training_loss(
                    batch["image"] * 2 - 1,
                    batch["mask"],
                    generator=self.noise_generator(epoch, step),
                    net=self.net,
                    autocast=self.accelerator.autocast,
                )
                self.optimisation_step(losses, epoch, step)
            yield losses

    def run_steps(self, steps: Iterable[dict[str, torch.Tensor]], bar: Any) -> dict[str, float]:
        """Drive an epoch's optimisation steps (each yields its losses); the epoch's mean losses."""
        totals, count = {"loss": 0.0, "loss_rec": 0.0, "loss_dice": 0.0}, 0
        for losses in steps:
            for key in totals:
                totals[key] += losses[key].item()
            count += 1
            self.state.global_step += 1
            bar.update(1)
        return {k: v / max(1, count) for k, v in totals.items()}

    # ------------------------------------------------------------------ main loop
    def epoch_kind(self, epoch: int) -> Any:
        """Which step an epoch runs; variants choose other steps for some epochs."""
        return self.full_epoch

    def fit(self) -> Path:
        """Train; a fresh run that fails before its first checkpoint removes the folder it created: nothing
        in it could be resumed. The run folder is claimed first (one run per folder, :mod:`gmseg.outputs`):
        a second run into it refuses, naming the first, before it reads or removes anything."""
        from ..outputs import OutputGuard, is_empty_folder

        with OutputGuard("train") as guard:
            if self.is_main:
                self.created = guard.claim(self.run_dir) and not self.resume
                if not self.resume and not is_empty_folder(self.run_dir):
                    raise GmsegError(
                        f"run folder {self.run_dir} already exists and is not empty: continue it with --resume "
                        f"{self.run_dir}, or choose another folder."
                    )
            try:
                return self.train_epochs()
            except BaseException:
                if self.is_main and self.created and checkpoint_target(self.checkpoints, "last") is None:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                raise

    def train_epochs(self) -> Path:
        """Set up, then train the epochs left; a finished run only says so (resuming it is no error)."""
        self.setup()
        config = self.config
        if self.finished:
            if self.is_main:
                print(
                    f"{self.run_dir} has already trained {self.state.epoch} epochs (train.epochs="
                    f"{config.train.epochs}): nothing to do. To train longer: gmseg train --resume "
                    f"{self.run_dir} --set train.epochs=N (N > {self.state.epoch}).",
                    file=sys.stderr,
                )
            return self.run_dir
        writer = None
        log = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            log = EpochLog(self.run_dir / "train_log.csv", keep_epochs=self.state.epoch)
        try:
            self.run_loop(log, writer)
        finally:
            if writer is not None:
                writer.close()
        self.accelerator.end_training()
        return self.run_dir

    def run_loop(self, log: EpochLog | None, writer: Any) -> None:
        """The epochs from the restored state to ``train.epochs``."""
        from tqdm.auto import tqdm

        config = self.config
        self.net.train()
        epochs = tqdm(
            range(self.state.epoch, config.train.epochs),
            desc="epochs",
            initial=self.state.epoch,
            total=config.train.epochs,
            disable=not (self.progress and self.is_main),
        )
        budget_start = time.monotonic()
        self.stopped_by_budget = False
        for epoch in epochs:
            started = time.time()
            self.start_ema(epoch)
            self.apply_step_lr(epoch, 0, 1)
            lr = self.optimizer.param_groups[0]["lr"]
            run_epoch = self.epoch_kind(epoch)
            steps = len(self.train_loader) if run_epoch == self.full_epoch else None
            with tqdm(
                total=steps, desc=f"epoch {epoch + 1}", leave=False, disable=not (self.progress and self.is_main)
            ) as bar:
                metrics = run_epoch(epoch, bar)
            self.scheduler.step()
            extra_state = ema_checkpoint_state(self.ema, self.model.trainable) if self.is_main else {}
            with averaged_weights(self.ema, self.model.trainable.parameters()):
                self.end_epoch(epoch, started, lr, metrics, extra_state, log, writer, epochs)
            if epoch + 1 < config.train.epochs and self.over_budget(budget_start):
                if self.is_main:
                    print(
                        f"train.max_minutes={config.train.max_minutes} reached after epoch {epoch + 1} of "
                        f"{config.train.epochs}: stopped; best is epoch {self.state.best_epoch}.",
                        file=sys.stderr,
                    )
                self.stopped_by_budget = True
                break

    def start_ema(self, epoch: int) -> None:
        """Start the weight average (``train.ema_decay``) at ``train.ema_start_epoch`` from the weights then;
        a resumed run that had none starts it at its first epoch."""
        train = self.config.train
        if self.ema is None and epoch >= train.ema_start_epoch:
            self.ema = make_ema(self.model.trainable.parameters(), train.ema_decay, fixed=train.ema_start_epoch > 0)

    def over_budget(self, since: float) -> bool:
        """Whether train.max_minutes is spent; the main process decides for all, so DDP ranks stop together."""
        from accelerate.utils import broadcast_object_list

        limit = self.config.train.max_minutes
        if limit is None:
            return False
        decision = [time.monotonic() - since >= limit * 60]
        broadcast_object_list(decision)
        return bool(decision[0])

    def end_epoch(
        self,
        epoch: int,
        started: float,
        lr: float,
        metrics: dict[str, float],
        extra_state: dict[str, Any],
        log: EpochLog | None,
        writer: Any,
        epochs: Any,
    ) -> None:
        """Validate, log and save the epoch's model: whatever weights the caller put in place."""
        val_dice, val_iou = self.validate() if self.val_cache else (float("nan"), float("nan"))
        self.state.epoch = epoch + 1
        # No validation set: the last epoch is the best we can say.
        improved = (val_dice > self.state.best_metric) if self.val_cache else True
        if improved:
            self.state.best_metric, self.state.best_epoch = (val_dice if self.val_cache else -1.0), epoch + 1
        row = {"epoch": epoch + 1, "lr": lr, **metrics, "val_dice": val_dice, "val_iou": val_iou}
        names = (["best"] if improved else []) + ["last"]  # last at the end: its state then names the best
        self.accelerator.wait_for_everyone()
        if self.is_main:
            # Log first: a resume drops log rows newer than its checkpoint, never the reverse.
            row["seconds"] = round(time.time() - started, 3)
            log.append(row)
            if improved and self.val_cache:
                self.write_best_validation()
            save_checkpoint(
                self.model, self.optimizer, self.scheduler, self.state, self.checkpoints, names, extra_state=extra_state
            )
            every = self.config.train.save_every
            if every and (epoch + 1) % every == 0:
                copy_checkpoint(self.checkpoints / "last", self.checkpoints / f"periodic-{epoch + 1:04d}")
            for key, value in row.items():
                if key != "epoch" and isinstance(value, float) and math.isfinite(value):
                    writer.add_scalar(f"train/{key}", value, epoch + 1)
            epochs.set_postfix(loss=f"{metrics['loss']:.4f}", val_dice=f"{val_dice:.4f}")
        self.accelerator.wait_for_everyone()
