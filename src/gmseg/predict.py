"""Inference on image files: no ground truth needed.

For each input ``NAME.*`` it writes ``NAME.png`` (0/255 mask at the image's original size), optionally
``NAME.prob.npy`` (float32 probabilities, original size) and ``NAME.overlay.png``. Images are processed in
batches; an unreadable file is reported by name and the rest are still written, so one bad file in a
folder of thousands doesn't cost the run.

A model of more than two classes (``model.labels``, a :class:`~gmseg.labels.LabelSet`, whose
``predict_proba`` gives (B, K, H, W) class probabilities) writes instead ``NAME.png`` as a palette PNG of
class values (each pixel its most probable class, after resizing the K probabilities to the original
size), ``NAME.prob.npy`` as (K, H, W) float32, and ``NAME.overlay.png`` in one colour per class with a
legend (:func:`write_class_prediction`).

Reading overlaps compute (``workers`` DataLoader processes decode and resize the next batches) and so does
writing (a thread resizes, encodes and saves the previous batch). Under ``accelerate launch
--num_processes N`` each process predicts every N-th input into the one output folder
(:mod:`gmseg.prediction`); the files are those one process writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .distributed import Launch, current_launch
from .errors import DataError, GmsegError
from .inference import MIRROR_AXES, PRECISIONS, make_predictor, mirror_averaged, pick_device  # noqa: F401 (the API)
from .labels import BINARY, LabelSet
from .prediction import BackgroundWriter, PredictionReport, claim_and_plan, evaluation_transform, finish
from .volume_predict import input_stem, is_volume_input, predict_volumes

__all__ = ["PredictionReport", "collect_inputs", "evaluation_transform", "image_to_tensor", "predict_files"]


def collect_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand folders into their image files and DICOM series (sorted); keep explicitly named files as given.

    A folder that is a DICOM series (:func:`gmseg.data.readers.is_dicom_series`) is one input, named or
    inside a named folder. A file reached twice (named twice, named and in a named folder, or by a link) is
    kept once, so it is predicted and counted once.
    """
    from .data.io import IMAGE_SUFFIXES, is_image_file
    from .data.readers import is_dicom_series

    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if is_dicom_series(path):
            files.append(path)
        elif path.is_dir():  # hidden files (macOS ._name.png) are skipped, as prepare skips them
            files += sorted(p for p in path.iterdir() if _is_input(p))
        elif not path.exists() and (str(item).endswith(("/", os.sep)) or not is_image_file(path)):
            raise GmsegError(f"--input {item}: no such file or folder")  # not an image the reader would name
        else:
            files.append(path)  # missing files are reported per file by the reader
    if not files:
        raise GmsegError(
            f"No input images found in {', '.join(map(str, items))} (suffixes: {IMAGE_SUFFIXES}, or DICOM series "
            "folders of .dcm files)."
        )
    seen: set[object] = set()
    unique = []
    for path in files:
        try:
            status = path.stat()
            identity: object = (status.st_dev, status.st_ino)
        except OSError:
            identity = os.path.abspath(path)
        if identity not in seen:
            seen.add(identity)
            unique.append(path)
    return unique


def _is_input(path: Path) -> bool:
    """An entry of a listed folder that is predicted: an image or volume file, or a DICOM series folder."""
    from .data.io import is_image_file

    if path.is_dir():
        return is_volume_input(path)
    return path.is_file() and (is_image_file(path) or is_volume_input(path))


