"""Per-image segmentation metrics, computed with MONAI: binary masks, and label maps of K classes.

MONAI is the field's reference implementation, so Dice, IoU and HD95 come from it rather than from
hand-written formulas. What MONAI leaves to the caller is the *empty-mask convention*, which changes
published numbers noticeably on datasets with normal (mask-free) images, so it is explicit here:

``empty="standard"``
    both masks empty -> Dice 1, IoU 1, precision 1, recall 1, HD95 0 (a perfect "nothing here").
``empty="paper"``
    both masks empty -> Dice 0, IoU 0, as the GMS release's ``valid.py`` does (its formulas define
    0/0 as 0). Use it only to reproduce the paper's numbers; precision, recall and HD95 are not
    computed by the release and follow the standard convention.

Exactly one mask empty (either mode): Dice 0, IoU 0, HD95 ``nan`` (no surface to measure to; MONAI
returns nan or inf depending on the side, both are normalised to nan so summaries can drop them
uniformly); precision and recall are 0 where their denominator is non-zero and ``nan`` where it is
0/0 (precision with an empty prediction, recall with an empty ground truth).

Label maps of K > 2 classes (:func:`class_metrics`) are scored one foreground class at a time, each as the
binary pair "this class" vs "not this class", so every convention above holds *per class*: a class absent
from both maps of an image is that class's both-empty pair (Dice 1 under ``standard``, 0 under ``paper``;
HD95 0), a class in only one of them gets HD95 ``nan``, which summaries drop and count in ``n``. The
background is not scored; ``any_*`` scores all foreground classes merged (lesion vs background).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

from gmseg.errors import ConfigError
from gmseg.labels import LabelSet

EMPTY_MODES: tuple[str, ...] = ("standard", "paper")

#: keys of the dict returned by :func:`binary_metrics`, in the order reports use
METRIC_KEYS: tuple[str, ...] = (
    "dice",
    "iou",
    "hd95",
    "precision",
    "recall",
    "pred_area",
    "true_area",
    "both_empty",
)

#: prefix of the merged "any foreground class vs background" keys of :func:`class_metrics`
ANY_PREFIX = "any_"


def check_empty_mode(empty: str) -> str:
    """Reject unknown conventions early: a typo would silently change every reported number."""
    if empty not in EMPTY_MODES:
        raise ConfigError(f"empty must be one of {EMPTY_MODES}, got {empty!r}")
    return empty


def _as_binary(mask: np.ndarray, what: str, ndim: int = 2) -> np.ndarray:
    """Return a bool (H,W) array (``ndim`` 3: (Z,Y,X)); refuse anything that is not already binary.

    A 0/255 or probability map passed by mistake would otherwise be scored as something else than
    intended, so thresholding stays the caller's explicit decision.
    """
    arr = np.asarray(mask)
    if arr.ndim != ndim:
        raise ValueError(f"{what} must be a {ndim}-D mask, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(
            f"{what} must be binary (bool or 0/1), got values in [{arr.min()}, {arr.max()}]; "
            "threshold it first (e.g. mask > 127 for 0/255 images)"
        )
    return arr.astype(bool)


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    """(H,W) bool -> (1,2,H,W) float64 one-hot (background, foreground).

    Two channels with ``include_background=False`` make MONAI score the foreground in float64, so the
    values are bit-identical to the release's 2TP/(2TP+FP+FN) computed in numpy; a single channel
    is read by MONAI as class indices and rounded through float32.
    """
    fg = torch.from_numpy(mask.astype(np.float64))
    return torch.stack((1.0 - fg, fg))[None]


def _hd95(pred: torch.Tensor, gt: torch.Tensor, spacing: tuple[float, ...] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance (pixels; with ``spacing``, its units) between the edges.

    MONAI takes the edge of each mask (mask XOR its erosion), the distances from every edge pixel of
    one mask to the nearest edge pixel of the other, the 95th percentile of each direction, and the
    larger of the two. Takes the :func:`_one_hot` tensors; only called when both masks are non-empty.
    """
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about one of its own internal arguments; nothing the caller can act on.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
        value = compute_hausdorff_distance(pred, gt, include_background=False, percentile=95, spacing=spacing)
    out = float(value.reshape(-1)[0])
    return out if math.isfinite(out) else math.nan


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def binary_metrics(
    pred: np.ndarray, gt: np.ndarray, empty: str = "standard", spacing: tuple[float, ...] | None = None
) -> dict[str, float]:
    """Score one binary prediction against its ground truth.

    Returns ``dice, iou, hd95, precision, recall`` (floats; hd95 in pixels), ``pred_area`` and
    ``true_area`` (foreground pixel counts, ints) and ``both_empty`` (0/1). See the module docstring
    for how empty masks are handled under each ``empty`` convention. ``spacing`` (one length per axis, e.g.
    a volume's (z, y, x) mm): masks of that many axes, HD95 in those units (``gmseg.metrics3d``).
    """
    check_empty_mode(empty)
    ndim = 2 if spacing is None else len(spacing)
    p = _as_binary(pred, "pred", ndim)
    g = _as_binary(gt, "gt", ndim)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")

    tp = int(np.count_nonzero(p & g))
    pred_area = int(np.count_nonzero(p))
    true_area = int(np.count_nonzero(g))
    fp, fn = pred_area - tp, true_area - tp
    both_empty = pred_area == 0 and true_area == 0

    yp, yt = _one_hot(p), _one_hot(g)
    # ignore_empty=False: MONAI gives 1 for both-empty and 0 for one-empty: the standard convention.
    dice = float(compute_dice(yp, yt, include_background=False, ignore_empty=False).reshape(-1)[0])
    iou = float(compute_iou(yp, yt, include_background=False, ignore_empty=False).reshape(-1)[0])

    if both_empty:
        hd95, precision, recall = 0.0, 1.0, 1.0
        if empty == "paper":
            dice, iou = 0.0, 0.0  # the release's 0/0 -> 0
    elif pred_area == 0 or true_area == 0:
        hd95 = math.nan
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    else:
        hd95 = _hd95(yp, yt, None if spacing is None else tuple(float(s) for s in spacing))
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)

    return {
        "dice": dice,
        "iou": iou,
        "hd95": hd95,
        "precision": precision,
        "recall": recall,
        "pred_area": pred_area,
        "true_area": true_area,
        "both_empty": int(both_empty),
    }


