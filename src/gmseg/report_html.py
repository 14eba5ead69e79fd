"""Self-contained HTML pages to browse results: a scored folder, a comparison, a training run.

``report.html`` sits next to ``metrics.csv``: the summary (mean ± standard error, median, counts; per class
when there are several), then one row per case with a thumbnail of the image with the truth and the
prediction drawn on it (:func:`gmseg.visualize.overlay_picture`: the contours of :func:`~gmseg.visualize.overlay`,
or one colour per class), and its metrics. Rows sort by any column and filter by name or class; a click opens
the case large. The pictures are small JPEG files in ``report_files/`` beside the page, named by a hash of
the case name (never the name itself, which may hold anything), loaded lazily, so a page of 2,000 cases
stays usable and works from a ``file://`` URL with no network.

Everything that comes from a user's files (case names, class names, paths) is HTML-escaped, and the one
script is fixed text: no user text ever reaches ``innerHTML``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmseg.errors import GmsegError
from gmseg.labels import BINARY, LabelSet
from gmseg.outputs import OutputGuard
from gmseg.scores import EvaluationResult, csv_columns

__all__ = ["picture_name", "report_page", "write_comparison_page", "write_report_html", "write_training_page"]

REPORT_HTML = "report.html"
PICTURES = "report_files"
COMPARISON_PICTURES = "comparison_files"
THUMB_SIDE = 128
LARGE_SIDE = 384
_PAGE_METRICS_BINARY = ("dice", "iou", "hd95", "precision", "recall")
_PAGE_METRICS_CLASSES = ("dice", "iou", "hd95")

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
td.name,th.name{text-align:left;min-width:7em;max-width:22em;overflow-wrap:anywhere}
th[data-sort]{cursor:pointer;user-select:none;background:#f3f3f3}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.case{cursor:zoom-in}tr.case:hover{background:#f6f9ff}
img.thumb{display:block;background:#eee;min-width:64px;height:auto;image-rendering:pixelated}
.muted{color:#777}.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #333;margin:0 .3em 0 .8em;
vertical-align:-.1em}
dialog{max-width:95vw;max-height:95vh}dialog img{width:min(90vw,640px);height:auto;max-height:80vh;object-fit:contain;display:block}
.pair{display:flex;flex-wrap:wrap;gap:1em;margin:.4em 0 1.2em}.pair figure{margin:0}
.controls{margin:.6em 0}.controls input,.controls select{margin-right:1em}
"""

_JS = """
(function(){
"use strict";
function value(cell){var v=cell.getAttribute("data-v");if(v===null||v===""){return null;}
var x=parseFloat(v);return isNaN(x)?null:x;}
document.querySelectorAll("table.sortable").forEach(function(table){
var heads=table.tHead.rows[0].cells;
Array.prototype.forEach.call(heads,function(th,i){
if(!th.hasAttribute("data-sort")){return;}
th.addEventListener("click",function(){
var asc=th.getAttribute("aria-sort")!=="ascending";
Array.prototype.forEach.call(heads,function(h){h.removeAttribute("aria-sort");});
th.setAttribute("aria-sort",asc?"ascending":"descending");
var text=th.getAttribute("data-sort")==="text";
var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){
if(text){var s=a.cells[i].textContent.localeCompare(b.cells[i].textContent);return asc?s:-s;}
var x=value(a.cells[i]),y=value(b.cells[i]);
if(x===null&&y===null){return 0;}if(x===null){return 1;}if(y===null){return -1;}
return asc?x-y:y-x;});
var frag=document.createDocumentFragment();rows.forEach(function(r){frag.appendChild(r);});
body.appendChild(frag);});});});
var box=document.getElementById("filter"),cls=document.getElementById("class-filter"),
shown=document.getElementById("shown");
function apply(){var q=box?box.value.toLowerCase():"";var c=cls?cls.value:"";var n=0;
document.querySelectorAll("tr.case").forEach(function(tr){
var ok=tr.getAttribute("data-name").toLowerCase().indexOf(q)>=0&&
(!c||(" "+tr.getAttribute("data-classes")+" ").indexOf(" "+c+" ")>=0);
tr.hidden=!ok;if(ok){n+=1;}});if(shown){shown.textContent=String(n);}}
if(box){box.addEventListener("input",apply);}if(cls){cls.addEventListener("change",apply);}
var dialog=document.getElementById("case-view");
if(dialog){var big=document.getElementById("case-image"),caption=document.getElementById("case-caption");
document.querySelectorAll("tr.case").forEach(function(tr){tr.addEventListener("click",function(){
var large=tr.getAttribute("data-large");
if(large){big.src=large;big.hidden=false;}else{big.removeAttribute("src");big.hidden=true;}
caption.textContent=tr.getAttribute("data-name")+"  "+tr.getAttribute("data-summary");
dialog.showModal();});});
dialog.addEventListener("click",function(){dialog.close();});}
})();
"""


