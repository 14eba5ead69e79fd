"""The training loop: the paper's procedure on top of Hugging Face accelerate.

What it adds to the release's loop, and why:
- model selection on a validation split carved from the training names (the release selects on test);
- validation latents encoded once per run: the first stage is frozen and validation is not augmented;
- image and mask encoded in one batch, the three supervised levels decoded in one batch;
- every random choice (shuffling, augmentation, latent noise) is a function of (seed, epoch, index), so a
  resumed run continues exactly as an uninterrupted one would;
- checkpoints are complete model folders swapped in atomically, so a kill never leaves a broken one;
- a non-finite loss stops the run at once, naming the epoch and step, with the last good checkpoint kept;
- optionally (``train.ema_decay``) an exponential moving average of the weights is what gets validated and saved.
"""

from __future__ import annotations

import csv
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .config import Config, check_resume_config, load_config
from .data.dataset import item_seed
from .errors import CheckpointError, GmsegError
from .fileio import atomic_write_text, remove_path, swap_in
from .model import GMS, GMSConfig

LOG_COLUMNS = ["epoch", "lr", "loss", "loss_rec", "loss_dice", "val_dice", "val_iou", "seconds"]
STATE_NAME = "training_state.pt"


class TrainingDivergedError(GmsegError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------- schedule
def release_lr_factor(epoch: int, warmup_epochs: int, max_epochs: int) -> float:
    """The release's LinearWarmupCosineAnnealingLR (closed form, warm-up from 0, eta_min 0), per epoch.

    Epoch 0 trains at lr 0 exactly like the release; warm-up reaches the base lr at epoch
    ``warmup_epochs - 1``, then a half cosine to 0 at ``max_epochs``.
    """
    if warmup_epochs > 1 and epoch < warmup_epochs:
        return epoch / (warmup_epochs - 1)
    if epoch < warmup_epochs:  # a single warm-up epoch: start at the base lr
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs)))


def schedule_factor(
    epoch: int, warmup_epochs: int, max_epochs: int, latent_epochs: int = 0, full_loss_scale: float = 1.0
) -> float:
    """The release's schedule; a two-phase run (latent epochs, then the full loss) restarts the cosine
    for the second phase, which would otherwise train the Dice term at an lr of almost zero. The restart
    peaks at ``full_loss_scale`` times the base lr, so it need not undo what the latent phase learned."""
    if latent_epochs <= 0 or latent_epochs >= max_epochs:
        return release_lr_factor(epoch, warmup_epochs, max_epochs)
    if epoch < latent_epochs:
        return release_lr_factor(epoch, warmup_epochs, latent_epochs)
    return full_loss_scale * release_lr_factor(epoch - latent_epochs, 0, max_epochs - latent_epochs)


SMOOTH_START = 1 / 25  # OneCycleLR's default initial lr fraction


def smooth_lr_factor(progress: float, warmup_epochs: float, max_epochs: float) -> float:
    """Per-step schedule at ``progress`` epochs: linear warm-up from ``SMOOTH_START``, then a half cosine to 0."""
    if progress < warmup_epochs:
        return SMOOTH_START + (1.0 - SMOOTH_START) * progress / warmup_epochs
    span = max(1e-9, max_epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup_epochs) / span)))


def smooth_schedule_factor(
    progress: float, warmup_epochs: int, max_epochs: int, latent_epochs: int = 0, full_loss_scale: float = 1.0
) -> float:
    """The smooth schedule; a two-phase run restarts it for the full-loss phase with a one-epoch warm-up
    (the mapping is already trained; the Dice term only needs the lr back), peaking at ``full_loss_scale``."""
    if 0 < latent_epochs < max_epochs:
        if progress < latent_epochs:
            return smooth_lr_factor(progress, warmup_epochs, latent_epochs)
        restart = smooth_lr_factor(progress - latent_epochs, min(1, warmup_epochs), max_epochs - latent_epochs)
        return full_loss_scale * restart
    return smooth_lr_factor(progress, warmup_epochs, max_epochs)


