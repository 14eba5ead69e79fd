"""``gmseg export``: a trained model folder -> a folder holding one graph from images to probabilities.

The whole inference path is one graph (GMS: encode -> ``out`` head -> decode -> probability; the U-Net:
network -> sigmoid/softmax), with a free batch dimension and the model's square size fixed: the simplest
to deploy, and the fastest of the splits measured (issue #43). ``onnx`` is written with
``torch.onnx.export``; ``openvino`` converts that graph to OpenVINO IR, kept in fp32 (OpenVINO would
compress weights to fp16 by default). Before the folder appears, the exported graph is run on a seeded
image and must give the torch model's probabilities to ``TOLERANCE``; otherwise nothing is written.

``precision="int8"`` quantises the graph after training (weights per channel, activations per tensor) from
a calibration set of training images, prepared as prediction prepares them (read, resized and standardised
through the model's :class:`~gmseg.inference.InferenceSpec`): ``onnx`` with ONNX Runtime's
``quantize_static`` (QDQ, min-max ranges), ``openvino`` with NNCF's ``nncf.quantize``. int8 moves single
pixels by far more than any fp32 tolerance (the change that matters is test Dice, measured by
bench/backends.py), so its check is looser and stated: on the first calibration images the mean
|dprob| must stay within ``INT8_MEAN_TOLERANCE`` (a broken quantisation, e.g. ranges from the wrong
images, lands far beyond it) and the max |dprob| is reported, not bounded. config.json records the
precision and the calibration set (source, stage, seed, count and names).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import CALIBRATION_SIZE, CalibrationSet, calibration_set
from .errors import GmsegError
from .fileio import atomic_write_text, remove_path, swap_in, temporary_sibling
from .inference import InferenceSpec, make_predictor, require_extra
from .models import load_model
from .models.exported import GRAPH_FORMATS, ExportConfig, ExportedModel, file_sha256

FORMATS = tuple(GRAPH_FORMATS)
OPSET = 17
#: largest |probability difference| between the exported graph and the torch model that export accepts.
TOLERANCE = 1e-4
#: graph precisions of ``gmseg export --precision``; bf16 is no graph of its own but a runtime option.
EXPORT_PRECISIONS = ("fp32", "int8")
#: largest mean |dprob| over the verification images that an int8 export accepts: only a broken quantisation
#: goes beyond a tenth of the probability range on average (the tiny test models, with near-0.5
#: probabilities that int8 moves most, stay below 0.07).
INT8_MEAN_TOLERANCE = 0.1
#: calibration images an int8 export is verified on (against torch fp32).
INT8_VERIFY_IMAGES = 4
#: format -> the package that quantises it to int8.
QUANTIZERS = {"onnx": "onnxruntime", "openvino": "nncf"}


@dataclass
class ExportReport:
    folder: Path
    format: str
    max_dprob: float  # exported graph against the torch model, on the verification images
    precision: str = "fp32"
    mean_dprob: float | None = None  # int8: the checked statistic (INT8_MEAN_TOLERANCE)
    calibration: dict[str, Any] | None = None

    def summary(self) -> str:
        if self.precision == "fp32":
            return f"Exported to {self.folder} ({self.format}); max |dprob| against torch fp32: {self.max_dprob:.2e}"
        calibration = self.calibration or {}
        return (
            f"Exported to {self.folder} ({self.format}, {self.precision}, calibrated on {calibration.get('count')} "
            f"images of {calibration.get('source')}); against torch fp32 on {INT8_VERIFY_IMAGES} of them: "
            f"mean |dprob| {self.mean_dprob:.2e} (bound {INT8_MEAN_TOLERANCE}), max |dprob| {self.max_dprob:.2e}. "
            "Measure the change in Dice on test images before deploying it (bench/backends.py --model --data)"
        )


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


@contextmanager
def quiet_quantizers() -> Iterator[None]:
    """ONNX Runtime's quantiser logs advice on the root logger and NNCF its steps: only errors reach the user."""
    loggers = [logging.getLogger(), logging.getLogger("nncf")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def quantize_onnx(graph: Path, calibration: CalibrationSet) -> None:
    """``graph`` replaced by its int8 QDQ version (ONNX Runtime's static quantisation, min-max ranges over
    ``calibration``), after the shape inference and graph optimisation ONNX Runtime asks for first."""
    require_extra("onnxruntime", "gmseg export --precision int8 --format onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(calibration.images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.images, None)
            return None if image is None else {"image": image}

    prepared = graph.with_name("prepared.onnx")
    with quiet_quantizers():
        quant_pre_process(str(graph), str(prepared))
        quantize_static(str(prepared), str(graph), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    prepared.unlink()


def quantize_openvino(network: Any, calibration: CalibrationSet) -> Any:
    """The int8 version of an OpenVINO model: NNCF's post-training quantisation over ``calibration``, as a
    transformer-type model (its attention MatMuls and Softmax stay in float, activations asymmetric): NNCF's
    CNN defaults quantise GMS's self-attention and moved a trained model's probabilities by 0.3 on average,
    far past the int8 bound (BENCHMARKS.md, "Backends")."""
    nncf = require_extra("nncf", "gmseg export --precision int8 --format openvino")
    with quiet_quantizers():
        return nncf.quantize(
            network,
            nncf.Dataset(calibration.images),
            subset_size=len(calibration.images),
            model_type=nncf.ModelType.TRANSFORMER,
        )


def write_openvino(onnx_file: Path, folder: Path, calibration: CalibrationSet | None = None) -> None:
    """The ONNX graph as OpenVINO IR, int8 when ``calibration`` is given (quantised in memory: OpenVINO maps
    a read IR's weights file, which must not be written over while it is mapped)."""
    ov = require_extra("openvino", "gmseg export --format openvino")
    network = ov.convert_model(str(onnx_file))
    if calibration is not None:
        network = quantize_openvino(network, calibration)
    ov.save_model(network, str(folder / "model.xml"), compress_to_fp16=False)
    onnx_file.unlink()


def prepare_calibration(
    precision: str, calibration: Any, model: Any, size: int, seed: int, split: str | os.PathLike | None = None
) -> CalibrationSet | None:
    """The calibration set of an int8 export; refused when int8 has none or fp32 is given one it would ignore."""
    if precision not in EXPORT_PRECISIONS:
        raise GmsegError(f"export precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        if calibration is not None:
            raise GmsegError("--calibration is for --precision int8; an fp32 export needs no calibration images")
        return None
    if calibration is None:
        raise GmsegError(
            "--precision int8 needs --calibration DATASET_OR_FOLDER: training images to set the int8 ranges on"
        )
    if isinstance(calibration, CalibrationSet):
        return calibration
    volume_input = getattr(model, "volume_input", None)
    return calibration_set(calibration, InferenceSpec.of(model), size, seed, split, volume_input)


def export_model(
    model: Any,
    out_dir: str | os.PathLike,
    fmt: str = "onnx",
    *,
    overwrite: bool = False,
    precision: str = "fp32",
    calibration: str | os.PathLike | CalibrationSet | None = None,
    calibration_size: int = CALIBRATION_SIZE,
    calibration_seed: int = 0,
    calibration_split: str | os.PathLike | None = None,
) -> ExportReport:
    """Export ``model`` (a model or a model folder) as ``fmt`` into ``out_dir``, verified against torch.

    ``precision="int8"`` quantises the graph with ``calibration`` (a prepared dataset or an MSD / nnU-Net
    dataset of volumes, whose training stage of ``calibration_split`` or of its own split file is used, or a
    folder of images; up to ``calibration_size`` images or slices, sampled with ``calibration_seed``).
    """
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
    if precision == "int8":  # a missing quantiser is said before any image is read or graph written
        require_extra(QUANTIZERS[fmt], f"gmseg export --precision int8 --format {fmt}")
    calibrated = prepare_calibration(
        precision, calibration, model, calibration_size, calibration_seed, calibration_split
    )
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, model.image_size, model.image_size, generator=generator) * 2 - 1
    temp = temporary_sibling(out)
    temp.mkdir(parents=True)
    try:
        write_onnx(model, example, temp / "model.onnx")
        if calibrated is not None and fmt == "onnx":
            quantize_onnx(temp / "model.onnx", calibrated)
        if fmt == "openvino":
            write_openvino(temp / "model.onnx", temp, calibrated)
        config = ExportConfig(
            format=fmt,
            exported_from=type(model).__name__,
            image_size=model.image_size,
            intensity=model.intensity,
            threshold=model.threshold,
            labels=None if model.labels.is_binary else model.labels.to_labels(),
            volume=None if model.volume_input is None else model.volume_input.to_dict(),
            precision=precision,
            calibration=None if calibrated is None else calibrated.record(),
        )
        config.sha256 = {name: file_sha256(temp / name) for name in config.files}
        atomic_write_text(temp / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        exported = ExportedModel.from_pretrained(temp)
        if calibrated is None:
            report = ExportReport(out, fmt, verify(model, exported, example))
        else:
            images = torch.from_numpy(np.concatenate(calibrated.images[:INT8_VERIFY_IMAGES]))
            max_dprob, mean_dprob = verify_int8(model, exported, images)
            report = ExportReport(out, fmt, max_dprob, precision, mean_dprob, calibrated.record())
        swap_in(temp, out)
    except BaseException:
        remove_path(temp)
        raise
    return report


def verify(model: torch.nn.Module, exported: ExportedModel, example: torch.Tensor) -> float:
    """The exported graph's probabilities against the torch model's on ``example``; refused beyond TOLERANCE."""
    dprob = probability_change(model, exported, example)
    if not dprob.max() <= TOLERANCE:
        raise GmsegError(
            f"the exported {exported.graph_format} graph gives probabilities {dprob.max():.2e} away from the torch "
            f"model's (more than {TOLERANCE}); nothing was written. Please report this with the model's config.json"
        )
    return float(dprob.max())


def verify_int8(model: torch.nn.Module, exported: ExportedModel, images: torch.Tensor) -> tuple[float, float]:
    """(max |dprob|, mean |dprob|) of an int8 graph on ``images``; refused when the mean passes
    INT8_MEAN_TOLERANCE (or any probability is not finite): the max is reported, as int8 moves single pixels."""
    dprob = probability_change(model, exported, images)
    mean = float(dprob.mean())
    if not mean <= INT8_MEAN_TOLERANCE:
        raise GmsegError(
            f"the int8 {exported.graph_format} graph gives probabilities {mean:.2e} away from the torch model's on "
            f"average over {len(images)} calibration images (more than {INT8_MEAN_TOLERANCE}); nothing was written. "
            "Calibrate on the model's own training images, or export fp32"
        )
    return float(dprob.max()), mean


def probability_change(model: torch.nn.Module, exported: ExportedModel, images: torch.Tensor) -> torch.Tensor:
    """|probabilities of the exported graph - the torch model's| per pixel; NaN where the graph gives no number."""
    with torch.no_grad():
        expected = model.predict_proba(images).float()
    actual = make_predictor(exported, "cpu")(images)
    return torch.where(actual.isfinite(), (actual - expected).abs(), torch.nan)


__all__ = ["EXPORT_PRECISIONS", "FORMATS", "ExportReport", "export_model"]
