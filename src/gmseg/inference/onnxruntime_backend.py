"""The ``onnxruntime`` backend: an exported ONNX graph on ONNX Runtime (CPU, or CUDA where its GPU build is
installed). No runtime precision option: the graph runs as exported, fp32 (the torch model's probabilities
to ~1e-5, bench/backends.py) or int8 (``gmseg export --precision int8``: its quantised operators in int8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import CheckpointError, GmsegError
from .contract import InferenceSpec, PredictorOptions, check_graph_io, one_at_a_time, require_extra

NAME = "onnxruntime"


def exported_graph(model: Any, formats: tuple[str, ...], backend: str) -> Any:
    """The model's graph file when it is an exported folder of one of ``formats``; else say how to get one."""
    if getattr(model, "graph_format", None) not in formats:
        raise GmsegError(
            f"backend {backend} runs a model folder written by 'gmseg export --format {formats[0]}'; export "
            f"this {type(model).__name__} first (gmseg export --model DIR --format {formats[0]} --out DIR)"
        )
    return model.graph_file


def providers(ort: Any, device: torch.device) -> list[str]:
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise GmsegError(
            f"backend {NAME} on {device} needs onnxruntime's GPU build (pip install onnxruntime-gpu); "
            f"this one has {ort.get_available_providers()}; use --device cpu"
        )
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def build(model: Any, device: torch.device, options: PredictorOptions) -> Callable[[torch.Tensor], torch.Tensor]:
    options.refuse(NAME)
    graph = exported_graph(model, ("onnx",), NAME)
    ort = require_extra("onnxruntime", f"backend {NAME}")
    try:
        session = ort.InferenceSession(str(graph), providers=providers(ort, device))
    except GmsegError:
        raise
    except Exception as error:  # onnxruntime raises its own types for unreadable or invalid graphs
        raise CheckpointError(
            f"{graph} is not a valid ONNX graph ({str(error).splitlines()[0]}); export the model again"
        ) from error
    inputs, outputs = session.get_inputs(), session.get_outputs()
    check_graph_io(graph, inputs[0].shape, outputs[0].shape, InferenceSpec.of(model))
    feed, fetch = inputs[0].name, [outputs[0].name]

    def predict_batch(images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(session.run(fetch, {feed: array})[0]).to(images.device)

    return one_at_a_time(predict_batch, device)
