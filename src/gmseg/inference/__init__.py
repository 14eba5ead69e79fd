"""Running a model on a batch of images, whatever executes it: the predictor contract and the backend registry.

A :class:`Predictor` is what inference needs of a model (:class:`InferenceSpec`: square size, intensity
standardisation, labels, threshold) plus one call from a batch of images in [-1, 1] to float32
probabilities. A *backend* builds that call from a model: ``torch`` from an ``nn.Module`` (the default,
the release's numbers), ``onnxruntime`` and ``openvino`` from a folder written by ``gmseg export``
(``pip install 'gmseg[deploy]'``). A new backend is one module here with a ``build(model, device,
options)`` function and one line in :data:`BACKENDS`; modules are imported only when chosen, so a missing
optional runtime costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import GmsegError
from .contract import (
    MIRROR_AXES,
    PRECISIONS,
    InferenceSpec,
    PredictorOptions,
    mirror_averaged,
    pick_device,
    require_extra,
)

#: backend name -> the module whose ``build(model, device, options)`` returns ``images -> probabilities``.
BACKENDS: dict[str, str] = {
    "torch": "gmseg.inference.torch_backend",
    "onnxruntime": "gmseg.inference.onnxruntime_backend",
    "openvino": "gmseg.inference.openvino_backend",
}
AUTO = "auto"

__all__ = [
    "AUTO",
    "BACKENDS",
    "MIRROR_AXES",
    "PRECISIONS",
    "InferenceSpec",
    "Predictor",
    "PredictorOptions",
    "default_backend",
    "make_predictor",
    "mirror_averaged",
    "pick_device",
    "require_extra",
]


@dataclass
class Predictor:
    """A model ready for inference: its contract (``spec``), the backend that runs it and the call itself."""

    spec: InferenceSpec
    backend: str
    run: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images in [-1, 1] -> (B, C, S, S) float32 probabilities on the images' device."""
        return self.run(images)


def default_backend(model: Any) -> str:
    """The backend a model runs on when none is named: an exported folder's own runtime, else torch."""
    return str(getattr(model, "default_backend", "torch"))


def backend_module(name: str) -> Any:
    if name not in BACKENDS:
        raise GmsegError(f"unknown backend {name!r}; choose one of {AUTO}, {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def make_predictor(
    model: Any,
    device: str | torch.device = "auto",
    *,
    backend: str = AUTO,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    tta: bool = False,
) -> Predictor:
    """``model`` ready for inference on ``device`` with ``backend`` (``auto``: :func:`default_backend`).

    The defaults give exactly the model's own ``predict_proba`` numbers on torch; the options trade
    exactness for speed where a backend supports them (each backend refuses the ones it does not, by
    name). ``tta`` averages over mirror images (:func:`mirror_averaged`): 4x the time, other numbers.
    """
    if precision not in PRECISIONS:
        raise GmsegError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    name = default_backend(model) if backend == AUTO else backend
    module = backend_module(name)
    torch_device = device if isinstance(device, torch.device) else pick_device(device)
    options = PredictorOptions(precision=precision, channels_last=channels_last, compile=compile)
    run = module.build(model, torch_device, options)
    return Predictor(InferenceSpec.of(model), name, mirror_averaged(run) if tta else run)