def _e(text: object) -> str:
    """HTML-escape anything that came from a user's files (quotes too: it may land in an attribute)."""
    return html.escape(str(text), quote=True)


def picture_name(name: str) -> str:
    """The file stem of a case's pictures: a hash of its name, so no name ever becomes a path or markup."""
    return hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any, metric: str) -> str:
    number = _finite(value)
    if number is None:
        return "n/a"
    return f"{number:.1f}" if metric.endswith("hd95") or metric.startswith("hd95") else f"{number:.3f}"


def _page(title: str, body: str) -> str:
    """One page: fixed CSS and script, no outside resource (it must work from file:// offline)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n{body}\n"
        f"<script>{_JS}</script></body></html>\n"
    )


# ------------------------------------------------------------------------------------------- pictures


def _jpeg(picture: np.ndarray) -> bytes:
    """A picture as JPEG at full chroma (4:4:4), so 1-px coloured contours keep their colour."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buf, format="JPEG", quality=90, subsampling=0)
    return buf.getvalue()


def load_case(
    name: str,
    images_dir: Path,
    mask_dir: Path,
    pred_dir: Path,
    labels: LabelSet = BINARY,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image, prediction, truth) of one case found by name in its folders, or None (:func:`case_view`)."""
    from gmseg.data.io import find_file  # lazy: gmseg.data loads torch
    from gmseg.data.readers import OUTPUT_2D_SUFFIX

    pred_file = pred_dir / f"{name}{OUTPUT_2D_SUFFIX}"
    return case_view(find_file(images_dir, name), pred_file, find_file(mask_dir, name), labels, threshold)


def case_view(
    image_file: Path | None,
    pred_file: Path,
    gt_file: Path | None,
    labels: LabelSet = BINARY,
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image, prediction, truth) of one scored image, or None when a file is missing or unreadable or the
    three do not line up (the metrics already reported what is wrong with the files)."""
    from gmseg.data.io import read_image, read_label_map, read_mask  # lazy: gmseg.data loads torch

    if image_file is None or gt_file is None or not pred_file.is_file():
        return None
    try:
        image = read_image(image_file)
        if labels.is_binary:
            pred, gt = read_mask(pred_file).astype(bool), read_mask(gt_file, threshold).astype(bool)
        else:
            pred, gt = read_label_map(pred_file, labels), read_label_map(gt_file, labels)
    except (OSError, ValueError, GmsegError):
        return None
    if pred.shape != image.shape[:2] or gt.shape != image.shape[:2]:
        return None
    return image, pred, gt


#: one drawn view of a case: (image, prediction, truth), all (H, W); a case's pictures come from one or more
View = tuple[np.ndarray, np.ndarray, np.ndarray]


def write_pictures(
    cases: Iterable[tuple[str, View, Sequence[View]]],
    out_dir: Path,
    guard: OutputGuard,
    labels: LabelSet = BINARY,
) -> dict[str, tuple[int, int]]:
    """Each case's thumbnail (``<hash>.s.jpg``, from its first view) and large view (``<hash>.jpg``: the other
    views side by side) into ``out_dir/report_files``, filled beside it and swapped in whole by ``guard`` (the
    file rule: a folder gmseg did not write is never replaced); returns each case's thumbnail (width, height)."""
    from gmseg.visualize import overlay_picture

    sizes: dict[str, tuple[int, int]] = {}

    def fill(folder: Path) -> None:
        for name, thumb_view, large_views in cases:
            stem = picture_name(name)
            thumb = overlay_picture(*thumb_view, labels=labels, max_side=THUMB_SIDE)
            (folder / f"{stem}.s.jpg").write_bytes(_jpeg(thumb))
            large = [overlay_picture(*view, labels=labels, max_side=LARGE_SIDE) for view in large_views]
            (folder / f"{stem}.jpg").write_bytes(_jpeg(_side_by_side(large)))
            sizes[name] = (thumb.shape[1], thumb.shape[0])

    guard.write_folder(out_dir / PICTURES, fill)
    return sizes


