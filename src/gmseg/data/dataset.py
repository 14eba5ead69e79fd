"""The on-disk dataset layout (root/images/NAME.<ext>, root/masks/NAME.<ext>), its validation, and a
torch Dataset over it.

``check_dataset`` exists so a run fails before training starts, listing every bad file at once, rather
than crashing in a DataLoader worker hours in on the first broken one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gmseg.data.io import IMAGE_SUFFIXES, index_folder, read_image, read_label_map, read_mask, read_size
from gmseg.data.transforms import class_index_inputs
from gmseg.errors import ConfigError, DataError
from gmseg.labels import BINARY, LabelSet

__all__ = ["DATASET_JSON", "SegmentationDataset", "check_dataset", "dataset_labels", "list_names"]

DATASET_JSON = "dataset.json"
"""The file in a dataset root that names its classes (nnU-Net's convention: ``"labels"``)."""

_SUFFIX_HELP = f"NAME{IMAGE_SUFFIXES[0]} (or {'/'.join(IMAGE_SUFFIXES[1:])})"


def _folder(root: Path, sub: str) -> Path:
    folder = root / sub
    if not folder.is_dir():
        raise DataError(
            f"dataset folder missing: {folder}",
            [
                f"{folder}: not a directory; a dataset root needs images/ and masks/ "
                f"(run `gmseg prepare` to convert a public dataset)"
            ],
        )
    return folder


def list_names(root: str | os.PathLike[str]) -> list[str]:
    """Sorted stems of the image files in ``root/images``."""
    return sorted(index_folder(_folder(Path(root), "images")))


def dataset_labels(root: str | os.PathLike[str]) -> LabelSet:
    """The classes of the dataset at ``root``: its dataset.json's ``"labels"``; binary without either."""
    path = Path(root) / DATASET_JSON
    if not path.is_file():
        return BINARY
    labels = LabelSet.from_dataset_json(path)
    too_large = [f"{name}={value}" for name, value in zip(labels.names, labels.values) if value > 255]
    if too_large:  # mask files hold 8-bit class values: such a class could never appear in one
        raise ConfigError(f"{path}: 'labels' value(s) {too_large} exceed 255; number the classes 0..255")
    return labels


def _label_problems(mask: Path, labels: LabelSet) -> list[str]:
    """What is wrong with one multi-class label map (undeclared values, colour, JPEG), or nothing."""
    try:
        read_label_map(mask, labels)
    except DataError as exc:
        return list(exc.problems)
    except ConfigError as exc:
        return [str(exc)]
    return []


def check_dataset(
    root: str | os.PathLike[str],
    names: list[str] | None = None,
    check_sizes: bool = True,
    labels: LabelSet | None = None,
) -> None:
    """Raise one DataError listing every problem in the dataset at ``root`` (or in ``names`` of it).

    Problems: image or mask missing, name listed but no files, unreadable file, image/mask size differ.
    Reads only headers (plus Pillow's verify), so checking thousands of pairs takes seconds.
    With ``check_sizes=False`` only file presence is checked. ``labels`` (default: the dataset's own,
    :func:`dataset_labels`): with more than two classes every mask is also decoded and a value that is no
    declared class is reported per file.
    """
    root = Path(root)
    labels = dataset_labels(root) if labels is None else labels
    image_dir = _folder(root, "images")
    mask_dir = _folder(root, "masks")
    images, masks = index_folder(image_dir), index_folder(mask_dir)
    if names is None:
        names = sorted(set(images) | set(masks))
        if not names:
            raise DataError(f"no images found in {image_dir}", [f"{image_dir}: expected files {_SUFFIX_HELP}"])
    problems: list[str] = []
    for name in names:
        img, mask = images.get(name), masks.get(name)
        if img is None and mask is None:
            problems.append(
                f"{image_dir / name}.*: '{name}' is listed in the split but has no image "
                f"and no mask; expected {image_dir / name}{IMAGE_SUFFIXES[0]} and {mask_dir / name}{IMAGE_SUFFIXES[0]}"
            )
            continue
        if img is None:
            problems.append(f"{image_dir / name}.*: image missing for mask {mask}")
        if mask is None:
            problems.append(f"{mask_dir / name}.*: mask missing for image {img}")
        if not check_sizes:
            continue
        sizes = {}
        for kind, path in (("image", img), ("mask", mask)):
            if path is None:
                continue
            try:
                sizes[kind] = read_size(path)
            except DataError as exc:
                problems.extend(f"unreadable {kind}: {p}" for p in exc.problems)
        if len(sizes) == 2 and sizes["image"] != sizes["mask"]:
            (iw, ih), (mw, mh) = sizes["image"], sizes["mask"]
            problems.append(
                f"{mask}: mask is {mw}x{mh} but image {img} is {iw}x{ih} (width x height); "
                "they must match pixel for pixel"
            )
        if mask is not None and "mask" in sizes and not labels.is_binary:
            problems += _label_problems(mask, labels)
    if problems:
        raise DataError(f"dataset at {root} has {len(problems)} problem(s); fix them before training", problems)


class SegmentationDataset(Dataset):
    """Image/mask pairs of one split, as tensors ready for the autoencoder.

    Items: ``name``, ``image`` float32 (3, H, W) in [0, 1], ``mask`` float32 (1, H, W) in {0, 1}
    (when ``with_masks``; the target of ``labels``, :meth:`gmseg.labels.LabelSet.to_target`),
    ``original_size`` = tensor([H, W]) of the file, so predictions can be resized back. ``transform`` is called as ``transform(image=float32 HxWx3 in 0..255, mask=uint8 HxW {0,1})``,
    e.g. :func:`gmseg.data.build_transform`; None only scales to [0, 1].

    ``labels``: binary (the default, :data:`~gmseg.labels.BINARY`) reads masks by the one mask rule
    (:func:`gmseg.data.io.read_mask`); ``None`` takes the dataset's own (:func:`dataset_labels`). With more
    than two classes masks are label maps (:func:`gmseg.data.io.read_label_map`), ``mask`` holds class
    indices 0..K-1 and the transform gets the uint8 index map (plus
    :func:`gmseg.data.transforms.class_index_inputs`, so the package's pipelines keep the indices).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        names: list[str] | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        mask_threshold: float | None = None,
        with_masks: bool = True,
        augmentation_seed: int | None = None,
        labels: LabelSet | None = BINARY,
    ):
        self.root = Path(root)
        self.labels = dataset_labels(self.root) if labels is None else labels
        if mask_threshold is not None and not self.labels.is_binary:
            raise ConfigError(
                f"mask_threshold={mask_threshold} applies to binary masks; the {self.labels.num_classes}-class "
                f"label maps of {self.root} are read exactly (leave the threshold unset)"
            )
        # With a seed, sample i of epoch e always gets the same augmentation (set ``epoch`` before each
        # epoch): resumed runs, any worker count and any process count see identical views.
        self.augmentation_seed = augmentation_seed
        self.epoch = 0
        self.transform = transform
        self.mask_threshold = mask_threshold
        self.with_masks = with_masks
        images = index_folder(_folder(self.root, "images"))
        masks = index_folder(_folder(self.root, "masks")) if with_masks else {}
        self.names: list[str] = sorted(images) if names is None else list(names)
        problems = [f"{self.root / 'images' / n}.*: image missing" for n in self.names if n not in images]
        if with_masks:
            problems += [f"{self.root / 'masks' / n}.*: mask missing" for n in self.names if n not in masks]
        if problems:
            raise DataError(f"dataset at {self.root} is incomplete ({len(problems)} problem(s))", problems)
        self._images = [images[n] for n in self.names]
        self._masks = [masks[n] for n in self.names] if with_masks else []
        self._seeded_pid: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    def _seed_transform_once(self) -> None:
        """Give each process its own augmentation stream.

        albumentations 2.x keeps a private RNG in each Compose, so forked DataLoader workers would
        otherwise all draw the same augmentations. Workers are seeded from torch's per-worker seed
        (reproducible under torch.manual_seed); the main process only when no explicit seed was set.
        """
        pid = os.getpid()
        if self._seeded_pid == pid:
            return
        self._seeded_pid = pid
        set_seed = getattr(self.transform, "set_random_seed", None)
        if set_seed is None:
            return
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker or getattr(self.transform, "seed", None) is None:
            set_seed(torch.initial_seed() % 2**32)

    def _pair(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Item ``index``'s (H, W, 3) image in 0..255 and its mask (None without masks), as stored; a subclass
        (``gmseg.data.volume_dataset``: slices of volumes) overrides it and keeps everything else."""
        name, image_path = self.names[index], self._images[index]
        image = read_image(image_path)
        h, w = image.shape[:2]
        mask = None
        if self.with_masks:
            mask_path = self._masks[index]
            mask = self._read_mask(mask_path)
            if mask.shape != (h, w):
                raise DataError(
                    f"image and mask sizes differ for '{name}'",
                    [
                        f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                        f"{w}x{h} (width x height)"
                    ],
                )
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        image_path = self._images[index]
        image, mask = self._pair(index)
        h, w = image.shape[:2]
        item: dict[str, Any] = {"name": name, "original_size": torch.tensor([h, w], dtype=torch.long)}
        if self.transform is None:
            item["image"] = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
            if mask is not None:
                item["mask"] = torch.from_numpy(self.labels.to_target(mask))[None]
            return item
        if self.augmentation_seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(item_seed(self.augmentation_seed, self.epoch, index))
        else:
            self._seed_transform_once()
        inputs: dict[str, Any] = {"image": image.astype(np.float32)}
        if mask is not None:
            inputs["mask"] = mask if self.labels.is_binary else self.labels.to_target(mask).astype(np.uint8)
            if not self.labels.is_binary:
                inputs.update(class_index_inputs(self.transform))
        try:
            out = self.transform(**inputs)
        except Exception as exc:  # a transform error is useless without the file that triggered it
            raise DataError(f"transform failed on '{name}'", [f"{image_path}: {type(exc).__name__}: {exc}"]) from exc
        item["image"] = _as_chw_float(out["image"])
        if mask is not None and self.labels.is_binary:
            # A user transform may hand back 0/255 or interpolated values: the target maps them to a class.
            item["mask"] = self.labels.to_target(_as_chw_float(out["mask"]))
        elif mask is not None:
            item["mask"] = _class_indices(_as_chw_float(out["mask"]), self.labels, self._masks[index])
        return item

    def _read_mask(self, path: Path) -> np.ndarray:
        """Binary: the one mask rule's {0, 1}; more classes: the file's class values, checked."""
        if self.labels.is_binary:
            return read_mask(path, self.mask_threshold)
        return read_label_map(path, self.labels)


def _class_indices(mask: torch.Tensor, labels: LabelSet, path: Path) -> torch.Tensor:
    """A transformed index map, each pixel at its nearest class index; out of 0..K-1 is the transform's bug."""
    indices = torch.round(mask)
    if indices.numel() and (indices.min() < 0 or indices.max() > labels.num_classes - 1):
        raise DataError(
            f"transform returned a mask that is no class-index map for {path}",
            [
                f"{path}: values {float(mask.min()):g}..{float(mask.max()):g} after the transform, expected class "
                f"indices 0..{labels.num_classes - 1}; a multi-class transform must keep the index map "
                "(nearest-neighbour interpolation, no rescaling)"
            ],
        )
    return indices


def item_seed(*parts: int) -> int:
    """A 31-bit seed from integers, stable across processes and Python runs (unlike hash())."""
    value = 0x9E3779B1
    for part in parts:
        value = (value * 1_000_003 + int(part) + 0x632BE5AB) % (2**31 - 1)
    return value


def _as_chw_float(x: Any) -> torch.Tensor:
    """Accept what a user transform may return (HWC/HW numpy, CHW/HW tensor) as a float32 CHW tensor."""
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
        if t.ndim == 3:
            t = t.permute(2, 0, 1)
    else:
        t = torch.as_tensor(x)
    if t.ndim == 2:
        t = t[None]
    return t.to(torch.float32).contiguous()
