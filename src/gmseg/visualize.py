"""Overlays, best/median/worst report grids and training curves.

Binary masks are drawn as contours (prediction green, ground truth red). Label maps of more than two
classes (:func:`class_overlay`) get one colour per class (:attr:`gmseg.labels.LabelSet.colours`): the
prediction filled translucently, the ground truth outlined, and a legend naming the classes.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas directly,
never through pyplot's global state, so this works on headless servers and from threads, and does
not change the backend of a caller's interactive session.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from gmseg.errors import GmsegError
from gmseg.fileio import atomic_write
from gmseg.labels import BINARY, LabelSet

#: contour colours: prediction green, ground truth red, coinciding contours yellow (green + red)
PRED_COLOR = (0, 255, 0)
GT_COLOR = (255, 0, 0)
BOTH_COLOR = (255, 255, 0)
LEGEND = "green: prediction   red: ground truth   yellow: both"
#: what fill and outline mean in a multi-class overlay
CLASS_LEGEND = "fill: prediction   outline: ground truth"
#: opacity of a multi-class overlay's prediction fill: enough to tell the class, the anatomy stays visible
FILL_ALPHA = 0.4


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    """Inner boundary ``width`` px wide: mask XOR its erosion (pixels outside the mask never change).

    ``border_value=0`` erodes from the image border too, so objects touching it get a closed outline.
    """
    if not mask.any():
        return np.zeros_like(mask)
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def _check_mask(mask: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape != shape:
        raise ValueError(f"{what} shape {arr.shape} does not match image {shape}")
    return arr.astype(bool)


def _check_image(image: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 (gray (H,W) is repeated): what every overlay draws on."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H,W,3) uint8, got {img.shape} {img.dtype}")
    return img


def overlay(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> np.ndarray:
    """Draw the predicted (green) and true (red) contours on a copy of the image; yellow where both.

    Contours rather than filled masks keep the anatomy under the mask visible. Width is 1 px, 2 px
    for images of 512 px or more so the outline survives downscaling in a report.
    """
    img = _check_image(image)
    hw = img.shape[:2]
    width = 2 if min(hw) >= 512 else 1
    pc = _contour(_check_mask(pred, hw, "pred"), width)
    gc = _contour(_check_mask(gt, hw, "gt"), width) if gt is not None else np.zeros(hw, bool)
    out = img.copy()
    out[pc & ~gc] = PRED_COLOR
    out[gc & ~pc] = GT_COLOR
    out[pc & gc] = BOTH_COLOR
    return out


def save_overlay(path: str | os.PathLike, image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> None:
    """Write :func:`overlay` as a PNG (lossless, so the 1-px contours stay exact), atomically."""
    from gmseg.data.io import write_image_png  # lazy: importing gmseg.data loads torch

    write_image_png(path, overlay(image, pred, gt))


def _check_values(values: np.ndarray, shape: tuple[int, int], labels: LabelSet, what: str) -> np.ndarray:
    """A label map of the image's shape holding declared class values only."""
    arr = np.asarray(values)
    if arr.shape != shape:
        raise ValueError(f"{what} shape {arr.shape} does not match image {shape}")
    labels.check_values(arr, what)
    return arr


def class_overlay(image: np.ndarray, pred: np.ndarray, labels: LabelSet, gt: np.ndarray | None = None) -> np.ndarray:
    """Fill each predicted class in its colour (translucent) and outline each true class in its colour.

    ``pred`` and ``gt`` are (H,W) label maps of class values; the background is left as it is. Contours
    are 1 px wide, 2 px from 512 px on, as in :func:`overlay`.
    """
    img = _check_image(image)
    hw = img.shape[:2]
    colours = labels.colours.astype(np.float32)
    p = _check_values(pred, hw, labels, "pred")
    g = _check_values(gt, hw, labels, "gt") if gt is not None else None
    width = 2 if min(hw) >= 512 else 1
    out = img.astype(np.float32)
    for index, value in enumerate(labels.values[1:], start=1):
        fill = p == value
        out[fill] = (1.0 - FILL_ALPHA) * out[fill] + FILL_ALPHA * colours[index]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if g is not None:
        for index, value in enumerate(labels.values[1:], start=1):
            out[_contour(g == value, width)] = labels.colours[index]
    return out


