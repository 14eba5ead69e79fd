"""What every backend shares: the inference contract of a model, the options, the device, the extras."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError, GmsegError
from ..labels import BINARY, LabelSet

#: ``precision`` values of :func:`gmseg.inference.make_predictor` / ``gmseg predict --precision``.
#: ``mixed``: OpenVINO on a GMS export, the autoencoder in bf16 and the latent mapping in fp32.
PRECISIONS = ("fp32", "bf16", "mixed")

#: The mirror images averaged by test-time augmentation: none, left-right, up-down, both (nnU-Net's default
#: in 2D). Training augments with these flips, so the model has seen every one of them.
MIRROR_AXES: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))

#: The optional extra that brings the deployment runtimes.
DEPLOY_EXTRA = "pip install 'gmseg[deploy]'"


@dataclass(frozen=True)
class InferenceSpec:
    """What inference needs to know of a model besides its weights: how images enter, how masks leave."""

    image_size: int
    intensity: str = "none"
    labels: LabelSet = BINARY
    threshold: float = 0.5

    @classmethod
    def of(cls, model: Any) -> InferenceSpec:
        """The spec of any model keeping the contract (a torch model or an exported folder alike)."""
        return cls(
            image_size=int(model.image_size),
            intensity=str(getattr(model, "intensity", "none")),
            labels=getattr(model, "labels", BINARY),
            threshold=float(model.threshold),
        )

    @property
    def channels(self) -> int:
        """Probability channels per pixel: 1 (foreground) for a binary model, else one per class."""
        return 1 if self.labels.is_binary else self.labels.num_classes


@dataclass(frozen=True)
class PredictorOptions:
    """The speed-for-exactness options; each backend refuses, by name, those it cannot honour."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def refuse(self, backend: str, *, precisions: tuple[str, ...] = ("fp32",)) -> None:
        """Say which options ``backend`` does not have, instead of ignoring them silently."""
        if self.precision not in precisions:
            raise GmsegError(f"backend {backend} has no --precision {self.precision}; it runs {', '.join(precisions)}")
        for flag, on in (("--channels-last", self.channels_last), ("--compile", self.compile)):
            if on:
                raise GmsegError(f"{flag} is an option of the torch backend; backend {backend} has no such option")


def pick_device(device: str = "auto") -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N', checked here so a wrong value fails before any work."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise GmsegError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'.") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise GmsegError(f"device {device!r} was asked for but no CUDA device is available; use 'auto' or 'cpu'.")
    if chosen.type not in ("cpu", "cuda"):
        raise GmsegError(f"device {device!r} is not supported; use 'auto', 'cpu' or 'cuda'.")
    return chosen


def mirror_averaged(predict: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Test-time augmentation: ``predict`` averaged over the image and its mirror images, each flipped back.

    Costs one prediction per mirror image (4x). Whether it pays depends on the data: decide on validation
    images (on BUSI ultrasound, whose images have an up and a down, it lowered Dice; BENCHMARKS.md). Works
    for any ``images -> probabilities`` function, on any backend.
    """

    def predict_mirrored(images: torch.Tensor) -> torch.Tensor:
        total = predict(images)
        for axes in MIRROR_AXES[1:]:
            total = total + predict(images.flip(axes)).flip(axes)
        return total / len(MIRROR_AXES)

    return predict_mirrored


def one_at_a_time(
    predict_batch: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """On a CPU, images one at a time: batching buys no arithmetic there, and every probability is then
    independent of the batch it came in (the same files whatever the batch size or the number of ranks)."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        if device.type == "cpu":
            return torch.cat([predict_batch(image) for image in images.split(1)])
        return predict_batch(images)

    return predict


def require_extra(module: str, purpose: str) -> Any:
    """Import an optional runtime for ``purpose`` (e.g. "backend openvino"), or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise GmsegError(
            f"{purpose} needs the Python package {module!r}, which is not installed: {DEPLOY_EXTRA}"
        ) from error


def check_graph_io(graph: Any, inputs: list[Any], outputs: list[Any], spec: InferenceSpec) -> None:
    """An exported graph must take (B, 3, S, S) images and give (B, C, S, S) probabilities for the folder's
    config.json; one from another model (or a hand-edited config) is refused by name. Dimensions are ints
    where the graph fixes them, anything else where it leaves them free."""
    size = spec.image_size
    wanted = {"input": [3, size, size], "output": [spec.channels, size, size]}
    for role, shape in (("input", inputs), ("output", outputs)):
        fixed = [d if isinstance(d, int) else None for d in list(shape)[1:]]
        if len(shape) != 4 or any(d is not None and d != w for d, w in zip(fixed, wanted[role])):
            raise CheckpointError(
                f"{graph} has {role} shape {list(shape)}, but its config.json describes (batch, "
                f"{', '.join(map(str, wanted[role]))}): the graph belongs to another model; export the model again"
            )
