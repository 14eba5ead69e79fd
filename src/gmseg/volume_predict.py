"""Prediction on volumes: a 2D model run slice by slice, the label volume written back where its input was.

For each input volume ``NAME.<ext>`` (NIfTI, NRRD, MHA ...) it writes ``NAME.<ext>``: a uint8 label volume
of class values with exactly the input's shape, spacing, origin and direction, in the input's format
(:func:`gmseg.data.readers.write_volume`); a DICOM series (a folder of ``.dcm`` slices) ``NAME.nii.gz``,
with the geometry of its headers. The slices are taken along the axis of the model's recorded
rule (:mod:`gmseg.data.slicing`), normalised as in training (the model folder's
:class:`~gmseg.data.normalization.VolumeInput`; a model trained on 2D images gets the per-volume z-score),
resized to the model's input size by training's evaluation transform, and go through the model in
batches; each slice's probabilities are resized back (bilinear, as for 2D files) before the argmax or
threshold.

Memory: the input array is read once; the output is one preallocated uint8 volume filled a batch of
slices at a time; a batch's normalised slices are the only float copy. ``save_prob`` writes the class
probabilities as one float32 volume per class, ``NAME.prob.<class>.<ext>`` (a binary model: the
foreground's ``NAME.prob.<ext>``), each also preallocated, so it costs 4 bytes per voxel and class. With
more than one volume, the next is read on a thread while this one is predicted and the previous one is
written on another (``workers=0``: in turn), so up to three volumes' arrays are in memory at once.

Under ``accelerate launch --num_processes N`` each process predicts every N-th volume into the one output
folder (:mod:`gmseg.prediction`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .distributed import current_launch
from .errors import DataError, GmsegError
from .labels import BINARY, LabelSet
from .prediction import BackgroundWriter, PredictionReport, claim_and_plan, evaluation_transform, finish, read_ahead

__all__ = ["input_stem", "is_volume_input", "predict_volume", "predict_volumes", "prob_paths", "volume_output_paths"]


def is_volume_input(path: str | os.PathLike[str]) -> bool:
    """A volume file by its ending (.nii.gz, .nii, .nrrd, .mha, .mhd), or a folder that is a DICOM series."""
    from .data.readers import is_dicom_series, is_volume_file

    return is_volume_file(path) or is_dicom_series(path)


def input_stem(path: Path) -> str:
    """The name an input's outputs take: a DICOM series folder's whole name, a file's name without its
    ending (``case.nii.gz`` -> ``case``)."""
    from .data.readers import is_dicom_series, split_name

    return path.name if is_dicom_series(path) else split_name(path)[0]


def prob_paths(output: Path, name: str, ending: str, labels: LabelSet) -> dict[int, Path]:
    """Where ``save_prob`` writes each class index's probability volume (binary: the foreground only)."""
    if labels.is_binary:
        return {1: output / f"{name}.prob{ending}"}
    return {index: output / f"{name}.prob.{cls}{ending}" for index, cls in enumerate(labels.names)}


def volume_output_paths(
    output: Path, path: Path, labels: LabelSet, save_prob: bool, name: str | None = None
) -> list[Path]:
    """Every file predicting ``path`` writes into ``output`` (as ``name``, default its own): the label volume
    (and the probabilities), in the input's format (a DICOM series: NIfTI)."""
    from .data.readers import output_suffix

    ending = output_suffix(path)
    name = input_stem(path) if name is None else name
    paths = [output / f"{name}{ending}"]
    return paths + (list(prob_paths(output, name, ending, labels).values()) if save_prob else [])


def single_channel(volume: Any) -> np.ndarray:
    """The (Z, Y, X) array of a one-channel :class:`~gmseg.data.readers.Volume` (a trailing channel axis of 1
    dropped); any other shape is refused by name: a 2D model reads one channel."""
    array = volume.array
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise DataError(
            f"cannot predict {volume.path}",
            [f"{volume.path}: shape {array.shape}; a volume of one channel (Z, Y, X) is expected"],
        )
    return array


def slices_to_batch(pixels: np.ndarray, size: int, intensity: str) -> torch.Tensor:
    """(B, H, W) float32 0..255 slices -> (B, 3, size, size) in [-1, 1] through training's evaluation
    transform (the same resize and standardisation validation used), one channel repeated to three."""
    transform = evaluation_transform(size, intensity)
    tensors = []
    for piece in pixels:
        image = np.repeat(np.ascontiguousarray(piece)[..., None], 3, axis=2)
        out = transform(image=image, mask=np.zeros(piece.shape, np.uint8))["image"]
        tensors.append(torch.as_tensor(out, dtype=torch.float32))
    return torch.stack(tensors) * 2.0 - 1.0