def _legend_handles(labels: LabelSet) -> list:
    """One colour patch per foreground class, named as the dataset names it."""
    from matplotlib.patches import Patch

    colours = labels.colours / 255.0
    return [
        Patch(facecolor=colours[i], edgecolor="black", label=f"{name} ({value})")
        for i, (name, value) in enumerate(zip(labels.names, labels.values))
        if i > 0
    ]


def _add_class_legend(fig, labels: LabelSet, fontsize: float = 8, loc: str = "outside lower center") -> None:
    """The class colours and what fill/outline mean, below the figure (or at ``loc``)."""
    handles = _legend_handles(labels)
    fig.legend(
        handles=handles,
        loc=loc,
        ncols=min(len(handles), 4),
        fontsize=fontsize,
        title=CLASS_LEGEND,
        title_fontsize=fontsize,
        frameon=False,
    )


def legend_strip(labels: LabelSet, width: int) -> np.ndarray:
    """An (h, width, 3) uint8 picture of the class legend, to stack under an overlay drawn pixel for pixel."""
    rows = math.ceil((labels.num_classes - 1) / 4)
    fig = _new_figure(width / 100, 0.3 + 0.22 * rows)
    _add_class_legend(fig, labels, fontsize=7, loc="center")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _pad_width(picture: np.ndarray, width: int) -> np.ndarray:
    """White columns on the right up to ``width`` (a narrow image under a wider legend)."""
    extra = width - picture.shape[1]
    return np.pad(picture, ((0, 0), (0, extra), (0, 0)), constant_values=255) if extra > 0 else picture


def save_class_overlay(
    path: str | os.PathLike, image: np.ndarray, pred: np.ndarray, labels: LabelSet, gt: np.ndarray | None = None
) -> None:
    """Write :func:`class_overlay` at the image's own pixels with the class legend below, as a PNG, atomically."""
    from gmseg.data.io import write_image_png  # lazy: importing gmseg.data loads torch

    drawn = class_overlay(image, pred, labels, gt)
    legend = legend_strip(labels, max(drawn.shape[1], 320))
    width = max(drawn.shape[1], legend.shape[1])
    write_image_png(path, np.ascontiguousarray(np.vstack([_pad_width(drawn, width), _pad_width(legend, width)])))


def _new_figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches the headless canvas
    return fig


def figure_format(fig, path: Path) -> str:
    """The format a figure is written in: its file's ending (never PNG bytes under a ``.jpg`` name)."""
    formats = fig.canvas.get_supported_filetypes()
    ending = path.suffix.lower().lstrip(".")
    if ending not in formats:
        raise GmsegError(
            f"{path}: cannot draw a figure as {'.' + ending if ending else 'a file without an ending'}; "
            f"end the name in one of {', '.join('.' + f for f in sorted(formats))} (e.g. .png)"
        )
    return ending


def _save_figure(fig, path: Path, guard: Any = None) -> Path:
    """Write a figure atomically in the format its ending names, through ``guard`` (the file rule) if given."""
    fmt = figure_format(fig, path)
    write = atomic_write if guard is None else guard.write
    return write(path, lambda handle: fig.savefig(handle, format=fmt, bbox_inches="tight"))


