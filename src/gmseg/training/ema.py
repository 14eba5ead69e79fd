"""An exponential moving average of the trained weights (diffusers' ``EMAModel``), optional."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def make_ema(parameters: Iterable[torch.nn.Parameter], decay: float, fixed: bool = False) -> Any:
    """diffusers' ``EMAModel`` over ``parameters``, or None when ``decay`` is 0 (off).

    On a small dataset, validation Dice swings by points from one epoch to the next on the plateau; the
    average of recent weights smooths that out instead of picking the luckiest epoch. ``fixed``: ``decay``
    from the first step (``min_decay``), without diffusers' warm-up, for an average that starts from trained
    weights worth keeping.
    """
    if decay <= 0:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(parameters, decay=decay, min_decay=decay if fixed else 0.0)


def restore_ema(
    parameters: Iterable[torch.nn.Parameter], state: dict[str, Any], decay: float, fixed: bool, device: Any
) -> Any:
    """A checkpoint's average, going on at this run's ``decay`` (a resume may change it)."""
    ema = make_ema(parameters, decay, fixed)
    if ema is None:
        return None
    ema.load_state_dict(state)
    ema.decay, ema.min_decay = decay, (decay if fixed else 0.0)
    ema.to(device=device)
    return ema


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