def class_metric_keys(labels: LabelSet) -> tuple[str, ...]:
    """Keys of :func:`class_metrics`, in report order: ``<metric>_<class>`` per foreground class, then ``any_*``."""
    per_class = tuple(f"{key}_{name}" for key in METRIC_KEYS for name in labels.foreground)
    return per_class + tuple(ANY_PREFIX + key for key in METRIC_KEYS)


def _as_label_map(values: np.ndarray, labels: LabelSet, what: str, ndim: int = 2) -> np.ndarray:
    """An integer map (2-D, or ``ndim``) of declared class values; anything else would be scored as some other class."""
    arr = np.asarray(values)
    if arr.ndim != ndim:
        raise ValueError(f"{what} must be a {ndim}-D label map, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class values {list(labels.values)}, got dtype {arr.dtype}")
    labels.check_values(arr, what)
    return arr


def class_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: LabelSet,
    empty: str = "standard",
    spacing: tuple[float, ...] | None = None,
) -> dict[str, float]:
    """Score one label map of class values against its ground truth, per foreground class and merged.

    Returns :func:`class_metric_keys`: for each foreground class ``c`` the :func:`binary_metrics` of
    ``pred == value(c)`` vs ``gt == value(c)`` as ``<metric>_<c>``, and of ``pred != 0`` vs ``gt != 0``
    as ``any_<metric>``. A value that is no declared class is an error (:meth:`LabelSet.check_values`).
    ``spacing``: label volumes, HD95 in its units (as :func:`binary_metrics`).
    """
    check_empty_mode(empty)
    ndim = 2 if spacing is None else len(spacing)
    p = _as_label_map(pred, labels, "pred", ndim)
    g = _as_label_map(gt, labels, "gt", ndim)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    out: dict[str, float] = {}
    fg = zip(labels.names[1:], labels.values[1:])
    scores = {name: binary_metrics(p == value, g == value, empty, spacing) for name, value in fg}
    for key in METRIC_KEYS:
        for name in labels.foreground:
            out[f"{key}_{name}"] = scores[name][key]
    merged = binary_metrics(p != 0, g != 0, empty, spacing)
    out.update({ANY_PREFIX + key: value for key, value in merged.items()})
    return out