def plan_outputs(
    guard: Any,
    files: Sequence[Path],
    output: Path,
    *,
    save_prob: bool = False,
    overlay: bool = False,
    protected: Sequence[Path] = (),
    skip_complete: bool = False,
    stems: dict[Path, str] | None = None,
) -> dict[Path, list[Path]]:
    """Plan every file predict will write, before any is written: input -> its outputs, each named by the
    input's stem (or its ``stems`` entry: a case name).

    Refused (by ``guard``, a :class:`gmseg.outputs.OutputGuard`): an output folder that is a ``protected``
    folder (the ground truth) or holds an input image (compared as folders, so links count); two outputs
    with one name (two inputs with one stem, or ``x.overlay.png`` the overlay of ``x`` and the mask of an
    input ``x.overlay``); an existing file the guard may not replace. With ``skip_complete``, an input
    whose outputs gmseg already wrote, all of them, is left out (atomic writes: present means complete).
    """
    from .data.readers import OUTPUT_2D_SUFFIX
    from .outputs import same_file

    if output.exists() and not output.is_dir():
        raise GmsegError(f"--output {output} is an existing file, not a folder; choose another path.")
    for folder in protected:
        if same_file(folder, output):
            raise GmsegError(
                f"--output {output} is the ground-truth folder {folder}: masks would be written over "
                "it; choose another output folder."
            )
    in_output: dict[str, bool] = {}  # per folder: thousands of inputs share one
    for path in files:
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in in_output:
            in_output[folder] = same_file(folder, output)
        if in_output[folder] or (path.is_symlink() and same_file(path.resolve().parent, output)):
            raise GmsegError(
                f"--output {output} holds the input image {path}: predicted masks would be written "
                "over the inputs; choose another output folder."
            )
    guard.read(*files)
    guard.read_folder(*protected)
    mask_suffix, overlay_suffix = OUTPUT_2D_SUFFIX, f".overlay{OUTPUT_2D_SUFFIX}"
    suffixes = [mask_suffix] + [".prob.npy"] * save_prob + [overlay_suffix] * overlay
    kinds = {mask_suffix: "the mask", ".prob.npy": "the probabilities", overlay_suffix: "the overlay"}
    planned: dict[Path, list[Path]] = {}
    for path in files:
        stem = stems[path] if stems is not None else input_stem(path)
        outputs = [output / f"{stem}{suffix}" for suffix in suffixes]
        if skip_complete and all(p.is_file() and guard.is_own(p) for p in outputs):
            continue
        planned[path] = outputs
    owners = [(p, f"{kinds[s]} of {path}") for path, outputs in planned.items() for p, s in zip(outputs, suffixes)]
    seen: dict[Path, str] = {}
    for target, owner in owners:  # name both inputs when two outputs collide, before any existence check
        if target in seen:
            raise GmsegError(
                f"{seen[target]} and {owner} would both be written to {target}: the second would replace the "
                "first; rename one input or predict them into separate folders."
            )
        seen[target] = owner
    guard.plan(*seen)  # an input among them is refused first; then every file it may not replace, counted
    return planned


def image_to_tensor(image: np.ndarray, size: int, intensity: str = "none") -> torch.Tensor:
    """uint8 RGB (H,W,3) -> (3,size,size) float in [-1,1], histogram-standardised as ``intensity`` says;
    not resampled when already ``size``x``size`` and not standardised."""
    tensor = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).div(255.0)
    if tensor.shape[1:] != (size, size) or intensity != "none":
        transform = evaluation_transform(size, intensity)
        tensor = transform(image=image.astype(np.float32), mask=np.zeros(image.shape[:2], np.uint8))["image"]
    return tensor * 2.0 - 1.0


