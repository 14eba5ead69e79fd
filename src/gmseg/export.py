"""``gmseg export``: a trained model folder -> a folder holding one graph from images to probabilities.

The whole inference path is one graph (GMS: encode -> ``out`` head -> decode -> probability; the U-Net:
network -> sigmoid/softmax), with a free batch dimension and the model's square size fixed: the simplest
to deploy, and the fastest of the splits measured (issue #43). ``onnx`` is written with
``torch.onnx.export``; ``openvino`` converts that graph to OpenVINO IR, kept in fp32 (OpenVINO would
compress weights to fp16 by default). Before the folder appears, the exported graph is run on a seeded
image and must give the torch model's probabilities to ``TOLERANCE``; otherwise nothing is written.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import GmsegError
from .fileio import atomic_write_text, remove_path, swap_in, temporary_sibling
from .inference import make_predictor, require_extra
from .models import load_model
from .models.exported import GRAPH_FORMATS, ExportConfig, ExportedModel, file_sha256

FORMATS = tuple(GRAPH_FORMATS)
OPSET = 17
#: largest |probability difference| between the exported graph and the torch model that export accepts.
TOLERANCE = 1e-4


@dataclass
class ExportReport:
    folder: Path
    format: str
    max_dprob: float  # exported graph against the torch model, on one seeded image

    def summary(self) -> str:
        return f"Exported to {self.folder} ({self.format}); max |dprob| against torch fp32: {self.max_dprob:.2e}"


class _Probabilities(torch.nn.Module):
    """The model's ``predict_proba`` as a module's ``forward``, which is what the exporters trace."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict_proba(images)


def check_destination(out: Path, source: Path | None, overwrite: bool) -> None:
    """No export writes over the folder it reads, or over anything without ``overwrite``."""
    if source is not None and out.resolve() in (source.resolve(), *source.resolve().parents):
        raise GmsegError(f"--out {out} is (or holds) the model folder {source}; choose another folder")
    if out.exists() and not out.is_dir():
        raise GmsegError(f"--out {out} is an existing file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GmsegError(f"--out {out} is not empty; pass --overwrite to replace it, or choose an empty folder")


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    require_extra("onnx", "gmseg export")
    with warnings.catch_warnings():  # tracing warns about Python-side shape checks; the graph is verified below
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Probabilities(model),
            (example,),
            str(path),
            input_names=["image"],
            output_names=["probability"],
            dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def write_openvino(onnx_file: Path, folder: Path) -> None:
    ov = require_extra("openvino", "gmseg export --format openvino")
    ov.save_model(ov.convert_model(str(onnx_file)), str(folder / "model.xml"), compress_to_fp16=False)
    onnx_file.unlink()


def export_model(model: Any, out_dir: str | os.PathLike, fmt: str = "onnx", *, overwrite: bool = False) -> ExportReport:
    """Export ``model`` (a model or a model folder) as ``fmt`` into ``out_dir``, verified against torch."""
    if fmt not in FORMATS:
        raise GmsegError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = Path(model) if isinstance(model, (str, os.PathLike)) else None
    out = Path(out_dir)
    check_destination(out, source, overwrite)
    if source is not None:
        model = load_model(source)
    if isinstance(model, ExportedModel):
        raise GmsegError(f"{model.folder} is already an exported model; export the torch model folder it came from")
    model = model.to("cpu").eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, model.image_size, model.image_size, generator=generator) * 2 - 1
    temp = temporary_sibling(out)
    temp.mkdir(parents=True)
    try:
        write_onnx(model, example, temp / "model.onnx")
        if fmt == "openvino":
            write_openvino(temp / "model.onnx", temp)
        config = ExportConfig(
            format=fmt,
            exported_from=type(model).__name__,
            image_size=model.image_size,
            intensity=model.intensity,
            threshold=model.threshold,
            labels=None if model.labels.is_binary else model.labels.to_labels(),
            volume=None if model.volume_input is None else model.volume_input.to_dict(),
        )
        config.sha256 = {name: file_sha256(temp / name) for name in config.files}
        atomic_write_text(temp / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        dprob = verify(model, ExportedModel.from_pretrained(temp), example)
        swap_in(temp, out)
    except BaseException:
        remove_path(temp)
        raise
    return ExportReport(out, fmt, dprob)


def verify(model: torch.nn.Module, exported: ExportedModel, example: torch.Tensor) -> float:
    """The exported graph's probabilities against the torch model's on ``example``; refused beyond TOLERANCE."""
    with torch.no_grad():
        expected = model.predict_proba(example).float()
    actual = make_predictor(exported, "cpu")(example)
    dprob = float((actual - expected).abs().max())
    if not dprob <= TOLERANCE:
        raise GmsegError(
            f"the exported {exported.graph_format} graph gives probabilities {dprob:.2e} away from the torch model's "
            f"(more than {TOLERANCE}); nothing was written. Please report this with the model's config.json"
        )
    return dprob


__all__ = ["FORMATS", "ExportReport", "export_model"]