def _side_by_side(pictures: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Pictures in one row on white, top-aligned, ``gap`` px apart."""
    height = max(p.shape[0] for p in pictures)
    width = sum(p.shape[1] for p in pictures) + gap * (len(pictures) - 1)
    row = np.full((height, width, 3), 255, np.uint8)
    left = 0
    for picture in pictures:
        row[: picture.shape[0], left : left + picture.shape[1]] = picture
        left += picture.shape[1] + gap
    return row


def plan_report(guard: OutputGuard, out_dir: Path, images_dir: Path | None = None) -> None:
    """Plan report.html and its pictures folder before anything is written; the images are an input."""
    if images_dir is not None:
        guard.read_folder(images_dir)
    guard.plan(out_dir / REPORT_HTML)
    guard.plan_folder(out_dir / PICTURES)


# ------------------------------------------------------------------------------------------- scored folder


def _stat_cell(stats: dict | None, metric: str) -> str:
    """mean ± SE, then median and n in grey."""
    if not stats:
        return "<td>n/a</td>"
    mean, std, n = _finite(stats.get("mean")), _finite(stats.get("std")), int(stats.get("n") or 0)
    se = std / math.sqrt(n) if std is not None and n >= 2 else None
    text = _fmt(mean, metric) + (f" ± {_fmt(se, metric)}" if se is not None else "")
    return (
        f'<td data-v="{mean if mean is not None else ""}">{text}<br><span class="muted">median '
        f"{_fmt(stats.get('median'), metric)}, n {n}</span></td>"
    )


def summary_html(summary: dict, labels: LabelSet) -> str:
    """The summary table: one row of metrics (binary) or one row per class and the merged lesion."""
    metrics = summary.get("metrics", {})
    keys = _PAGE_METRICS_BINARY
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    if "dice" in metrics:  # the binary layout; volumes and several classes have per-class keys
        rows = ['<tr><td class="name">all cases</td>' + "".join(_stat_cell(metrics.get(k), k) for k in keys)]
    else:
        rows = [
            f'<tr><td class="name">{_e(name)}</td>' + "".join(_stat_cell(metrics.get(f"{k}_{name}"), k) for k in keys)
            for name in labels.foreground
        ]
        rows.append(
            '<tr><td class="name">lesion (classes merged)</td>'
            + "".join(_stat_cell(metrics.get(f"any_{k}"), k) for k in keys)
        )
        if "mean_dice" in metrics:  # volumes: each case's mean over classes
            rows.append(
                '<tr><td class="name">mean over classes</td>'
                + "".join(_stat_cell(metrics.get(f"mean_{k}"), k) for k in keys)
            )
    counts = summary.get("counts", {})
    flat = {k: v for k, v in counts.items() if not isinstance(v, dict)}
    lines = ", ".join(f"{_e(k.replace('n_', '').replace('_', ' '))} {_e(v)}" for k, v in flat.items())
    for group in ("classes",):
        for name, c in (counts.get(group) or {}).items():
            lines += f"<br>{_e(name)}: " + ", ".join(
                f"{_e(k.replace('n_', '').replace('_', ' '))} {_e(v)}" for k, v in c.items()
            )
    settings = ", ".join(f"{_e(k)} = {_e(v)}" for k, v in summary.get("settings", {}).items())
    return (
        f'<h2>Summary</h2><table id="summary"><thead><tr><th class="name">class</th>{head}</tr></thead>'
        f"<tbody>{''.join(r + '</tr>' for r in rows)}</tbody></table>"
        f"<p>Mean ± standard error of the mean; median and n (cases scored) below.<br>Counts: {lines}"
        f"<br>Settings: {settings}</p>"
    )


def legend_html(labels: LabelSet) -> str:
    """The colours of the pictures: contours of prediction and truth (binary), or one colour per class."""
    from gmseg.visualize import BOTH_COLOR, GT_COLOR, PRED_COLOR

    def swatch(rgb: Sequence[int], text: str, index: int | None = None) -> str:
        data = f' data-class="{index}"' if index is not None else ""
        colour = "#" + "".join(f"{int(c):02x}" for c in rgb)
        return f'<span class="swatch" style="background:{colour}"{data}></span>{_e(text)}'

    if labels.is_binary:
        parts = [swatch(PRED_COLOR, "prediction"), swatch(GT_COLOR, "ground truth"), swatch(BOTH_COLOR, "both")]
        return '<p id="legend">Contours:' + "".join(parts) + "</p>"
    parts = [
        swatch(labels.colours[i], f"{name} ({value})", i)
        for i, (name, value) in enumerate(zip(labels.names, labels.values))
        if i > 0
    ]
    return (
        '<p id="legend">Classes:' + "".join(parts) + ' <span class="muted">fill: prediction, outline: ground '
        "truth</span></p>"
    )


def _page_columns(columns: Sequence[str], labels: LabelSet) -> list[str]:
    """The metric columns a case row shows: the binary scores, or Dice/IoU/HD95 per class and merged."""
    if "dice" in columns:
        return [c for c in _PAGE_METRICS_BINARY if c in columns]
    keys = [f"{k}_{n}" for k in _PAGE_METRICS_CLASSES for n in labels.foreground]
    merged = [f"{prefix}{k}" for prefix in ("any_", "mean_") for k in _PAGE_METRICS_CLASSES]
    return [c for c in [*merged, *keys] if c in columns]


def _classes_of(row: dict, labels: LabelSet) -> str:
    """The foreground class indices a case holds in its truth or its prediction (for the class filter)."""
    if "true_area" in row:
        held = (_finite(row.get("true_area")) or 0) > 0 or (_finite(row.get("pred_area")) or 0) > 0
        return "1" if held else ""
    held = [
        str(i)
        for i, name in enumerate(labels.foreground, start=1)
        if (_finite(row.get(f"true_area_{name}")) or 0) > 0 or (_finite(row.get(f"pred_area_{name}")) or 0) > 0
    ]
    return " ".join(held)


def cases_html(
    rows: Sequence[dict],
    labels: LabelSet,
    pictures: dict[str, tuple[int, int]],
    columns: Sequence[str],
    notes: dict[str, str] | None = None,
) -> str:
    """The case table: name, thumbnail, metrics; every cell escaped, every number also in ``data-v``."""
    shown = _page_columns(columns, labels)
    head = '<th class="name" data-sort="text">case</th><th>picture</th>' + "".join(
        f'<th data-sort="number">{_e(c)}</th>' for c in shown
    )
    body = []
    for row in rows:
        name = str(row["name"])
        size = pictures.get(name)
        stem = picture_name(name)
        note = (notes or {}).get(name, "")
        if size is None:
            picture, large = '<td class="muted">no picture</td>', ""
        else:
            picture = (
                f'<td><img class="thumb" loading="lazy" alt="" title="{_e(note)}" width="{size[0]}" '
                f'height="{size[1]}" src="{PICTURES}/{stem}.s.jpg"></td>'
            )
            large = f"{PICTURES}/{stem}.jpg"
        cells = "".join(
            f'<td data-v="{"" if _finite(row.get(c)) is None else _finite(row.get(c))}">{_fmt(row.get(c), c)}</td>'
            for c in shown
        )
        summary = ", ".join(f"{c} {_fmt(row.get(c), c)}" for c in shown[:3]) + (f"; {note}" if note else "")
        body.append(
            f'<tr class="case" data-name="{_e(name)}" data-classes="{_classes_of(row, labels)}" '
            f'data-large="{large}" data-summary="{_e(summary)}"><td class="name">{_e(name)}</td>{picture}{cells}</tr>'
        )
    options = "".join(f'<option value="{i}">{_e(name)}</option>' for i, name in enumerate(labels.foreground, start=1))
    controls = (
        '<div class="controls"><label>Filter by name <input id="filter" type="search"></label>'
        f'<label>class <select id="class-filter"><option value="">any</option>{options}</select></label>'
        f'<span class="muted"><span id="shown">{len(rows)}</span> of {len(rows)} cases shown; '
        "click a column to sort, a case to open it large</span></div>"
    )
    return (
        f'<h2>Cases</h2>{controls}<table id="cases" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
        '<dialog id="case-view"><img id="case-image" alt=""><p id="case-caption"></p></dialog>'
    )


def report_page(
    rows: Sequence[dict],
    summary: dict,
    labels: LabelSet,
    title: str,
    pictures: dict[str, tuple[int, int]],
    columns: Sequence[str],
    notes: dict[str, str] | None = None,
) -> str:
    """The whole report.html of a scored folder (``notes``: a line per case beside its picture)."""
    body = (
        f"<h1>{_e(title)}</h1>"
        + legend_html(labels)
        + summary_html(summary, labels)
        + cases_html(rows, labels, pictures, columns, notes)
    )
    return _page(title, body)


def _mask_dir(gt_dir: Path) -> Path:
    return gt_dir / "masks" if (gt_dir / "masks").is_dir() else gt_dir


def images_of(gt_dir: str | os.PathLike) -> Path | None:
    """The images beside a ground truth: ``ROOT/images`` for a dataset root or its ``masks`` folder."""
    gt_dir = Path(gt_dir)
    root = gt_dir.parent if gt_dir.name == "masks" and not (gt_dir / "masks").is_dir() else gt_dir
    return root / "images" if (root / "images").is_dir() else None


def write_report_html(
    result: EvaluationResult,
    out_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    threshold: float | None = None,
    title: str | None = None,
    guard: OutputGuard | None = None,
) -> Path:
    """Draw every case's pictures into ``out_dir/report_files`` and write ``out_dir/report.html``, through
    ``guard`` (a verb's, which planned both with :func:`plan_report`), else a guard that replaces only
    what gmseg wrote."""
    if guard is None:
        with OutputGuard("report", replace_own=True) as own:
            plan_report(own, Path(out_dir), Path(images_dir))
            return write_report_html(result, out_dir, images_dir, gt_dir, pred_dir, threshold, title, own)

    out, mask_dir = Path(out_dir), _mask_dir(Path(gt_dir))
    labels = result.labels

    def cases() -> Iterator[tuple[str, View, list[View]]]:
        for row in result.rows:
            case = load_case(row["name"], Path(images_dir), mask_dir, Path(pred_dir), labels, threshold)
            if case is not None:
                yield row["name"], case, [case]

    pictures = write_pictures(cases(), out, guard, labels)
    columns = result.columns or csv_columns(labels)
    page = report_page(result.rows, result.summary, labels, title or f"gmseg report: {out}", pictures, columns)
    return guard.write_text(out / REPORT_HTML, page)


#: slices of a volume case shown in its large view: the ones with the most foreground
VOLUME_SLICES = 3


def volume_views(
    image_file: Path, pred_file: Path, gt_file: Path, labels: LabelSet, record: Any = None
) -> tuple[View, list[View], str]:
    """A volume case's fullest slice (most foreground in truth, then prediction) and its
    :data:`VOLUME_SLICES` fullest slices in order along the axis, along the model's slicing axis (``record``:
    its :class:`~gmseg.data.normalization.VolumeInput`, which also normalises the image as the model saw it),
    and a note naming them."""
    from gmseg.data.normalization import VolumeInput
    from gmseg.data.readers import read_volume
    from gmseg.data.slicing import slice_axis, take_slice
    from gmseg.metrics3d import foreground_slices

    record = record or VolumeInput()
    gt = read_volume(gt_file)
    pred, image = read_volume(pred_file).array, read_volume(image_file).array
    if image.ndim == 4:  # several modalities: the first, as the pictures of report.png
        image = image[..., 0]
    if image.shape != gt.array.shape or pred.shape != gt.array.shape:
        raise ValueError(f"{image_file}: {image.shape} voxels, its truth {gt.array.shape}, prediction {pred.shape}")
    axis = slice_axis(gt.geometry.spacing, record.slice_axis)
    statistics = record.statistics(image)

    def view(index: int) -> View:
        pixels = record.pixels(take_slice(image, axis, index), statistics)
        rgb = np.repeat(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        truth, predicted = take_slice(gt.array, axis, index), take_slice(pred, axis, index)
        if labels.is_binary:
            return rgb, predicted != 0, truth != 0
        return rgb, predicted.astype(np.uint8), truth.astype(np.uint8)

    fullest = foreground_slices(gt.array, pred, count=1, axis=axis)[0]
    indices = foreground_slices(gt.array, pred, count=VOLUME_SLICES, axis=axis)
    note = f"slices {', '.join(map(str, indices))} along axis {axis} (fullest {fullest})"
    return view(fullest), [view(i) for i in indices], note


def write_volume_report_html(
    result: EvaluationResult,
    pairs: Sequence[tuple[str, Path, Path]],
    image_files: dict[str, Path],
    out_dir: str | os.PathLike,
    guard: OutputGuard,
    model: Any = None,
) -> Path:
    """report.html of volume cases (``pairs``: name, prediction file, truth file): each row's thumbnail is
    the case's fullest slice, its large view the :data:`VOLUME_SLICES` fullest side by side. A case without
    an image in ``image_files``, or whose image does not line up with its truth, is listed without picture."""
    out, labels = Path(out_dir), result.labels
    record = getattr(model, "volume_input", None)
    notes: dict[str, str] = {}

    def cases() -> Iterator[tuple[str, View, list[View]]]:
        for name, pred_file, gt_file in pairs:
            if name not in image_files:
                continue
            try:
                thumb, large, notes[name] = volume_views(image_files[name], pred_file, gt_file, labels, record)
            except (OSError, ValueError, GmsegError):
                continue  # the metrics already reported what is wrong with the files
            yield name, thumb, large

    pictures = write_pictures(cases(), out, guard, labels)
    columns = result.columns or csv_columns(labels)
    title = f"gmseg report: {out} (volumes, scored in 3D)"
    page = report_page(result.rows, result.summary, labels, title, pictures, columns, notes)
    return guard.write_text(out / REPORT_HTML, page)


# ------------------------------------------------------------------------------------------- comparison


@dataclass
class ComparisonView:
    """What comparison.html shows, as plain data (:func:`gmseg.compare.comparison_view` builds it from a
    comparison), so that the page needs nothing of the code that compares."""

    folders: list[tuple[str, Path, int]]  # each scored folder: label, path, number of cases; the first first
    n_cases: int  # cases compared
    n_dropped: int  # cases left out because not every folder has them
    differences: list[tuple[str, str, dict[str, Any]]]  # metric column, other folder's label, paired difference
    column: str  # the column that ranks the cases (Dice)
    cases: list[tuple[str, float, list[float]]]  # most disagreeing first: name, largest difference, folder scores

    @property
    def first(self) -> str:
        return self.folders[0][0]


def _difference_rows(view: ComparisonView) -> str:
    """One row per metric and later folder: the mean paired difference ± SE and who is better how often."""
    rows = []
    for column, label, d in view.differences:
        mean = d["mean"]
        rows.append(
            f'<tr><td class="name">{_e(column)}</td><td class="name">{_e(label)} − {_e(view.first)}</td>'
            f'<td data-v="{"" if _finite(mean) is None else mean}">{_fmt(mean, column)} ± '
            f"{_fmt(d['se'], column)}</td><td>{d['other_better']}</td><td>{d['first_better']}</td>"
            f"<td>{d['ties']}</td><td>{d['n']}</td></tr>"
        )
    return (
        '<table id="paired"><thead><tr><th class="name">metric</th><th class="name">difference</th>'
        "<th>mean ± SE</th><th>other better</th><th>first better</th><th>ties</th><th>n</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _copy_pictures(view: ComparisonView, out: Path, guard: OutputGuard) -> dict[tuple[int, str], str]:
    """Each folder's large picture of each shown case (from its report_files) copied beside the page."""
    found: dict[tuple[int, str], str] = {}

    def fill(folder: Path) -> None:
        for index, (_, path, _) in enumerate(view.folders):
            for name, _, _ in view.cases:
                source = Path(path) / PICTURES / f"{picture_name(name)}.jpg"
                if source.is_file():
                    target = f"{index}-{picture_name(name)}.jpg"
                    (folder / target).write_bytes(source.read_bytes())
                    found[(index, name)] = f"{COMPARISON_PICTURES}/{target}"

    guard.write_folder(out / COMPARISON_PICTURES, fill)
    return found


def comparison_page(view: ComparisonView, pictures: dict[tuple[int, str], str]) -> str:
    """The paired statistics, the scatter, and the cases the folders disagree on most, side by side."""
    column = view.column
    folders = "".join(f"<li>{_e(label)}: <code>{_e(path)}</code> ({n} cases)</li>" for label, path, n in view.folders)
    note = f"<p>{view.n_dropped} case(s) not in every folder were dropped.</p>" if view.n_dropped else ""
    cards = []
    for name, gap, scores in view.cases:
        figures = []
        for index, ((label, _, _), score) in enumerate(zip(view.folders, scores)):
            src = pictures.get((index, name))
            img = (
                f'<img loading="lazy" alt="" src="{src}">'
                if src
                else '<div class="muted">no picture (the folder has no report_files)</div>'
            )
            caption = f"{_e(label)}: {_e(column)} {_fmt(score, column)}"
            figures.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
        cards.append(
            f'<div class="disagreement" data-name="{_e(name)}"><h3>{_e(name)} '
            f'<span class="muted">largest {_e(column)} difference {_fmt(gap, column)}</span></h3>'
            f'<div class="pair">{"".join(figures)}</div></div>'
        )
    title = "gmseg comparison: " + " vs ".join(label for label, _, _ in view.folders)
    body = (
        f"<h1>{_e(title)}</h1><ul>{folders}</ul><p>{view.n_cases} cases compared; differences are "
        f"other minus {_e(view.first)}, per case.</p>{note}<h2>Paired differences</h2>"
        + _difference_rows(view)
        + f'<h2>{_e(column)} per case</h2><img src="comparison.png" alt="scatter" width="520">'
        + f"<h2>The {len(cards)} cases they disagree on most</h2>"
        + "".join(cards)
    )
    return _page(title, body)


def write_comparison_page(view: ComparisonView, out_dir: str | os.PathLike, guard: OutputGuard) -> Path:
    """comparison.html (and its copied pictures, ``comparison_files/``) in ``out_dir``, through ``guard``."""
    out = Path(out_dir)
    pictures = _copy_pictures(view, out, guard)
    return guard.write_text(out / "comparison.html", comparison_page(view, pictures))


# ------------------------------------------------------------------------------------------- training run


def training_page(csv_path: Path, png: bytes, log: dict[str, np.ndarray]) -> str:
    """A run's curves (the PNG inline) and its log, one sortable row per epoch."""
    keys = [k for k in ("epoch", "loss", "loss_rec", "loss_dice", "val_dice", "val_iou", "lr", "seconds") if k in log]
    keys += sorted(k for k in log if k not in keys)
    n = len(next(iter(log.values()))) if log else 0
    best = ""
    if "val_dice" in log and not np.isnan(log["val_dice"]).all():
        i = int(np.nanargmax(log["val_dice"]))
        epoch = log["epoch"][i] if "epoch" in log else i + 1
        shown = int(epoch) if math.isfinite(epoch) else i + 1
        best = f"<p>Best validation Dice {log['val_dice'][i]:.4f} at epoch {shown} ({n} epochs logged).</p>"
    head = "".join(f'<th data-sort="number">{_e(k)}</th>' for k in keys)
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td data-v="{"" if _finite(log[k][r]) is None else log[k][r]}">{_finite_text(log[k][r])}</td>'
            for k in keys
        )
        + "</tr>"
        for r in range(n)
    )
    data = base64.b64encode(png).decode("ascii")
    title = f"gmseg training: {csv_path.parent}"
    body = (
        f'<h1>{_e(title)}</h1>{best}<img alt="training curves" style="max-width:100%" '
        f'src="data:image/png;base64,{data}"><h2>Log</h2><table class="sortable" id="log"><thead><tr>{head}'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )
    return _page(title, body)


def _finite_text(value: float) -> str:
    number = _finite(value)
    return "" if number is None else f"{number:.6g}"


def write_training_page(
    run_dir_or_csv: str | os.PathLike, out_path: str | os.PathLike | None = None, overwrite: bool = False
) -> Path:
    """``curves.html`` next to the run's train_log.csv (or ``out_path``): the curves of
    :func:`gmseg.visualize.plot_training_curves` inline, and the log as a sortable table."""
    from gmseg.visualize import plot_training_curves, read_training_log, training_log_path

    csv_path = training_log_path(run_dir_or_csv)
    log = read_training_log(csv_path)
    out = Path(out_path) if out_path is not None else csv_path.parent / "curves.html"
    with OutputGuard("plot", overwrite=overwrite, replace_own=True) as guard:
        guard.read(csv_path)
        guard.plan(out)
        with tempfile.TemporaryDirectory() as temp:
            png = plot_training_curves(csv_path, Path(temp) / "curves.png").read_bytes()
        return guard.write_text(out, training_page(csv_path, png, log))
