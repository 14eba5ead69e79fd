"""The ``torch`` backend: the model's own ``predict_proba``, the release's numbers bit for bit by default.

On a CPU images go one at a time (:func:`~gmseg.inference.contract.one_at_a_time`): the release's batch-1
validation loop exactly. The options trade exactness for speed (``bench/inference.py`` measures them):

- ``channels_last``: NHWC memory layout for the convolutions: different rounding, which the decoder
  amplifies to 2e-5 (TAESD) to 1e-4 (SD-VAE) in probabilities;
- ``precision="bf16"``: bfloat16 autocast; probabilities change by up to ~0.3 at single pixels;
- ``compile``: ``torch.compile`` of the part of the model its ``inference_stages`` names (GMS: mapping +
  decoder; the first batch of each new shape pays the compilation).

The model is moved (and, with ``channels_last``, converted) in place.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from ..errors import GmsegError
from .contract import PredictorOptions, one_at_a_time


def stages(model: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(prepare, head) of a model: ``head(prepare(images))`` are its probabilities, and only ``head`` is
    worth compiling. A module without ``inference_stages`` is one head."""
    split = getattr(model, "inference_stages", None)
    if split is None:
        return (lambda images: images), model.predict_proba
    return split()


def build(model: Any, device: torch.device, options: PredictorOptions) -> Callable[[torch.Tensor], torch.Tensor]:
    if not isinstance(model, torch.nn.Module) or getattr(model, "default_backend", "torch") != "torch":
        raise GmsegError(
            f"backend torch runs torch models; this is a {type(model).__name__} (an exported folder runs on "
            f"backend {getattr(model, 'default_backend', 'onnxruntime')})"
        )
    if options.precision not in ("fp32", "bf16"):
        raise GmsegError(
            f"backend torch has no --precision {options.precision}; it runs fp32 or bf16 "
            "(mixed is OpenVINO's, on a GMS export)"
        )
    model = model.to(device).eval()
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prepare, head = stages(model)
    head = torch.compile(head) if options.compile else None

    def autocast() -> AbstractContextManager:  # a fresh context per call
        if options.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

    def predict_batch(images: torch.Tensor) -> torch.Tensor:
        if options.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast():
            probabilities = model.predict_proba(images) if head is None else head(prepare(images))
        return probabilities.float()

    predict = one_at_a_time(predict_batch, device)
    return lambda images: predict(images.to(device))