def predict_volume(
    predict: Callable[[torch.Tensor], torch.Tensor],
    volume: Any,
    *,
    image_size: int,
    labels: LabelSet = BINARY,
    threshold: float | None = None,
    record: Any = None,
    intensity: str = "none",
    batch_size: int = 8,
    save_prob: bool = False,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The (Z, Y, X) uint8 label volume of class values (and, with ``save_prob``, float32 probability
    volumes by class index) of a :class:`~gmseg.data.readers.Volume`, slice batch by slice batch."""
    from .data.normalization import VolumeInput
    from .data.slicing import put_slice, slice_axis, take_slice

    array = single_channel(volume)
    record = VolumeInput() if record is None else record
    axis = slice_axis(volume.geometry.spacing, record.slice_axis)
    statistics = record.statistics(array)
    labels_out = np.zeros(array.shape, np.uint8)
    classes = sorted(prob_paths(Path("."), "x", "", labels)) if save_prob else []
    probabilities = {index: np.zeros(array.shape, np.float32) for index in classes}
    count = array.shape[axis]
    for start in range(0, count, max(1, batch_size)):
        indices = range(start, min(start + max(1, batch_size), count))
        raw = np.stack([take_slice(array, axis, i) for i in indices])
        height, width = raw.shape[1:]
        batch = slices_to_batch(record.pixels(raw, statistics), image_size, intensity)
        probability = predict(batch).float().cpu()
        if probability.shape[-2:] != (height, width):
            probability = F.interpolate(probability, size=(height, width), mode="bilinear", align_corners=False)
        probability = probability.clamp(0, 1)
        values = labels.to_mask(probability, threshold).numpy()
        values = values[:, 0] if labels.is_binary else values
        for offset, index in enumerate(indices):
            put_slice(labels_out, axis, index, values[offset])
            for cls, target in probabilities.items():
                channel = 0 if labels.is_binary else cls
                put_slice(target, axis, index, probability[offset, channel].numpy())
    return labels_out, probabilities


def _plan(
    guard: Any,
    files: Sequence[Path],
    names: Sequence[str],
    output: Path,
    labels: LabelSet,
    save_prob: bool,
    protected: Sequence[Path],
) -> None:
    """Plan every output with the file rule's ``guard`` before anything is written: inputs that are not all
    volumes, an output folder that holds an input or is ``protected`` (the ground truth), two inputs of one
    name and existing files the guard may not replace are refused."""
    from .outputs import same_file

    planar = [f for f in files if not is_volume_input(f)]
    if planar:
        raise GmsegError(
            f"{planar[0]} is no volume file but other inputs are volumes: predict images and volumes separately."
        )
    for folder in protected:
        if same_file(folder, output):
            raise GmsegError(f"--output {output} is the ground-truth folder {folder}; choose another output folder.")
    inside = [f for f in files if same_file(f.resolve().parent, output) or same_file(f, output)]
    if inside:
        raise GmsegError(
            f"--output {output} holds the input volume {inside[0]}: predictions would be written over the "
            "inputs; choose another output folder."
        )
    guard.read(*files)
    guard.read_folder(*protected, *[f for f in files if f.is_dir()])  # nothing written into a DICOM series
    for path, name in zip(files, names):
        guard.plan(*volume_output_paths(output, path, labels, save_prob, name), owner=f"the prediction of {path}")


def predict_volumes(
    model: Any,
    files: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
    options: dict[str, Any] | None = None,
    save_prob: bool = False,
    overlay: bool = False,
    protected: Sequence[str | os.PathLike[str]] = (),
    batch_size: int = 8,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    progress: bool = True,
    names: Sequence[str] | None = None,
    workers: int | None = None,
) -> PredictionReport:
    """Predict every volume in ``files`` (a DICOM series: its folder) and write its label volume (and
    probabilities) into ``output_dir``, named like its input (or ``names``: e.g. nnU-Net case names without
    ``_0000``), in its format (:func:`gmseg.data.readers.output_suffix`: a DICOM series as NIfTI).

    ``predict`` (images in [-1, 1] -> probabilities) or ``options`` (those of
    :func:`gmseg.inference.make_predictor`: backend, precision, ...) choose the inference; default: the
    model's own probabilities. ``overlay`` is refused (``gmseg test`` draws volumes); ``protected`` folders
    (the ground truth) may not be the output. Outputs follow the file rule (:class:`gmseg.outputs.OutputGuard`:
    planned before the first is written, never over an input or a file gmseg did not write unless
    ``overwrite``). A volume that cannot be read is reported by name in the returned
    :class:`~gmseg.prediction.PredictionReport`; the others are still written. ``workers``: 0 reads, predicts
    and writes in turn; otherwise (default, with more than one volume) reading and writing overlap compute.
    """
    from tqdm.auto import tqdm

    from .data.readers import output_suffix
    from .outputs import OutputGuard

    if overlay:
        raise GmsegError("--overlay draws 2D images; for volumes, `gmseg test` draws each case's fullest slices.")
    paths = [Path(f) for f in files]
    names = [input_stem(p) for p in paths] if names is None else list(names)
    if len(names) != len(paths):
        raise GmsegError(f"{len(names)} output names given for {len(paths)} input volumes")
    output = Path(output_dir)
    labels = getattr(model, "labels", BINARY)
    launch, torch_device = current_launch(str(device))
    report = PredictionReport()
    with OutputGuard("predict", overwrite=overwrite) as guard:
        folders = [Path(p) for p in protected]
        claim_and_plan(launch, guard, output, lambda: _plan(guard, paths, names, output, labels, save_prob, folders))
        if predict is None:  # before any file is written: a missing runtime writes nothing
            predict = _default_predictor(model, torch_device, options or {})
        share = launch.share(list(zip(paths, names)))
        overlap = len(share) > 1 if workers is None else workers > 0
        bar = tqdm(total=len(share), desc="predict", unit="volume", disable=not progress or not launch.is_main)
        started = time.perf_counter()
        with BackgroundWriter(enabled=overlap, depth=1) as writer:
            for path, name, volume, error in read_ahead(map(_read, share), overlap):
                result = _predict_one(predict, model, volume, batch_size, save_prob) if error is None else error
                if isinstance(result, str):
                    report.failed[path.name] = result
                else:
                    writer.submit(_write, guard, output, name, output_suffix(path), volume, *result, labels, report)
                bar.update()
        bar.close()
        report.seconds = time.perf_counter() - started
        return finish(launch, output, report, names)


def _read(item: tuple[Path, str]) -> tuple[Path, str, Any, str | None]:
    """(path, name, volume, None), or (path, name, None, the one-line reason) for a volume that cannot be read."""
    from .data.readers import read_volume

    path, name = item
    try:
        return path, name, read_volume(path), None
    except (DataError, OSError) as error:
        return path, name, None, str(error).splitlines()[0]


def _predict_one(
    predict: Callable[[torch.Tensor], torch.Tensor], model: Any, volume: Any, batch_size: int, save_prob: bool
) -> tuple[np.ndarray, dict[int, np.ndarray]] | str:
    """:func:`predict_volume` with the model's settings; a volume it cannot take (4D) is its one-line reason."""
    labels = getattr(model, "labels", BINARY)
    try:
        return predict_volume(
            predict,
            volume,
            image_size=model.image_size,
            labels=labels,
            threshold=model.threshold if labels.is_binary else None,
            record=getattr(model, "volume_input", None),
            intensity=getattr(model, "intensity", "none"),
            batch_size=batch_size,
            save_prob=save_prob,
        )
    except (DataError, OSError) as error:
        return str(error).splitlines()[0]


def _write(
    guard: Any,
    output: Path,
    name: str,
    ending: str,
    volume: Any,
    values: np.ndarray,
    probabilities: dict[int, np.ndarray],
    labels: LabelSet,
    report: PredictionReport,
) -> None:
    """Write one volume's labels (and probabilities) with its input's geometry, then count it written."""
    from .data.readers import write_volume

    guard.save(output / f"{name}{ending}", lambda target: write_volume(target, values, volume.geometry))
    for index, target in prob_paths(output, name, ending, labels).items() if probabilities else ():
        guard.save(target, lambda out, array=probabilities[index]: write_volume(out, array, volume.geometry))
    report.written.append(name)


def _default_predictor(
    model: Any, device: str | torch.device, options: dict[str, Any]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's probabilities on ``device`` with ``options`` (:func:`gmseg.inference.make_predictor`)."""
    from .inference import make_predictor

    return make_predictor(model, device, **options)