def lr_factor(
    schedule: str,
    progress: float,
    warmup_epochs: int,
    max_epochs: int,
    latent_epochs: int = 0,
    full_loss_scale: float = 1.0,
) -> float:
    """The lr multiplier at ``progress`` epochs (fractional within an epoch) under ``train.lr_schedule``:
    the release's changes once per epoch, the smooth one every step."""
    if schedule == "smooth":
        return smooth_schedule_factor(progress, warmup_epochs, max_epochs, latent_epochs, full_loss_scale)
    return schedule_factor(math.floor(progress), warmup_epochs, max_epochs, latent_epochs, full_loss_scale)


# ---------------------------------------------------------------------------------------------- data
def make_dataset(config: Config, names: list[str], augment: bool) -> Any:
    from .data.dataset import SegmentationDataset
    from .data.transforms import build_transform

    transform = build_transform(config.data.image_size, config.data.augmentations if augment else None)
    return SegmentationDataset(
        config.data.root,
        names,
        transform=transform,
        mask_threshold=config.data.mask_threshold,
        augmentation_seed=config.train.seed if augment else None,
    )


def resolve_split(config: Config) -> dict[str, list[str]]:
    """The run's split: the given file (or ``<root>/split.json``), with validation carved from train."""
    from .data.splits import load_split, with_validation

    split_path = Path(config.data.split) if config.data.split else Path(config.data.root) / "split.json"
    if not split_path.is_file():
        raise GmsegError(
            f"Split file {split_path} not found. Give data.split (JSON or the release's .pkl) or create "
            "it with 'gmseg prepare'."
        )
    split = load_split(split_path)
    return with_validation(split, config.data.val_fraction, config.train.seed, config.data.protocol)


# ---------------------------------------------------------------------------------------------- weight average
def make_ema(parameters: Iterable[torch.nn.Parameter], decay: float) -> Any:
    """diffusers' ``EMAModel`` over ``parameters``, or None when ``decay`` is 0 (off).

    On a small dataset, validation Dice swings by points from one epoch to the next on the plateau; the
    average of recent weights smooths that out instead of picking the luckiest epoch.
    """
    if decay <= 0:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(parameters, decay=decay)


