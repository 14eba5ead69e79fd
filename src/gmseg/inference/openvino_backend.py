"""The ``openvino`` backend: an exported graph (OpenVINO IR, or ONNX read directly) on OpenVINO's CPU plugin.

``precision`` is passed as ``INFERENCE_PRECISION_HINT``: ``fp32`` is forced explicitly because OpenVINO
otherwise runs bf16 silently on CPUs that have it; ``bf16`` is the faster, inexact choice. An int8 graph
(``gmseg export --precision int8``) runs its quantised layers in int8 whatever the hint, the rest as hinted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, GmsegError
from .contract import InferenceSpec, PredictorOptions, check_graph_io, one_at_a_time, require_extra
from .onnxruntime_backend import exported_graph

NAME = "openvino"
HINTS = {"fp32": "f32", "bf16": "bf16"}


def dims(port: Any) -> list[Any]:
    """A port's shape as ints where fixed, None where dynamic."""
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def build(model: Any, device: torch.device, options: PredictorOptions) -> Callable[[torch.Tensor], torch.Tensor]:
    options.refuse(NAME, precisions=tuple(HINTS))
    if device.type != "cpu":
        raise GmsegError(
            f"backend {NAME} runs on the CPU in gmseg; use --device cpu (or backend onnxruntime on {device})"
        )
    graph = exported_graph(model, ("openvino", "onnx"), NAME)
    ov = require_extra("openvino", f"backend {NAME}")
    core = ov.Core()
    try:
        network = core.read_model(str(graph))
    except Exception as error:  # OpenVINO raises RuntimeError subclasses for unreadable graphs
        raise CheckpointError(
            f"{graph} is not a valid {model.graph_format} graph ({str(error).splitlines()[0]}); export the model again"
        ) from error
    spec = InferenceSpec.of(model)
    check_graph_io(graph, dims(network.inputs[0]), dims(network.outputs[0]), spec)
    network.reshape({network.inputs[0]: [1, 3, spec.image_size, spec.image_size]})  # one image at a time
    compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": HINTS[options.precision]})
    request = compiled.create_infer_request()

    def predict_batch(images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        request.infer({0: array})
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, copy=True))

    return one_at_a_time(predict_batch, device)
