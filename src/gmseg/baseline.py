"""A discriminative baseline for GMS: MONAI's residual U-Net trained on pixels with Dice + BCE.

The comparison is meant to be fair, so the baseline shares everything with GMS that is not the method:

* the same :class:`~gmseg.config.Config` (``data.*`` and ``train.epochs/batch_size/lr/weight_decay/
  warmup_epochs/seed/output_dir/device/mixed_precision/gradient_accumulation_steps``), so one YAML drives
  both; ``model.*`` and ``loss.*`` are GMS-only and ignored here;
* the same split (:func:`gmseg.train.resolve_split`: validation carved from train, or test under
  ``protocol: paper``), the same augmented dataset (:func:`gmseg.train.make_dataset`, per-item seeds) and
  the same input normalisation (``2x - 1``);
* the same learning-rate schedule (:func:`gmseg.train.lr_factor`: ``train.lr_schedule``, release or smooth,
  single phase), always computed over the
  *planned* ``train.epochs``, even when a wall-clock budget (``max_minutes``) stops the run earlier;
* the same model selection (best mean validation Dice, threshold 0.5, an empty mask predicted empty
  scores 1) and the same ``train_log.csv`` columns;
* the same inference resizing as ``gmseg predict`` (:func:`gmseg.predict.image_to_tensor` /
  :func:`gmseg.predict.probability_at_size`), so masks are written at each image's original size.

Run folder::

    config.yaml  split.json  train_log.csv  run_info.json
    unet_config.json     architecture (written once, before training)
    best.safetensors     weights of the best validation epoch (metadata: epoch, val_dice), swapped atomically
    predictions/ test/   with ``--predict-test``: NAME.png masks, metrics.csv, summary.json

``train_log.csv``: ``loss`` is the total, ``loss_rec`` its BCE part and ``loss_dice`` its Dice part.

Command line::

    python -m gmseg.baseline --config configs/busi.yaml --max-minutes 60 --out runs/unet-busi --predict-test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .config import Config, load_config
from .errors import CheckpointError, ConfigError, DataError, GmsegError
from .fileio import atomic_save_file, atomic_write_text
from .train import (
    EpochLog,
    TrainingDivergedError,
    averaged_weights,
    lr_factor,
    make_dataset,
    make_ema,
    new_run_dir,
    resolve_split,
)

WEIGHTS_NAME = "best.safetensors"
CONFIG_NAME = "unet_config.json"
INFO_NAME = "run_info.json"
DEFAULT_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256)
THRESHOLD = 0.5

__all__ = [
    "DEFAULT_CHANNELS",
    "build_unet",
    "count_trainable",
    "load_unet",
    "main",
    "predict_unet",
    "train_unet",
    "unet_config",
]


# ---------------------------------------------------------------------------------------------- model
def unet_config(channels: Sequence[int], image_size: int) -> dict[str, Any]:
    """The architecture as JSON-able keyword arguments of ``monai.networks.nets.UNet`` (+ inference facts).

    MONAI's defaults are written out so a folder rebuilds the same network under a future MONAI.
    """
    channels = [int(c) for c in channels]
    if len(channels) < 2 or any(c < 1 for c in channels):
        raise ConfigError(f"U-Net channels must be at least two positive integers, e.g. 16,32,64; got {channels}")
    levels = len(channels) - 1
    if image_size % (2**levels):
        raise ConfigError(
            f"data.image_size {image_size} must be divisible by 2^{levels} = {2**levels} for a U-Net with "
            f"{len(channels)} channel levels; use fewer channel levels or another image size."
        )
    return {
        "unet": {
            "spatial_dims": 2,
            "in_channels": 3,
            "out_channels": 1,
            "channels": channels,
            "strides": [2] * levels,
            "kernel_size": 3,
            "up_kernel_size": 3,
            "num_res_units": 2,
            "act": "PRELU",
            "norm": "INSTANCE",
            "dropout": 0.0,
            "bias": True,
            "adn_ordering": "NDA",
        },
        "image_size": int(image_size),
        "input": "rgb / 255 * 2 - 1",
        "output": "one logit per pixel; foreground = sigmoid > threshold",
        "threshold": THRESHOLD,
    }


def build_unet(config: dict[str, Any]) -> torch.nn.Module:
    from monai.networks.nets import UNet

    kwargs = dict(config["unet"])
    for key in ("channels", "strides"):
        kwargs[key] = tuple(kwargs[key])
    return UNet(**kwargs)


def count_trainable(module: torch.nn.Module) -> int:
    """Number of trainable parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in module.parameters():
        if parameter.requires_grad and id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """safetensors under a temporary name, then ``os.replace``: a kill never leaves half a file."""
    from safetensors.torch import save_model

    atomic_save_file(path, lambda name: save_model(model, name, metadata={"format": "pt", **metadata}))


