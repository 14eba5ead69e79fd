"""Learning-rate schedules: the release's per-epoch warm-up + cosine, and a per-step smooth variant.

Both are functions of the position in training only, so a resumed run follows them exactly.
"""

from __future__ import annotations

import math


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
