"""The ``openvino`` backend: an exported graph (OpenVINO IR, or ONNX read directly) on OpenVINO's CPU plugin.

``precision`` is passed as ``INFERENCE_PRECISION_HINT``: ``fp32`` is forced explicitly because OpenVINO
otherwise runs bf16 silently on CPUs that have it; ``bf16`` is the faster, inexact choice. ``mixed`` (GMS
exports only) cuts the graph into its three stages and runs the autoencoder's encoder and decoder in bf16
and the latent mapping in f32: on the hippocampus model bf16 moved Dice through the mapping, not the
autoencoder, which is most of the time (BENCHMARKS.md, "Backends"). An int8 graph (``gmseg export
--precision int8``) runs its quantised layers in int8 whatever the hint, the rest as hinted.
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
HINTS = {"fp32": "f32", "bf16": "bf16", "mixed": "bf16"}
#: Where a GMS graph's stages begin, by the names torch.onnx gives their ops (the modules' paths), and the
#: precision each stage runs in under ``mixed``: encoder (from the input), latent mapping, decoder (to the end).
MAPPING_OPS, DECODER_OPS = "/mapping/", "/decoder/"
MIXED_HINTS = ("bf16", "f32", "bf16")


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
    if options.precision == "mixed":
        stages = gms_stages(network, graph)
        run = chained(core, stages, MIXED_HINTS)
    else:
        run = chained(core, [network], (HINTS[options.precision],))

    def predict_batch(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run(images.detach().to("cpu", torch.float32).contiguous().numpy()))

    return one_at_a_time(predict_batch, device)


def chained(core: Any, parts: list[Any], hints: tuple[str, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """Compile each part of a graph with its precision hint; the call feeds each part's outputs to the next."""
    requests = [
        core.compile_model(part, "CPU", {"INFERENCE_PRECISION_HINT": hint}).create_infer_request()
        for part, hint in zip(parts, hints)
    ]

    def run(array: np.ndarray) -> np.ndarray:
        inputs: dict[int, Any] = {0: array}
        for request in requests:
            request.infer(inputs)
            inputs = {i: request.get_output_tensor(i).data for i in range(len(request.model_outputs))}
        return np.array(inputs[0], copy=True)

    return run


def gms_stages(network: Any, graph: Any) -> list[Any]:
    """A GMS graph as three models, (encoder, latent mapping, decoder and probability); refused by name
    for a graph without those stages (a U-Net export)."""
    names = [op.get_friendly_name() for op in network.get_ordered_ops()]
    missing = [prefix for prefix in (MAPPING_OPS, DECODER_OPS) if not any(n.startswith(prefix) for n in names)]
    if missing:
        raise GmsegError(
            f"--precision mixed runs a GMS export's latent mapping in f32 and its autoencoder in bf16; {graph} has "
            f"no {' or '.join(m.strip('/') for m in missing)} stage (not a GMS export?): use --precision bf16 or fp32"
        )
    encoder, rest = split_graph(network, MAPPING_OPS)
    mapping, decoder = split_graph(rest, DECODER_OPS)
    return [encoder, mapping, decoder]


def split_graph(network: Any, prefix: str) -> tuple[Any, Any]:
    """(head, tail): the tail is every op named ``prefix...`` and every op that depends on one, the head the
    rest; the head's results are the values the tail takes from it, in the order of the tail's parameters."""
    ov = require_extra("openvino", f"backend {NAME}")
    ops = network.get_ordered_ops()
    tail: set[str] = set()
    for op in ops:  # topological order: an op's inputs come first
        sources = {i.get_source_output().get_node().get_friendly_name() for i in op.inputs()}
        if op.get_type_name() not in ("Constant", "Parameter") and (
            op.get_friendly_name().startswith(prefix) or sources & tail
        ):
            tail.add(op.get_friendly_name())
    cut: dict[tuple[str, int], Any] = {}
    for op in ops:
        if op.get_friendly_name() not in tail:
            continue
        for port in op.inputs():
            source = port.get_source_output()
            node = source.get_node()
            if node.get_type_name() != "Constant" and node.get_friendly_name() not in tail:
                cut.setdefault((node.get_friendly_name(), source.get_index()), source)
    parameters = []
    for source in cut.values():
        parameter = ov.opset13.parameter(source.get_partial_shape(), source.get_element_type())
        for target in list(source.get_target_inputs()):
            if target.get_node().get_friendly_name() in tail:
                target.replace_source_output(parameter.output(0))
        parameters.append(parameter)
    head = ov.Model([ov.opset13.result(source) for source in cut.values()], network.get_parameters(), "head")
    return head, ov.Model(network.get_results(), parameters, "tail")