def _pick_cases(dices: Sequence[float]) -> list[tuple[str, list[int]]]:
    """Indices for the best/median/worst rows: up to 3 each, no image shown twice.

    With fewer than 9 cases the slots are shared out round-robin (best, worst, median) so each row
    stays meaningful; empty rows are dropped.
    """
    n = len(dices)
    # descending Dice; nan sorts last (treated as worst), ties keep input order
    order = sorted(range(n), key=lambda i: (-dices[i] if math.isfinite(dices[i]) else math.inf, i))
    quota = {"best": 0, "worst": 0, "median": 0}
    for k in range(min(n, 9)):
        quota[("best", "worst", "median")[k % 3]] += 1
    best = order[: quota["best"]]
    worst = order[n - quota["worst"] :] if quota["worst"] else []
    middle = order[quota["best"] : n - quota["worst"]]
    start = max(0, (len(middle) - quota["median"]) // 2)
    median = middle[start : start + quota["median"]]
    rows = [("best", best), ("median", median), ("worst", worst)]
    return [(label, idx) for label, idx in rows if idx]


def _resize_values(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map of class values resized to ``size`` = (width, height), nearest: no value is invented."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8)).resize(size, Image.NEAREST))


def _shrink(
    image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, max_side: int, labels: LabelSet = BINARY
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Downscale to the panel's pixel size *before* drawing contours.

    Drawing 1-px contours on a large image and letting matplotlib shrink it turns them into dotted
    lines; resizing first (bilinear image, nearest masks) keeps them continuous.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return img, pred, gt
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    from gmseg.data.resample import resize_image, resize_mask  # lazy: importing gmseg.data loads torch

    small = resize_image(img, size)
    resize = resize_mask if labels.is_binary else _resize_values
    return small, resize(pred, size), (resize(gt, size) if gt is not None else None)


def report_grid(
    cases: list[dict], path: str | os.PathLike, title: str = "", labels: LabelSet = BINARY, guard: Any = None
) -> Path:
    """Save a grid of overlays: best, median and worst 3 cases by Dice, one row each (through ``guard``, a
    :class:`gmseg.outputs.OutputGuard`, when a verb writes it).

    Each case is a dict with ``name``, ``image`` (H,W,3 uint8), ``pred`` and ``gt`` (H,W bool) and
    ``dice``. Looking at extremes, not a random sample, shows failure modes a mean hides. With more than
    two ``labels``, ``pred`` and ``gt`` are label maps of class values, drawn by :func:`class_overlay`
    with a legend naming the classes; ``dice`` is whatever score ranks the cases (e.g. ``any_dice``).
    """
    if not cases:
        raise GmsegError("report_grid: no cases to draw")
    required = ("name", "image", "pred", "dice")
    missing = [f"case {i}: {k}" for i, c in enumerate(cases) for k in required if k not in c]
    if missing:
        raise GmsegError("report_grid: cases lack keys: " + ", ".join(missing))
    rows = _pick_cases([float(c["dice"]) for c in cases])
    ncols = max(len(idx) for _, idx in rows)
    shown = [cases[i] for _, idx in rows for i in idx]
    aspect = float(np.median([np.shape(c["image"])[0] / np.shape(c["image"])[1] for c in shown]))
    panel_w = 3.2  # inches; at 100 dpi -> 320 px, the resolution overlays are drawn at
    fig = _new_figure(panel_w * ncols, (panel_w * aspect + 0.45) * len(rows) + (0.4 if title else 0.0))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, idx) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(idx):
                ax.axis("off")
                continue
            case = cases[idx[c]]
            image, pred, gt = _shrink(case["image"], case["pred"], case.get("gt"), int(panel_w * 100), labels)
            drawn = overlay(image, pred, gt) if labels.is_binary else class_overlay(image, pred, labels, gt)
            ax.imshow(drawn, interpolation="nearest")
            ax.set_title(f"{case['name']}  Dice {float(case['dice']):.2f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=12, fontweight="bold")
    if title:
        fig.suptitle(title)
    if labels.is_binary:
        fig.supxlabel(LEGEND, fontsize=9)
    else:
        _add_class_legend(fig, labels, fontsize=9)
    return _save_figure(fig, Path(path), guard)


def training_log_path(run_dir_or_csv: str | os.PathLike) -> Path:
    """The ``train_log.csv`` of a run folder, or the given path itself when it is not a folder.

    Readers accept either, so a log copied out of its run folder (as the benchmark results are) still works.
    """
    src = Path(run_dir_or_csv)
    return src / "train_log.csv" if src.is_dir() else src


def read_training_log(csv_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of train_log.csv as float arrays; empty or non-numeric cells become nan.

    Tolerant on purpose: logs from older versions or interrupted runs lack columns or cells, and a
    plot or comparison should still use what is there.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise GmsegError(f"training log not found: {csv_path}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as error:
        raise GmsegError(f"{csv_path} is not a training log (a UTF-8 CSV text file): {error}") from None
    if not records:
        raise GmsegError(f"training log has no rows: {csv_path}")

    def num(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    columns = {key for rec in records for key in rec if key is not None}
    return {key: np.array([num(rec.get(key)) for rec in records]) for key in columns}


def plot_training_curves(
    run_dir_or_csv: str | os.PathLike, out_path: str | os.PathLike | None = None, overwrite: bool = False
) -> Path:
    """Plot losses, validation Dice/IoU (best epoch marked) and learning rate from ``train_log.csv``.

    Accepts a run folder or the CSV itself; missing columns are skipped so logs from older or partial
    runs still plot. Default output: ``curves.png`` next to the CSV, in the format its ending names.
    The file rule (:class:`gmseg.outputs.OutputGuard`): never the log itself, never a file gmseg did
    not write unless ``overwrite``; a plot gmseg drew before is replaced. The run folder is not claimed:
    plotting a training that is still running is allowed.
    """
    from gmseg.outputs import OutputGuard

    csv_path = training_log_path(run_dir_or_csv)
    out = Path(out_path) if out_path is not None else csv_path.parent / "curves.png"
    guard = OutputGuard("plot", overwrite=overwrite, replace_own=True)
    guard.read(csv_path)
    guard.plan(out)  # never the log itself, nor a file gmseg did not write
    figure_format(_new_figure(1, 1), out)  # a wrong ending is refused before anything is read or drawn
    log = read_training_log(csv_path)
    n = len(next(iter(log.values())))
    epoch = log.get("epoch")
    if epoch is None or np.isnan(epoch).all():
        epoch = np.arange(1, n + 1, dtype=float)

    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(15, 4.2)
    ax_loss, ax_val, ax_lr = fig.subplots(1, 3)

    def draw(ax, key: str, label: str, **kw) -> bool:
        y = log.get(key)
        if y is None or np.isnan(y).all():
            return False
        ok = ~np.isnan(y)
        ax.plot(epoch[ok], y[ok], label=label, marker="." if ok.sum() < 50 else None, **kw)
        return True

    def empty_note(ax, text: str) -> None:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")

    losses = (("loss", "total"), ("loss_rec", "latent MSE"), ("loss_dice", "Dice loss"))
    drawn = [draw(ax_loss, key, label) for key, label in losses]
    if any(drawn):
        ax_loss.legend()
    else:
        empty_note(ax_loss, "no loss values")
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")

    has_dice = draw(ax_val, "val_dice", "Dice")
    has_iou = draw(ax_val, "val_iou", "IoU")
    if has_dice:
        dice = log["val_dice"]
        best = int(np.nanargmax(dice))
        ax_val.axvline(epoch[best], color="gray", linestyle="--", linewidth=1)
        ax_val.plot(
            [epoch[best]],
            [dice[best]],
            marker="*",
            markersize=14,
            color="red",
            label=f"best {dice[best]:.4f} @ epoch {epoch[best]:g}",
            linestyle="none",
        )
    if has_dice or has_iou:
        ax_val.legend(loc="lower right")
    else:
        empty_note(ax_val, "no validation values")
    ax_val.set(title="validation", xlabel="epoch", ylabel="score")

    if draw(ax_lr, "lr", "lr"):
        lr = log["lr"]
        if np.nanmin(lr) > 0 and np.nanmax(lr) / np.nanmin(lr) > 20:  # log only when it spans decades
            ax_lr.set_yscale("log")
        else:
            ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    else:
        empty_note(ax_lr, "no learning-rate values")
    ax_lr.set(title="learning rate", xlabel="epoch", ylabel="lr")
    for ax in (ax_loss, ax_val, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    fig.suptitle(str(csv_path), fontsize=10)
    return _save_figure(fig, out, guard)


def overlay_picture(
    image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, labels: LabelSet = BINARY, max_side: int = 160
) -> np.ndarray:
    """One case drawn for a report page: shrunk to ``max_side`` first (so contours stay whole), then
    :func:`overlay` (binary) or :func:`class_overlay` (one colour per class)."""
    small, p, g = _shrink(image, pred, gt, max_side, labels)
    return overlay(small, p, g) if labels.is_binary else class_overlay(small, p, labels, g)


def paired_scatter(
    first: Sequence[float],
    others: dict[str, Sequence[float]],
    first_label: str,
    metric: str,
    path: str | os.PathLike,
    guard: Any = None,
) -> Path:
    """Each case's ``metric`` in the first folder (x) against each other folder (y), with the diagonal:
    points above it are cases the other folder scores higher. Written atomically (through ``guard``)."""
    from gmseg.fileio import atomic_write

    fig = _new_figure(5.2, 5.0)
    ax = fig.subplots()
    values = [v for v in first if math.isfinite(v)] + [v for vs in others.values() for v in vs if math.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if metric.endswith("dice") or metric.endswith("iou"):
        low, high = min(low, 0.0), max(high, 1.0)
    ax.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1)
    for label, ys in others.items():
        ax.scatter(first, ys, s=12, alpha=0.6, label=label)
    ax.set(xlabel=f"{metric}: {first_label}", ylabel=f"{metric}: other", title=f"{metric} per case")
    ax.set_aspect("equal", adjustable="box")
    ax.legend(fontsize=8)
    write = atomic_write if guard is None else guard.write
    return write(Path(path), lambda handle: fig.savefig(handle, format="png"))