def class_probabilities_at_size(probability: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(C,S,S) probabilities -> (C,H,W) float32 at the original image size, each channel bilinear.

    Bilinear weights are the same for every channel, so K softmax probabilities still sum to 1 per pixel.
    """
    if probability.shape[-2:] != (height, width):
        probability = F.interpolate(probability[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return probability.clamp(0, 1).float().cpu().numpy()


def probability_at_size(probability: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(1,S,S) probability -> (H,W) float32 at the original image size (bilinear)."""
    return class_probabilities_at_size(probability, height, width)[0]


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """np.save into a file object (a name would get ".npy" appended), through the one atomic writer."""
    from .fileio import atomic_write

    atomic_write(path, lambda stream: np.save(stream, array))


def write_binary_prediction(
    output: Path,
    name: str,
    image: np.ndarray,
    probability: torch.Tensor,
    threshold: float,
    save_prob: bool,
    overlay: bool,
    gt_dir: str | os.PathLike | None,
    notes: list[str] | None = None,
) -> None:
    """Write one image's binary outputs: the 0/255 mask, optionally (H,W) float32 probabilities and the overlay
    (with the ``gt_dir`` truth outlined when it can be drawn; otherwise without it, said in ``notes``)."""
    from .data.io import find_file, write_mask_png
    from .data.readers import OUTPUT_2D_SUFFIX

    prob = probability_at_size(probability, *image.shape[:2])
    mask = BINARY.to_mask(prob, threshold)
    write_mask_png(output / f"{name}{OUTPUT_2D_SUFFIX}", mask)
    if save_prob:
        save_npy_atomic(output / f"{name}.prob.npy", prob.astype(np.float32))
    if overlay:
        from .visualize import save_overlay

        gt_file = find_file(Path(gt_dir), name) if gt_dir is not None else None
        gt = overlay_truth(gt_file, image.shape[:2], None, notes)
        save_overlay(output / f"{name}.overlay{OUTPUT_2D_SUFFIX}", image, mask, None if gt is None else gt.astype(bool))


def overlay_truth(
    gt_file: Path | None, shape: tuple[int, ...], labels: LabelSet | None, notes: list[str] | None
) -> np.ndarray | None:
    """The --gt mask to outline on an overlay, or None: an unreadable truth or one of another size is left
    off that overlay with a note (as an unreadable input is skipped), never the end of the whole run."""
    from .data.io import read_label_map, read_mask

    if gt_file is None:
        return None
    try:
        gt = read_mask(gt_file) if labels is None else read_label_map(gt_file, labels)
    except (GmsegError, OSError, ValueError) as error:
        why = str(error).splitlines()[0]
        (notes if notes is not None else []).append(f"{gt_file}: unreadable, left off its overlay ({why})")
        return None
    if gt.shape[:2] != tuple(shape[:2]):
        (notes if notes is not None else []).append(
            f"{gt_file}: {gt.shape[1]}x{gt.shape[0]} but its image is {shape[1]}x{shape[0]} (WxH); left off its overlay"
        )
        return None
    return gt


def write_class_prediction(
    output: Path,
    name: str,
    image: np.ndarray,
    probability: torch.Tensor,
    labels: LabelSet,
    *,
    save_prob: bool = False,
    overlay: bool = False,
    gt_file: Path | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Write one image's K-class outputs; returns its (H,W) uint8 map of class values.

    ``probability`` is the model's (K,S,S) for the (H,W,3) ``image``: resized to (H,W) per class, the map
    is each pixel's most probable class (:meth:`LabelSet.to_mask`) in ``output/NAME.png`` (palette PNG);
    ``save_prob`` writes the (K,H,W) float32 probabilities to ``NAME.prob.npy``, ``overlay`` the class
    overlay (with ``gt_file``'s label map outlined when given) to ``NAME.overlay.png``.
    """
    from .data.io import write_label_map_png
    from .data.readers import OUTPUT_2D_SUFFIX

    if probability.ndim != 3 or probability.shape[0] != labels.num_classes:
        raise GmsegError(
            f"the model names {labels.num_classes} classes {list(labels.names)} but predicted probabilities of "
            f"shape {tuple(probability.shape)} for {name}; expected ({labels.num_classes}, H, W)"
        )
    prob = class_probabilities_at_size(probability, *image.shape[:2])
    values = labels.to_mask(prob)
    write_label_map_png(output / f"{name}{OUTPUT_2D_SUFFIX}", values, labels)  # refuses undeclared values
    if save_prob:
        save_npy_atomic(output / f"{name}.prob.npy", prob.astype(np.float32))
    if overlay:
        from .visualize import save_class_overlay

        gt = overlay_truth(gt_file, image.shape[:2], labels, notes)
        save_class_overlay(output / f"{name}.overlay{OUTPUT_2D_SUFFIX}", image, values, labels, gt)
    return values


class ImageFiles(torch.utils.data.Dataset):
    """Image files read and brought to the model's input, one per item, in a DataLoader worker or here.

    An item is (path, original image, model-size tensor, error): an unreadable file is an item with its
    one-line error instead of an exception, so the run goes on and names it.
    """

    def __init__(self, files: Sequence[Path], size: int, intensity: str = "none"):
        self.files, self.size, self.intensity = list(files), size, intensity

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Path, np.ndarray | None, torch.Tensor | None, str | None]:
        from .data.io import read_image

        path = self.files[index]
        try:
            image = read_image(path)
        except (DataError, OSError) as error:
            return path, None, None, str(error).splitlines()[0]
        return path, image, image_to_tensor(image, self.size, self.intensity), None


def collate_images(
    items: list[tuple[Path, np.ndarray | None, torch.Tensor | None, str | None]],
) -> tuple[list[Path], list[np.ndarray], torch.Tensor | None, dict[str, str]]:
    """A batch of :class:`ImageFiles` items as (readable paths, their original images, the model-size batch
    or None, {file name: error} of the unreadable); stacked where it was read, so it crosses once."""
    read = [(path, image, tensor) for path, image, tensor, error in items if error is None]
    failed = {path.name: error for path, _, _, error in items if error is not None}
    batch = torch.stack([tensor for _, _, tensor in read]) if read else None
    return [path for path, _, _ in read], [image for _, image, _ in read], batch, failed


def auto_workers(files: int, batch_size: int, world: int = 1) -> int:
    """Reading processes when the caller does not say: none for one batch (nothing to overlap), else the
    cores this rank may use besides its own, at most 4."""
    if files <= max(1, batch_size):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(4, cores // max(1, world) - 1))


def image_batches(
    files: Sequence[Path], size: int, batch_size: int, intensity: str = "none", workers: int = 0
) -> torch.utils.data.DataLoader:
    """Batches of :class:`ImageFiles` items in file order, read by ``workers`` processes ahead of the model
    (0: read here, between batches)."""
    return torch.utils.data.DataLoader(
        ImageFiles(files, size, intensity),
        batch_size=max(1, batch_size),
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_images,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


def predict_files(
    model: Any,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    save_prob: bool = False,
    overlay: bool = False,
    gt_dir: str | os.PathLike | None = None,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    tta: bool = False,
    overwrite: bool = False,
    backend: str = "auto",
    skip_complete: bool = False,
    workers: int | None = None,
    names: Sequence[str] | None = None,
) -> PredictionReport:
    """Predict every input image and write its mask (and optionally probabilities / overlay).

    Outputs are named like their inputs (``x.jpg`` -> ``x.png``), or by ``names``: one stem per input file,
    in order (``gmseg test`` writes nnU-Net's ``CASE_0000.png`` as ``CASE.png``; volumes as
    :func:`~gmseg.volume_predict.predict_volumes` names them).

    A model whose ``labels`` name more than two classes writes label maps (:func:`write_class_prediction`).
    ``backend``, ``precision``, ``channels_last`` and ``compile`` are the options of
    :func:`gmseg.inference.make_predictor`, ``tta`` its mirror averaging; the defaults give exactly
    :meth:`GMS.predict_proba`'s numbers (an exported folder runs on its own runtime).

    Outputs follow the file rule (:func:`plan_outputs`, :class:`gmseg.outputs.OutputGuard`): all planned and
    checked before the first is written, the output folder claimed against a second run. ``skip_complete``
    (``--continue``) continues an interrupted run: inputs whose outputs gmseg already wrote are skipped
    (``report.skipped``), the rest predicted, their partial outputs replaced.

    ``workers``: processes reading images ahead of the model, with writing on a thread behind it (0: read,
    predict and write in turn; None: :func:`auto_workers`). Under a launch of several processes each
    predicts its share of the inputs and every one returns the launch's report (:mod:`gmseg.prediction`).
    """
    from .outputs import OutputGuard

    if gt_dir is not None and not Path(gt_dir).is_dir():
        raise GmsegError(f"--gt {gt_dir} is not a folder: give the folder of true masks drawn on the overlays")
    if workers is not None and workers < 0:
        raise GmsegError(f"--workers must be 0 or more (0: read, predict and write in turn), got {workers}")
    launch, torch_device = current_launch(device)
    files = collect_inputs(inputs)
    stems = _named_stems(inputs, names, files)
    output = Path(output_dir)
    options = dict(backend=backend, precision=precision, channels_last=channels_last, compile=compile, tta=tta)
    if any(is_volume_input(f) for f in files):  # volumes: slice by slice, written back with their geometry
        return predict_volumes(
            model, files, output, save_prob=save_prob, overlay=overlay, batch_size=batch_size, device=torch_device,
            overwrite=overwrite, progress=progress, protected=[Path(gt_dir)] if gt_dir is not None else [],
            options=options, workers=workers, names=None if stems is None else [stems[f] for f in files],
        )  # fmt: skip
    hint = "pass --overwrite to replace them, or --continue to keep the complete ones and predict the rest"
    protected = [Path(gt_dir)] if gt_dir is not None else []
    with OutputGuard("predict", overwrite=overwrite, replace_own=skip_complete, hint=hint) as guard:
        planned = claim_and_plan(
            launch,
            guard,
            output,
            lambda: plan_outputs(
                guard,
                files,
                output,
                save_prob=save_prob,
                overlay=overlay,
                protected=protected,
                skip_complete=skip_complete,
                stems=stems,
            ),
        )
        stem_of = stems or {path: input_stem(path) for path in files}
        report = _predict_planned(
            guard, planned, files, output, model, torch_device, save_prob, overlay, gt_dir, batch_size, progress,
            options, launch, workers, stem_of,
        )  # fmt: skip
        return finish(launch, output, report, [stem_of[path] for path in files])


def _named_stems(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], names: Sequence[str] | None, files: list[Path]
) -> dict[Path, str] | None:
    """Input file -> the output stem ``names`` gives it (None without ``names``): one name per named file,
    so a folder (whose files are listed here) or a count that differs is refused before anything is read."""
    if names is None:
        return None
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = [Path(item) for item in items]
    if len(names) != len(paths) or len(files) != len(paths) or any(a != b for a, b in zip(files, paths)):
        raise GmsegError(
            f"{len(names)} output names for {len(paths)} inputs: names need one distinct input file each, in order"
        )
    return dict(zip(paths, names))


def _predict_planned(
    guard: Any,
    planned: dict[Path, list[Path]],
    files: list[Path],
    output: Path,
    model: Any,
    torch_device: torch.device,
    save_prob: bool,
    overlay: bool,
    gt_dir: str | os.PathLike | None,
    batch_size: int,
    progress: bool,
    options: dict[str, Any],
    launch: Launch | None = None,
    workers: int | None = None,
    stem_of: dict[Path, str] | None = None,
) -> PredictionReport:
    """The loop of :func:`predict_files` over this rank's share of the planned inputs, each output recorded
    by ``guard`` as gmseg's just before it is written (atomically)."""
    from tqdm.auto import tqdm

    from .data.io import find_file

    launch = launch or Launch()
    stem_of = stem_of or {path: input_stem(path) for path in files}
    skipped = [stem_of[path] for path in files if path not in planned] if launch.is_main else []
    report = PredictionReport(skipped=skipped)
    files = launch.share(list(planned), batch_size)  # rank 0's order, whole batches: as one process runs them
    # before any file is written: a missing runtime or a bad graph writes nothing
    predict = make_predictor(model, torch_device, **options)
    size, labels, intensity = predict.spec.image_size, predict.spec.labels, predict.spec.intensity
    threshold = predict.spec.threshold if labels.is_binary else None  # K classes: argmax, no threshold
    workers = auto_workers(len(files), batch_size, launch.world) if workers is None else workers

    def write(path: Path, image: np.ndarray, probability: torch.Tensor) -> None:
        name = stem_of[path]
        guard.record(*planned[path])
        if labels.is_binary:
            write_binary_prediction(
                output, name, image, probability, threshold, save_prob, overlay, gt_dir, report.notes
            )
        else:
            gt_file = find_file(Path(gt_dir), name) if overlay and gt_dir is not None else None
            write_class_prediction(
                output, name, image, probability, labels, save_prob=save_prob, overlay=overlay, gt_file=gt_file,
                notes=report.notes,
            )  # fmt: skip
        report.written.append(name)

    started = time.perf_counter()
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress or not launch.is_main)
    with BackgroundWriter(enabled=workers > 0, depth=2 * max(1, batch_size)) as writer:
        for paths, images, batch, failed in image_batches(files, size, batch_size, intensity, workers):
            report.failed.update(failed)
            if batch is not None:
                for path, image, probability in zip(paths, images, predict(batch)):
                    writer.submit(write, path, image, probability)
            bar.update(len(paths) + len(failed))
    bar.close()
    report.seconds = time.perf_counter() - started
    return report