@contextmanager
def averaged_weights(ema: Any, parameters: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Inside the block the parameters hold the EMA weights (for validating and saving), after it the
    training weights again. Without an EMA (None) nothing changes."""
    if ema is None:
        yield
        return
    parameters = list(parameters)
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


def ema_checkpoint_state(ema: Any, module: torch.nn.Module) -> dict[str, Any]:
    """What a resume needs beyond the (averaged) model folder: the EMA and the training weights."""
    if ema is None:
        return {}
    training_weights = {name: value.detach().clone() for name, value in module.state_dict().items()}
    return {"ema": ema.state_dict(), "training_weights": training_weights}


# ---------------------------------------------------------------------------------------------- run folder
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
    model: GMS,
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
    temp = checkpoints / f".epoch-{state.epoch:04d}.tmp"
    remove_path(temp)
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
        copy = checkpoints / f".{name}.tmp"
        remove_path(copy)
        shutil.copytree(temp, copy)
        swap_in(copy, checkpoints / name)
    swap_in(temp, checkpoints / names[-1])
    remove_unreferenced(checkpoints)
    return checkpoints / names[-1]


def copy_checkpoint(source: Path, final: Path) -> None:
    """Copy a checkpoint folder to ``final`` via a temporary sibling, so ``final`` is never partial."""
    temp = final.with_name(f".{final.name}.tmp")
    remove_path(temp)
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


def write_run_info(run_dir: Path, accelerator: Any) -> None:
    """Where and how the run ran, for the record (appended to on resume)."""
    import json

    from . import __version__

    path = run_dir / "run_info.json"
    sessions = json.loads(path.read_text()) if path.is_file() else []
    sessions.append(
        {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "mixed_precision": accelerator.mixed_precision,
            "gmseg": __version__,
            "torch": torch.__version__,
        }
    )
    atomic_write_text(path, json.dumps(sessions, indent=2))


# ---------------------------------------------------------------------------------------------- logging
class EpochLog:
    """``train_log.csv``, one row per epoch, flushed at once so a crash keeps every finished epoch."""

    def __init__(self, path: Path, keep_epochs: int):
        self.path = path
        rows = []
        if path.is_file():  # on resume, drop rows of epochs that the checkpoint does not contain
            with path.open() as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) <= keep_epochs]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, LOG_COLUMNS).writerow({k: row.get(k, "") for k in LOG_COLUMNS})


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Owns one run: builds everything from a :class:`Config`, then ``fit()``."""

    def __init__(self, config: Config, run_dir: Path | None = None, resume: Path | None = None, progress: bool = True):
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, broadcast_object_list

        if config.train.device == "cuda" and not torch.cuda.is_available():
            raise GmsegError(
                "train.device is 'cuda' but no CUDA device is available; use --set train.device=auto "
                "(or cpu) to train on the CPU."
            )
        self.config = config
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

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def setup(self) -> None:
        """Build everything (and restore the checkpoint on resume) before writing anything to the run
        folder, so a run that fails here leaves a resumed folder as it was and creates no fresh one."""
        from .data.dataset import check_dataset
        from .data.splits import load_split, save_split
        from .first_stage import load_first_stage

        config, accelerator = self.config, self.accelerator
        if self.resume:
            self.split = load_split(self.run_dir / "split.json")
        else:
            self.split = resolve_split(config)
        if not self.split.get("train"):
            raise GmsegError("The split has no training names.")
        # Find every broken file now, not at epoch 37.
        check_dataset(config.data.root, sorted(set(self.split["train"]) | set(self.split.get("val", []))))

        torch.manual_seed(config.train.seed)
        first_stage = load_first_stage(config.model.vae, config.model.vae_config)
        gms_config = GMSConfig(
            mapping={"in_channels": 4, "out_channels": 4, "ch": config.model.ch, "ch_mult": list(config.model.ch_mult)},
            image_size=config.data.image_size,
            supervised_levels=list(config.model.supervised_levels),
            rec_weight=config.loss.rec_weight,
            dice_weight=config.loss.dice_weight,
            dice_levels=None if config.loss.dice_levels is None else list(config.loss.dice_levels),
            noise_probability=config.model.noise_probability,
        )
        self.model = GMS(gms_config, first_stage_module=first_stage).to(accelerator.device)
        if config.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(
            self.model.mapping.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        # Kept for its state in training_state.pt; the lr itself is set every step by apply_step_lr.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: self.lr_factor(e))
        self.state = RunState()
        self.ema = None
        if self.resume:
            self.restore()
            if self.finished:
                return  # fit() says so; nothing more to build, nothing to write
        else:
            self.ema = make_ema(self.model.mapping.parameters(), config.train.ema_decay)

        self.train_set = make_dataset(config, self.split["train"], augment=True)
        train_loader = DataLoader(
            self.train_set,
            batch_size=config.train.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) > config.train.batch_size,  # the release drops the last batch
            num_workers=config.data.num_workers,
        )
        val_names = self.split.get("val") or []
        val_loader = DataLoader(
            make_dataset(config, val_names, augment=False) if val_names else [],
            batch_size=config.train.batch_size,
            num_workers=config.data.num_workers,
        )
        self.mapping, self.optimizer, self.train_loader, self.val_loader = accelerator.prepare(
            self.model.mapping, self.optimizer, train_loader, val_loader
        )
        if config.train.compile:
            self.mapping = torch.compile(self.mapping)
        self.val_cache = self.encode_validation() if val_names else []
        self.latent_cache: dict[str, torch.Tensor] | None = None
        if self.is_main:
            if not val_names:
                print(
                    f"{self.run_dir}: no validation set (data.val_fraction=0): checkpoints/best will be the "
                    "last epoch.",
                    file=sys.stderr,
                )
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.yaml")
            save_split(self.split, self.run_dir / "split.json")
            write_run_info(self.run_dir, accelerator)
        accelerator.wait_for_everyone()

    @property
    def finished(self) -> bool:
        """A resumed run that has already trained ``train.epochs`` epochs."""
        return self.resume and self.state.epoch >= self.config.train.epochs

    def restore(self) -> None:
        last = checkpoint_target(self.checkpoints, "last")
        if last is None:
            raise CheckpointError(f"{self.checkpoints}/last does not exist: nothing to resume in {self.run_dir}.")
        from .model import WEIGHTS_NAME, load_mapping_weights

        saved = load_training_state(last)
        if "training_weights" in saved:  # the model folder holds the EMA; training goes on from these
            self.model.mapping.load_state_dict(saved["training_weights"])
        else:
            load_mapping_weights(self.model.mapping, last / WEIGHTS_NAME)
        self.ema = make_ema(self.model.mapping.parameters(), self.config.train.ema_decay)
        if self.ema is not None and "ema" in saved:  # else the average starts now, from the training weights
            self.ema.load_state_dict(saved["ema"])
            self.ema.decay = self.config.train.ema_decay
            self.ema.to(device=self.accelerator.device)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = RunState(**saved["run_state"])
        restore_rng(saved["rng"])
        # The optimizer comes back with the lr its last epoch set; apply_step_lr replaces it at the first
        # step, so a resume that changes the schedule (e.g. more epochs) trains at the new schedule's lr.

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def encode_validation(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Validation is not augmented and the first stage is frozen: encode once, reuse every epoch."""
        from tqdm.auto import tqdm

        cache = []
        for batch in tqdm(
            self.val_loader,
            desc="encode validation",
            unit="batch",
            leave=False,
            disable=not (self.progress and self.is_main),
        ):
            latent, _ = self.model.first_stage.encode(batch["image"] * 2 - 1)
            cache.append((list(batch["name"]), latent, batch["mask"]))
        return cache

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean per-image Dice and IoU (threshold 0.5; an empty mask predicted empty scores 1)."""
        from accelerate.utils import gather_object
        from monai.metrics import compute_dice, compute_iou

        self.mapping.eval()
        scores: list[tuple[str, float, float]] = []
        for names, latent, mask in self.val_cache:
            with self.accelerator.autocast():
                out = self.mapping(latent, levels=["out"])["out"]
            prediction = (self.model.latent_to_probability(out.float()) > self.model.gms_config.threshold).float()
            dice = compute_dice(prediction, mask, include_background=True, ignore_empty=False).view(-1)
            iou = compute_iou(prediction, mask, include_background=True, ignore_empty=False).view(-1)
            scores += zip(names, dice.tolist(), iou.tolist())
        self.mapping.train()
        # Shards are padded to equal length across processes: de-duplicate by name.
        unique = dict((name, (d, i)) for name, d, i in gather_object(scores))
        values = np.array(list(unique.values()), dtype=np.float64)
        return float(values[:, 0].mean()), float(values[:, 1].mean())

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
        return lr_factor(t.lr_schedule, progress, t.warmup_epochs, t.epochs, t.latent_epochs, t.full_loss_lr_scale)

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
            self.ema.step(self.model.mapping.parameters())

    def full_epoch(self, epoch: int, bar: Any) -> dict[str, float]:
        """The paper's step: encode (image, mask), latent noise, map, decode levels, MSE + Dice."""
        self.train_set.epoch = epoch
        self.train_loader.set_epoch(epoch)
        model, totals, count = self.model, {"loss": 0.0, "loss_rec": 0.0, "loss_dice": 0.0}, 0
        levels = model.gms_config.supervised_levels
        for step, batch in enumerate(self.train_loader):
            self.apply_step_lr(epoch, step, len(self.train_loader))
            with self.accelerator.accumulate(self.mapping):
                image, mask = batch["image"] * 2 - 1, batch["mask"]
                image_mean, image_logvar, mask_latent = model.encode_pair(image, mask)
                latent = model.noisy_latent(image_mean, image_logvar, self.noise_generator(epoch, step))
                with self.accelerator.autocast():
                    outputs = self.mapping(latent, levels=levels)
                    losses = model.loss_from_latents(latent, mask_latent, mask, outputs=outputs)
                self.optimisation_step(losses, epoch, step)
            for key in totals:
                totals[key] += losses[key].item()
            count += 1
            self.state.global_step += 1
            bar.update(1)
        return {k: v / max(1, count) for k, v in totals.items()}

    @torch.no_grad()
    def build_latent_cache(self) -> dict[str, torch.Tensor]:
        """Encode ``latent_views`` views of every local training image once: view 0 is the image itself,
        the others are augmented in image space. Random flips/rot90 of the latents come on top when the
        cache is used (``train.latent_dihedral``), and no image is only ever seen distorted.
        With ``train.cached_full_loss`` the views' masks are kept too (as bytes), for the Dice term.
        Returned as one tensor per key, views one after another, so epochs index it without copying."""
        from tqdm.auto import tqdm

        cache = []
        clean = make_dataset(self.config, self.split["train"], augment=False)
        bar = tqdm(
            total=self.config.train.latent_views * len(clean),
            desc="encode latent views",
            unit="img",
            leave=False,
            disable=not (self.progress and self.is_main),
        )
        for view in range(self.config.train.latent_views):
            # Views use epochs -1, -2, ... so they never coincide with a full epoch's augmentation.
            self.train_set.epoch = -(view + 1)
            dataset = clean if view == 0 else self.train_set
            loader = DataLoader(dataset, batch_size=self.config.train.batch_size, shuffle=False)
            loader = self.accelerator.prepare_data_loader(loader)
            for batch in loader:
                image_mean, image_logvar, mask_latent = self.model.encode_pair(batch["image"] * 2 - 1, batch["mask"])
                entry = {"image": image_mean, "mask": mask_latent}
                if image_logvar is not None:
                    entry["logvar"] = image_logvar
                if self.config.train.cached_full_loss:
                    entry["pixels"] = (batch["mask"] > 0.5).to(torch.uint8)
                cache.append(entry)
                bar.update(len(batch["image"]))
        bar.close()
        return {key: torch.cat([entry[key] for entry in cache]) for key in cache[0]}

    def cached_batches(self, epoch: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """(step, steps, batch) over the cached views: one view per image per epoch, shuffled, each batch
        under one random flip/rot90 unless ``train.latent_dihedral`` is off. Latents and masks turn
        together: a latent cell covers a fixed 8x8 pixel block, so the same turn keeps them aligned."""
        if self.latent_cache is None:
            self.latent_cache = self.build_latent_cache()
        pool = self.latent_cache
        views = self.config.train.latent_views
        per_view = pool["image"].shape[0] // views
        generator = torch.Generator().manual_seed(
            item_seed(self.config.train.seed, epoch, self.accelerator.process_index, 11)
        )
        chosen = torch.randint(views, (per_view,), generator=generator) * per_view + torch.arange(per_view)
        order = chosen[torch.randperm(per_view, generator=generator)]
        batch_size = self.config.train.batch_size
        steps = math.ceil(per_view / batch_size)
        for step, start in enumerate(range(0, per_view, batch_size)):
            index = order[start : start + batch_size]
            k, flip = int(torch.randint(4, (), generator=generator)), bool(torch.randint(2, (), generator=generator))
            if not self.config.train.latent_dihedral:
                k, flip = 0, False
            batch = {}
            for key, values in pool.items():
                turned = torch.rot90(values[index], k, dims=(-2, -1))
                batch[key] = torch.flip(turned, dims=(-1,)) if flip else turned
            yield step, steps, batch

    def latent_epoch(self, epoch: int, bar: Any) -> dict[str, float]:
        """Latent loss only, on the cached views: no decoder in the loop."""
        return self.cached_epoch(epoch, bar, with_dice=False)

    def cached_full_epoch(self, epoch: int, bar: Any) -> dict[str, float]:
        """The full loss (latent MSE + Dice) on the cached views: the decoder is in the loop, the encoder
        is not, which on TAESD cuts an epoch by a third; the price is fewer distinct augmentations."""
        return self.cached_epoch(epoch, bar, with_dice=True)

    def cached_epoch(self, epoch: int, bar: Any, with_dice: bool) -> dict[str, float]:
        totals, count = {"loss": 0.0, "loss_rec": 0.0, "loss_dice": 0.0}, 0
        levels = self.model.gms_config.supervised_levels
        for step, steps, batch in self.cached_batches(epoch):
            self.apply_step_lr(epoch, step, steps)
            latent = self.model.noisy_latent(batch["image"], batch.get("logvar"), self.noise_generator(epoch, step))
            with self.accelerator.accumulate(self.mapping):
                with self.accelerator.autocast():
                    outputs = self.mapping(latent, levels=levels)
                    pixels = batch["pixels"].float() if with_dice else None
                    losses = self.model.loss_from_latents(latent, batch["mask"], pixels, outputs=outputs)
                self.optimisation_step(losses, epoch, step)
            for key in totals:
                totals[key] += losses[key].item()
            count += 1
            self.state.global_step += 1
            bar.update(1)
        return {k: v / max(1, count) for k, v in totals.items()}

    # ------------------------------------------------------------------ main loop
    def epoch_kind(self, epoch: int) -> Any:
        """Which step an epoch runs: the latent loss on cached views, the full loss on cached views, or
        the paper's full loss on freshly encoded augmentations."""
        if epoch < self.config.train.latent_epochs:
            return self.latent_epoch
        return self.cached_full_epoch if self.config.train.cached_full_loss else self.full_epoch

    def fit(self) -> Path:
        """Train; a fresh run that fails before its first checkpoint removes the folder it created: nothing
        in it could be resumed."""
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
        self.mapping.train()
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
            self.apply_step_lr(epoch, 0, 1)
            lr = self.optimizer.param_groups[0]["lr"]
            run_epoch = self.epoch_kind(epoch)
            steps = len(self.train_loader) if run_epoch == self.full_epoch else None
            with tqdm(
                total=steps, desc=f"epoch {epoch + 1}", leave=False, disable=not (self.progress and self.is_main)
            ) as bar:
                metrics = run_epoch(epoch, bar)
            self.scheduler.step()
            extra_state = ema_checkpoint_state(self.ema, self.model.mapping) if self.is_main else {}
            with averaged_weights(self.ema, self.model.mapping.parameters()):
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


def train(
    config: Config | str | os.PathLike,
    overrides: list[str] | None = None,
    resume: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Train GMS; returns the run folder. ``resume`` continues a run folder from ``checkpoints/last`` with
    its own config.yaml (``overrides`` on top; see :func:`check_resume_config` for what they may not change)."""
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
        check_resume_config(load_config(saved), config, resume)
    elif not isinstance(config, Config):
        config = load_config(config, overrides)
    if resume is None and run_dir is not None and Path(run_dir).exists() and any(Path(run_dir).iterdir()):
        raise GmsegError(
            f"run folder {run_dir} already exists and is not empty: continue it with --resume "
            f"{run_dir}, or choose another folder."
        )
    return Trainer(config, run_dir=None if run_dir is None else Path(run_dir), resume=resume, progress=progress).fit()
