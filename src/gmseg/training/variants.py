"""Trainer variants, selected by name as nnU-Net selects trainers (``trainer.name`` in a run config).

A variant is a small subclass of :class:`~gmseg.training.trainer.Trainer` with its own ``Options`` (the
``trainer`` section) plus one line in :data:`TRAINERS`. The default trainer is the paper's. The config
keeps the ``trainer`` section as given; :func:`trainer_options` checks it against the variant it names when
the trainer is made (:func:`make_trainer`), before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import DEFAULT_TRAINER, Config, named_section, raise_problems
from ..data.dataset import item_seed
from ..errors import ConfigError
from .schedules import lr_factor
from .trainer import Trainer, make_dataset


class CachedLatentTrainer(Trainer):
    """The CPU-budget schedule (BENCHMARKS.md, "Quality on BUSI"): the first ``latent_epochs`` train GMS's
    latent loss alone on cached, encoded views (no autoencoder in the loop), the rest add the Dice term,
    on freshly encoded augmentations or (``cached_full_loss``) on the cached views too."""

    name = "cached_latents"

    @dataclass
    class Options:
        name: str = "cached_latents"
        latent_epochs: int = 0
        # Views cached per training image: the image itself, then views augmented in image space.
        latent_views: int = 4
        # The full-loss epochs draw from the cached views too (no encoder in the loop).
        cached_full_loss: bool = False
        # Peak lr of the full-loss phase, as a fraction of train.lr: a full-lr restart can undo what the
        # latent phase learned. 1.0 restarts the schedule unchanged.
        full_loss_lr_scale: float = 1.0
        # Random flips/rot90 of the cached latents. TAESD's latents are not equivariant to them, so off
        # shows the mapping only inputs a real image encodes to; on (the default) is better at a full-lr restart.
        latent_dihedral: bool = True
        # Fraction of each batch decoded for the Dice term: the decoder's forward and backward are ~40 % of a
        # full-loss step (BENCHMARKS.md, "Time to Dice"); 1.0 is the paper's loss.
        dice_fraction: float = 1.0
        # The frozen encoder (the cache and the full-loss epochs) runs under train.mixed_precision too;
        # validation still encodes in full precision.
        autocast_encoder: bool = False
        # The loss (the decoder behind the Dice term) runs in float32 even under train.mixed_precision, the
        # mapping staying mixed: bf16 gradients through the decoder are far from fp32's (BENCHMARKS.md, "Time to Dice").
        fp32_loss: bool = False
        # The full-loss epochs run the mapping and the loss in float32, only the encoder staying mixed: the
        # latent phase keeps mixed precision's speed, the phase with the Dice term fp32's numerics.
        full_loss_fp32: bool = False

        def problems(self, config: Config) -> list[str]:
            found = []
            if not 0.0 < self.dice_fraction <= 1.0:
                found.append(f"trainer.dice_fraction must be in (0, 1], got {self.dice_fraction}")
            for key in ("autocast_encoder", "fp32_loss", "full_loss_fp32"):  # each splits the run's mixed precision
                if getattr(self, key) and config.train.mixed_precision == "no":
                    found.append(f"trainer.{key} needs train.mixed_precision=bf16 or fp16 (it is 'no')")
            if self.full_loss_fp32 and config.train.compile:
                found.append("trainer.full_loss_fp32 swaps the mapping's forward per phase; set train.compile=false")
            if not 0 <= self.latent_epochs <= config.train.epochs:
                found.append(f"trainer.latent_epochs must be in [0, train.epochs], got {self.latent_epochs}")
            if self.latent_views < 1:
                found.append("trainer.latent_views must be >= 1")
            if not 0.0 < self.full_loss_lr_scale <= 1.0:
                found.append(f"trainer.full_loss_lr_scale must be in (0, 1], got {self.full_loss_lr_scale}")
            return found

    def __init__(self, config: Config, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self.latent_cache: dict[str, torch.Tensor] | None = None

    def check_model(self) -> None:
        if not hasattr(self.model, "encode_pair"):
            raise ConfigError(
                f"trainer.name {self.name!r} trains a latent model (GMS) but model.name is "
                f"{self.config.model['name']!r}; use trainer.name=default for it."
            )

    def lr_factor(self, progress: float) -> float:
        t, o = self.config.train, self.options
        return lr_factor(t.lr_schedule, progress, t.warmup_epochs, t.epochs, o.latent_epochs, o.full_loss_lr_scale)

    def epoch_kind(self, epoch: int) -> Any:
        """The latent loss on cached views, the full loss on cached views, or the paper's full loss on
        freshly encoded augmentations."""
        if epoch < self.options.latent_epochs:
            return self.latent_epoch
        return self.cached_full_epoch if self.options.cached_full_loss else self.full_epoch

    def encode_batch(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch's latents as float32 (image mean, log-variance if any, mask latent), encoded under
        mixed precision when ``trainer.autocast_encoder`` is on."""
        with self.accelerator.autocast() if self.options.autocast_encoder else nullcontext():
            image_mean, image_logvar, mask_latent = self.model.encode_pair(image, mask)
        entry = {"image": image_mean.float(), "mask": mask_latent.float()}
        if image_logvar is not None:
            entry["logvar"] = image_logvar.float()
        return entry

    @torch.no_grad()
    def build_latent_cache(self) -> dict[str, torch.Tensor]:
        """Encode ``latent_views`` views of every local training image once: view 0 is the image itself,
        the others are augmented in image space. Random flips/rot90 of the latents come on top when the
        cache is used (``trainer.latent_dihedral``), and no image is only ever seen distorted.
        With ``trainer.cached_full_loss`` the views' masks are kept too (as bytes), for the Dice term.
        Returned as one tensor per key, views one after another, so epochs index it without copying."""
        from tqdm.auto import tqdm

        cache = []
        clean = make_dataset(self.config, self.split["train"], augment=False, volume_input=self.volume_input)
        bar = tqdm(
            total=self.options.latent_views * len(clean),
            desc="encode latent views",
            unit="img",
            leave=False,
            disable=not (self.progress and self.is_main),
        )
        for view in range(self.options.latent_views):
            # Views use epochs -1, -2, ... so they never coincide with a full epoch's augmentation.
            self.train_set.epoch = -(view + 1)
            dataset = clean if view == 0 else self.train_set
            loader = DataLoader(dataset, batch_size=self.config.train.batch_size, shuffle=False)
            loader = self.accelerator.prepare_data_loader(loader)
            for batch in loader:
                entry = self.encode_batch(batch["image"] * 2 - 1, batch["mask"])
                if self.options.cached_full_loss:
                    entry["pixels"] = batch["mask"].round().to(torch.uint8)  # {0, 1} or class indices
                cache.append(entry)
                bar.update(len(batch["image"]))
        bar.close()
        return {key: torch.cat([entry[key] for entry in cache]) for key in cache[0]}

    def cached_batches(self, epoch: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """(step, steps, batch) over the cached views: one view per image per epoch, shuffled, each batch
        under one random flip/rot90 unless ``trainer.latent_dihedral`` is off. Latents and masks turn
        together: a latent cell covers a fixed 8x8 pixel block, so the same turn keeps them aligned."""
        if self.latent_cache is None:
            self.latent_cache = self.build_latent_cache()
        pool = self.latent_cache
        views = self.options.latent_views
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
            if not self.options.latent_dihedral:
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
        return self.run_steps(self.latent_steps(epoch, self.cached_batches(epoch), with_dice), bar)

    def full_steps(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The full loss on freshly encoded augmentations (the encoder in the loop), through the same latent
        step as the cached epochs: the paper's step (``GMS.training_loss``) unless ``trainer.dice_fraction`` or
        ``trainer.autocast_encoder`` cut it."""
        return self.latent_steps(epoch, self.encoded_batches(), with_dice=True)

    def encoded_batches(self) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """(step, steps, batch) over the augmented training set, each batch encoded as it comes."""
        steps = len(self.train_loader)
        for step, batch in enumerate(self.train_loader):
            yield step, steps, {**self.encode_batch(batch["image"] * 2 - 1, batch["mask"]), "pixels": batch["mask"]}

    def latent_steps(
        self, epoch: int, batches: Iterator[tuple[int, int, dict[str, torch.Tensor]]], with_dice: bool
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Optimisation steps on latent batches: latent noise, the mapping, latent MSE (+ Dice on the first
        ``dice_fraction`` of each batch when ``with_dice``)."""
        levels = self.model.gms_config.supervised_levels
        for step, steps, batch in batches:
            self.apply_step_lr(epoch, step, steps)
            latent = self.model.noisy_latent(batch["image"], batch.get("logvar"), self.noise_generator(epoch, step))
            with self.accelerator.accumulate(self.net):
                with self.step_precision(with_dice):
                    outputs = self.net(latent, levels=levels)
                    pixels = batch["pixels"].float() if with_dice else None
                    dice_samples = max(1, round(self.options.dice_fraction * len(latent)))
                    with self.loss_precision(latent):
                        losses = self.model.loss_from_latents(
                            latent, batch["mask"], pixels, outputs=outputs, dice_samples=dice_samples
                        )
                self.optimisation_step(losses, epoch, step)
            yield losses

    def step_precision(self, with_dice: bool) -> Any:
        """The run's mixed precision for the mapping and the loss, or float32 for both in the full-loss
        epochs when ``trainer.full_loss_fp32``."""
        return self.full_precision() if with_dice and self.options.full_loss_fp32 else self.accelerator.autocast()

    @contextmanager
    def full_precision(self) -> Iterator[None]:
        """Autocast off. accelerate wraps a prepared module's forward in the run's autocast and keeps the
        bare one as ``_original_forward`` (what ``unwrap_model(keep_fp32_wrapper=False)`` restores for good);
        here the bare one stands in only for the block, so a DDP wrapper still runs it through its own forward."""
        module = self.accelerator.unwrap_model(self.net)
        wrapped, bare = module.__dict__.get("forward"), module.__dict__.get("_original_forward")
        if bare is not None:
            module.forward = bare
        try:
            with torch.autocast(self.accelerator.device.type, enabled=False):
                yield
        finally:
            if bare is not None:
                module.forward = wrapped

    def loss_precision(self, latent: torch.Tensor) -> Any:
        """Autocast switched off for the loss when ``trainer.fp32_loss`` (the prepared mapping hands its
        outputs back in float32), else the enclosing mixed precision."""
        return torch.autocast(latent.device.type, enabled=False) if self.options.fp32_loss else nullcontext()


#: trainer.name -> class. One line per variant.
TRAINERS: dict[str, type[Trainer]] = {"default": Trainer, "cached_latents": CachedLatentTrainer}


def trainer_class(name: str) -> type[Trainer]:
    if name not in TRAINERS:
        raise ConfigError(f"trainer.name {name!r} is unknown; choose one of {', '.join(sorted(TRAINERS))}")
    return TRAINERS[name]


def trainer_options(config: Config) -> Any:
    """The ``trainer`` section as the ``Options`` of the variant it names: the name, every key and type, then
    the ranges against the whole config checked, each problem a :class:`~gmseg.errors.ConfigError`.
    Naming another variant (``--set trainer.name=default``) drops the options only the others have."""
    options = named_section("trainer", config.trainer, TRAINERS, DEFAULT_TRAINER)
    raise_problems(options.problems(config))
    return options


def make_trainer(config: Config, **kwargs: Any) -> Trainer:
    """The trainer variant the config names (``trainer.name``), built for ``config`` with its ``trainer``
    section checked and completed with the variant's defaults (what the run's config.yaml records)."""
    options = trainer_options(config)
    return trainer_class(options.name)(replace(config, trainer=asdict(options)), **kwargs)