def read_unet_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    folder = Path(run_dir)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{folder} is not a U-Net baseline run folder (expected {CONFIG_NAME} and {WEIGHTS_NAME}); "
            "create one with 'python -m gmseg.baseline'."
        )
    try:
        config = json.loads(path.read_text())
        config["unet"]["channels"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} is unreadable or not a U-Net description: {error}") from error
    return config


class UNetModel(torch.nn.Module):
    """The baseline behind the same inference contract as :class:`gmseg.model.GMS` (``predict_proba``,
    ``image_size``, ``threshold``), so ``gmseg predict``, ``test`` and ``generalize`` take either folder."""

    def __init__(self, net: torch.nn.Module, config: dict[str, Any]):
        super().__init__()
        self.net = net
        self.unet_config = config

    @property
    def image_size(self) -> int:
        return int(self.unet_config["image_size"])

    @property
    def threshold(self) -> float:
        return float(self.unet_config.get("threshold", THRESHOLD))

    @torch.no_grad()
    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W) for images in [-1, 1]."""
        return torch.sigmoid(self.net(image).float())


def is_unet_folder(path: str | os.PathLike) -> bool:
    """A baseline run folder (``unet_config.json`` beside its weights), as opposed to a GMS model folder."""
    return (Path(path) / CONFIG_NAME).is_file()


def load_unet_model(run_dir: str | os.PathLike) -> UNetModel:
    """The best U-Net of a run folder wrapped as a :class:`UNetModel`."""
    net = load_unet(run_dir)
    return UNetModel(net, net.gmseg_config)


def load_unet(run_dir: str | os.PathLike) -> torch.nn.Module:
    """The best U-Net of a run folder (``best.safetensors`` + ``unet_config.json``), on CPU, in eval mode.

    Only safetensors are read: no pickle is ever unpickled. The architecture description is kept on the
    module as ``gmseg_config`` (image size and threshold for inference).
    """
    from safetensors.torch import load_model

    folder = Path(run_dir)
    config = read_unet_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing: the run has not finished an epoch yet.")
    model = build_unet(config)
    try:
        load_model(model, str(weights), strict=True)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{weights} cannot be loaded into the U-Net of {CONFIG_NAME}: {error}") from error
    model.gmseg_config = config
    return model.eval()


# ---------------------------------------------------------------------------------------------- training
def pick_device(config: Config) -> torch.device:
    if config.train.device == "cuda" or (config.train.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise GmsegError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
        return torch.device("cuda")
    return torch.device("cpu")


def segmentation_losses(logits: torch.Tensor, mask: torch.Tensor, dice_loss: Any) -> dict[str, torch.Tensor]:
    """MONAI DiceLoss(sigmoid) + BCE-with-logits: what ``DiceCELoss(sigmoid=True)`` computes, in parts."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, mask)
    dice = dice_loss(logits, mask)
    return {"loss": bce + dice, "loss_rec": bce, "loss_dice": dice}


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean per-image Dice and IoU at threshold 0.5 (empty predicted empty = 1), as GMS validates."""
    from monai.metrics import compute_dice, compute_iou

    model.eval()
    dices, ious = [], []
    for batch in loader:
        logits = model(batch["image"].to(device) * 2 - 1).float()
        prediction = (torch.sigmoid(logits) > THRESHOLD).float()
        mask = batch["mask"].to(device)
        dices += compute_dice(prediction, mask, include_background=True, ignore_empty=False).view(-1).tolist()
        ious += compute_iou(prediction, mask, include_background=True, ignore_empty=False).view(-1).tolist()
    model.train()
    return float(np.mean(dices)), float(np.mean(ious))


def check_budget(max_minutes: float | None) -> None:
    if max_minutes is not None and not (
        isinstance(max_minutes, (int, float)) and math.isfinite(max_minutes) and max_minutes > 0
    ):
        raise ConfigError(f"max_minutes must be a positive number of minutes or None, got {max_minutes!r}")


def train_unet(
    config: Config,
    run_dir: str | os.PathLike | None = None,
    max_minutes: float | None = None,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    progress: bool = True,
) -> Path:
    """Train the U-Net baseline from a GMS config; returns the run folder.

    ``max_minutes`` is a wall-clock budget for the epoch loop (training, validation and saving): the run
    stops after the first epoch that ends past it. The lr schedule still spans ``train.epochs``, so set
    the epochs GMS was given and the budget GMS used to compare "same data, same schedule, same time".
    """
    from monai.losses import DiceLoss
    from tqdm.auto import tqdm

    from . import __version__
    from .data.dataset import check_dataset, item_seed
    from .data.splits import save_split

    check_budget(max_minutes)
    t = config.train
    architecture = unet_config(channels, config.data.image_size)
    if run_dir is None:
        run_dir = new_run_dir(replace(config, name=f"{config.name}-unet"))
    run_dir = Path(run_dir)
    if (run_dir / WEIGHTS_NAME).exists():
        raise GmsegError(f"{run_dir} already holds a trained baseline ({WEIGHTS_NAME}); choose another folder.")
    device = pick_device(config)
    split = resolve_split(config)
    if not split.get("train"):
        raise GmsegError("The split has no training names.")
    val_names = split.get("val") or []
    check_dataset(config.data.root, sorted(set(split["train"]) | set(val_names)))

    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.yaml")
    save_split(split, run_dir / "split.json")
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps(architecture, indent=2) + "\n")

    torch.manual_seed(t.seed)
    model = build_unet(architecture).to(device)
    trainable = count_trainable(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    ema = make_ema(model.parameters(), t.ema_decay)  # as GMS: validated and saved when on
    dice_loss = DiceLoss(sigmoid=True)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.mixed_precision)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    accumulate = t.gradient_accumulation_steps

    train_set = make_dataset(config, split["train"], augment=True)
    val_loader = DataLoader(
        make_dataset(config, val_names, augment=False) if val_names else [],
        batch_size=t.batch_size,
        num_workers=config.data.num_workers,
    )
    log = EpochLog(run_dir / "train_log.csv", keep_epochs=0)
    info: dict[str, Any] = {
        "model": "monai.networks.nets.UNet",
        "trainable_parameters": trainable,
        "channels": architecture["unet"]["channels"],
        "loss": "DiceLoss(sigmoid=True) + BCEWithLogits",
        "epochs_planned": t.epochs,
        "epochs_completed": 0,
        "max_minutes": max_minutes,
        "stopped_by_budget": False,
        "best_epoch": 0,
        "best_val_dice": None,
        "training_seconds": 0.0,
        "seconds_per_epoch": None,
        "device": str(device),
        "mixed_precision": t.mixed_precision,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "gmseg": __version__,
        "torch": torch.__version__,
    }

    model.train()
    best = -1.0
    started = time.monotonic()
    epochs = tqdm(range(t.epochs), desc="epochs (U-Net)", disable=not progress)

    def apply_step_lr(progress: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = t.lr * lr_factor(t.lr_schedule, progress, t.warmup_epochs, t.epochs)

    for epoch in epochs:
        epoch_started = time.monotonic()
        apply_step_lr(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_set.epoch = epoch
        loader = DataLoader(
            train_set,
            batch_size=t.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(item_seed(t.seed, epoch, 3)),
            drop_last=len(train_set) > t.batch_size,  # as GMS (and the release)
            num_workers=config.data.num_workers,
        )
        totals, count = {"loss": 0.0, "loss_rec": 0.0, "loss_dice": 0.0}, 0
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(loader):
            apply_step_lr(epoch + step / len(loader))
            image, mask = batch["image"].to(device) * 2 - 1, batch["mask"].to(device)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
                logits = model(image)
            losses = segmentation_losses(logits, mask, dice_loss)
            if not torch.isfinite(losses["loss"]):
                raise TrainingDivergedError(
                    f"U-Net loss became {losses['loss'].item()} at epoch {epoch + 1}, step {step + 1}; training "
                    f"stopped ({WEIGHTS_NAME}, if any, holds the best finished epoch). Lower train.lr."
                )
            scaler.scale(losses["loss"] / accumulate).backward()
            if (step + 1) % accumulate == 0 or step + 1 == len(loader):
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.step(model.parameters())
            for key in totals:
                totals[key] += losses[key].item()
            count += 1
        metrics = {k: v / max(1, count) for k, v in totals.items()}
        with averaged_weights(ema, model.parameters()):
            val_dice, val_iou = validate(model, val_loader, device) if val_names else (float("nan"), float("nan"))
            improved = val_dice > best if val_names else True  # no validation: keep the last epoch
            if improved:
                best = val_dice if val_names else -1.0
                save_weights(model, run_dir / WEIGHTS_NAME, {"epoch": str(epoch + 1), "val_dice": repr(val_dice)})
                info["best_epoch"], info["best_val_dice"] = epoch + 1, (val_dice if val_names else None)
        log.append(
            {
                "epoch": epoch + 1,
                "lr": lr,
                **metrics,
                "val_dice": val_dice,
                "val_iou": val_iou,
                "seconds": round(time.monotonic() - epoch_started, 3),
            }
        )
        elapsed = time.monotonic() - started
        info.update(
            epochs_completed=epoch + 1,
            training_seconds=round(elapsed, 3),
            seconds_per_epoch=round(elapsed / (epoch + 1), 3),
        )
        over_budget = max_minutes is not None and elapsed >= max_minutes * 60 and epoch + 1 < t.epochs
        info["stopped_by_budget"] = over_budget
        atomic_write_text(run_dir / INFO_NAME, json.dumps(info, indent=2) + "\n")
        epochs.set_postfix(loss=f"{metrics['loss']:.4f}", val_dice=f"{val_dice:.4f}")
        if over_budget:
            break
    epochs.close()
    return run_dir


# ---------------------------------------------------------------------------------------------- inference
@torch.no_grad()
def predict_unet(
    run_dir: str | os.PathLike | torch.nn.Module,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    batch_size: int = 8,
    device: str = "auto",
    tta: bool = False,
) -> dict[str, Any]:
    """Write ``NAME.png`` (0/255, each image's original size) for every input image, as ``gmseg predict``.

    ``tta`` averages over mirror images as ``gmseg predict --tta`` does, so both models can be compared
    either way.

    Returns ``{"written": n, "seconds_per_image": s, "failed": {name: reason}}``; ``seconds_per_image`` is
    the wall time of the whole loop (read, resize, forward, resize back, write) over the images written.
    Unreadable inputs are reported in ``failed`` and the rest are still written.
    """
    from .data.io import write_mask_png
    from .predict import collect_inputs, mirror_averaged, probability_at_size, read_batches
    from .predict import pick_device as pick_inference_device

    model = run_dir if isinstance(run_dir, torch.nn.Module) else load_unet(run_dir)
    config = model.gmseg_config
    size, threshold = int(config["image_size"]), float(config.get("threshold", THRESHOLD))
    files = collect_inputs(inputs)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch_device = pick_inference_device(device)
    model = model.to(torch_device).eval()

    def probabilities_of(images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(images).float())

    predict = mirror_averaged(probabilities_of) if tta else probabilities_of
    written, failed = 0, {}
    started = time.perf_counter()
    for _, names, images, batch in read_batches(files, size, batch_size, failed):
        if not names:
            continue
        probabilities = predict(batch.to(torch_device))
        for name, image, probability in zip(names, images, probabilities):
            mask = probability_at_size(probability, *image.shape[:2]) > threshold
            write_mask_png(output / f"{name}.png", mask.astype(np.uint8))
            written += 1
    if torch_device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"written": written, "seconds_per_image": seconds / max(1, written), "failed": failed}


def predict_and_evaluate_test(
    run_dir: Path,
    config: Config,
    batch_size: int = 8,
    size: int | str = "native",
    empty: str = "standard",
    tta: bool = False,
) -> Any:
    """Predict the run's test names into ``run_dir/predictions``; score into ``run_dir/test``."""
    from .data.io import find_file
    from .data.splits import load_split
    from .evaluate import run_evaluate

    split_file = run_dir / "split.json"
    names = load_split(split_file).get("test") or []
    if not names:
        raise GmsegError(f"{split_file} has no test names: nothing to predict.")
    images_dir = Path(config.data.root) / "images"
    files = [find_file(images_dir, name) for name in names]
    missing = [name for name, path in zip(names, files) if path is None]
    if missing:
        raise DataError(
            f"{len(missing)} test image(s) missing in {images_dir}", [f"{images_dir / n}.*" for n in missing]
        )
    report = predict_unet(run_dir, files, run_dir / "predictions", batch_size=batch_size, tta=tta)
    if report["failed"]:
        raise DataError("some test images could not be predicted", [f"{k}: {v}" for k, v in report["failed"].items()])
    result = run_evaluate(
        run_dir / "predictions",
        config.data.root,
        out_dir=run_dir / "test",
        split=split_file,
        stage="test",
        size=size,
        empty=empty,
    )
    info_path = run_dir / INFO_NAME
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        info["test_seconds_per_image"] = report["seconds_per_image"]
        atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from .cli import add_tta_arg

    parser = argparse.ArgumentParser(
        prog="python -m gmseg.baseline",
        description="Train MONAI's U-Net on the data, augmentation, schedule and time budget of a GMS config.",
    )
    parser.add_argument("--config", required=True, help="the GMS YAML config (model.* and loss.* are ignored)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=20 (repeatable)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget: stop after the epoch that ends past it (schedule spans train.epochs)",
    )
    parser.add_argument(
        "--channels",
        default=",".join(map(str, DEFAULT_CHANNELS)),
        help="U-Net channels per level, comma separated (default: %(default)s)",
    )
    parser.add_argument("--out", help="run folder (default: train.output_dir/NAME-unet-TIMESTAMP)")
    parser.add_argument(
        "--predict-test",
        action="store_true",
        help="then predict the split's test images into OUT/predictions and score them into OUT/test",
    )
    parser.add_argument("--eval-size", default="native", help="'native' or e.g. 224 (the paper's protocol)")
    parser.add_argument("--empty", default="standard", help="empty-mask convention for scoring (see gmseg evaluate)")
    parser.add_argument("--batch-size", type=int, default=8, help="inference batch size")
    add_tta_arg(parser)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def parse_channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ConfigError(f"--channels must be comma-separated integers, e.g. 16,32,64; got {text!r}") from error


def run(args: argparse.Namespace) -> Path:
    config = load_config(args.config, args.overrides)
    run_dir = train_unet(
        config,
        run_dir=args.out,
        max_minutes=args.max_minutes,
        channels=parse_channels(args.channels),
        progress=not args.no_progress,
    )
    info = json.loads((run_dir / INFO_NAME).read_text())
    print(
        f"U-Net baseline in {run_dir}: {info['trainable_parameters']:,} trainable parameters, "
        f"{info['epochs_completed']}/{info['epochs_planned']} epochs in {info['training_seconds']:.1f} s, "
        f"best epoch {info['best_epoch']} (val Dice {info['best_val_dice']})"
    )
    if args.predict_test:
        from .evaluate import format_summary, parse_size

        result = predict_and_evaluate_test(
            run_dir, config, batch_size=args.batch_size, size=parse_size(args.eval_size), empty=args.empty, tta=args.tta
        )
        print(format_summary(result.summary))
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import run_guarded

    args = build_parser().parse_args(argv)
    return run_guarded("gmseg.baseline", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
