"""The output side of K-class segmentation: predict's label maps, per-class evaluation, class overlays.

A 3-class ground-truth / prediction folder pair small enough to score by hand, a fake K-class model for
``predict_files``, and the binary outputs checked to be what they always were.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmseg.errors import ConfigError, DataError, GmsegError
from gmseg.evaluate import CSV_COLUMNS, evaluate_folders, evaluate_masks, format_summary, run_evaluate
from gmseg.labels import BINARY, CLASS_COLOURS, LabelSet
from gmseg.metrics import class_metric_keys, class_metrics
from gmseg.predict import predict_files, probability_at_size, write_class_prediction
from gmseg.visualize import class_overlay, report_grid, save_class_overlay

LABELS = LabelSet(("background", "benign", "malignant"), (0, 1, 2))
METRICS = ("dice", "iou", "hd95", "precision", "recall", "pred_area", "true_area", "both_empty")


def box(top: int, left: int, h: int, w: int, value: int, base: np.ndarray | None = None) -> np.ndarray:
    m = np.zeros((10, 10), np.uint8) if base is None else base.copy()
    m[top : top + h, left : left + w] = value
    return m


def save_gray(path: Path, values: np.ndarray) -> None:
    """An 8-bit label map of class values, as a dataset stores it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)


def save_palette(path: Path, values: np.ndarray, labels: LabelSet = LABELS) -> None:
    """A palette PNG (index = class value), as ``gmseg predict`` writes label maps; written here by PIL alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(values.astype(np.uint8))
    palette = np.zeros((256, 3), np.uint8)
    palette[list(labels.values)] = labels.colours
    img.putpalette(palette.ravel().tolist())
    img.save(path)


def cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (pred, gt) label maps, 10 x 10, with hand-computed per-class scores (see the tests)."""
    a_gt = box(6, 6, 4, 4, 2, box(0, 0, 4, 5, 1))  # benign 20 px, malignant 16 px
    a_pred = box(6, 6, 4, 4, 2, box(0, 0, 4, 3, 1))  # benign 12 px inside it, malignant exact
    b_gt = box(2, 2, 4, 4, 1)  # benign only
    b_pred = box(8, 0, 2, 2, 2, b_gt)  # benign exact, plus 4 px of a malignant absent from the truth
    blank = np.zeros((10, 10), np.uint8)  # c: a normal image predicted normal
    d_gt = box(0, 0, 2, 10, 2)  # malignant 20 px ...
    d_pred = box(0, 0, 2, 10, 1)  # ... called benign: wrong class, right lesion
    return {"a": (a_pred, a_gt), "b": (b_pred, b_gt), "c": (blank, blank), "d": (d_pred, d_gt)}


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(predictions, dataset root with masks/ and a 3-class dataset.json)."""
    pred_dir, root = tmp_path / "pred", tmp_path / "data"
    for name, (pred, gt) in cases().items():
        save_palette(pred_dir / f"{name}.png", pred)
        save_gray(root / "masks" / f"{name}.png", gt)
    (root / "dataset.json").write_text(json.dumps({"labels": LABELS.to_labels()}))
    return pred_dir, root


# --------------------------------------------------------------------------------------------- evaluation


def test_per_class_dice_iou_match_hand_computed_values(folders) -> None:
    pred_dir, root = folders
    result = evaluate_folders(pred_dir, root)
    assert result.labels == LABELS
    rows = {r["name"]: r for r in result.rows}
    # a: benign 12 of 20 true px, nothing outside: Dice 2*12/(12+20), IoU 12/20; malignant exact
    assert rows["a"]["dice_benign"] == pytest.approx(0.75) and rows["a"]["iou_benign"] == pytest.approx(0.6)
    assert rows["a"]["precision_benign"] == 1.0 and rows["a"]["recall_benign"] == pytest.approx(0.6)
    assert (rows["a"]["dice_malignant"], rows["a"]["iou_malignant"], rows["a"]["hd95_malignant"]) == (1.0, 1.0, 0.0)
    assert math.isfinite(rows["a"]["hd95_benign"]) and rows["a"]["hd95_benign"] > 0
    # b: a malignant prediction where the truth has none: one-empty -> 0, HD95 nan (dropped from its mean)
    assert (rows["b"]["dice_benign"], rows["b"]["dice_malignant"]) == (1.0, 0.0)
    assert math.isnan(rows["b"]["hd95_malignant"]) and rows["b"]["precision_malignant"] == 0.0
    # d: the wrong class on the right lesion: 0 for both classes, 1 merged
    assert (rows["d"]["dice_benign"], rows["d"]["dice_malignant"], rows["d"]["any_dice"]) == (0.0, 0.0, 1.0)
    assert (rows["d"]["pred_area_benign"], rows["d"]["true_area_malignant"]) == (20, 20)

    metrics = result.summary["metrics"]
    assert metrics["dice_benign"]["mean"] == pytest.approx((0.75 + 1 + 1 + 0) / 4)
    assert metrics["dice_malignant"]["mean"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert metrics["iou_benign"]["mean"] == pytest.approx((0.6 + 1 + 1 + 0) / 4)
    assert metrics["iou_malignant"]["mean"] == pytest.approx(0.5)
    assert (metrics["hd95_benign"]["n"], metrics["hd95_malignant"]["n"]) == (3, 2)  # n says who entered
    macro = result.summary["mean_over_classes"]
    assert macro["dice"] == {"mean": pytest.approx((0.6875 + 0.5) / 2), "n_classes": 2}
    assert macro["iou"]["mean"] == pytest.approx((0.65 + 0.5) / 2)


def test_merged_lesion_score_is_all_foreground_classes_vs_background(folders) -> None:
    pred_dir, root = folders
    result = evaluate_folders(pred_dir, root)
    rows = {r["name"]: r for r in result.rows}
    # a: 36 true px, 28 predicted, all inside: Dice 56/64, IoU 28/36; b: 16 true, 20 predicted
    assert rows["a"]["any_dice"] == pytest.approx(56 / 64) and rows["a"]["any_iou"] == pytest.approx(28 / 36)
    assert rows["b"]["any_dice"] == pytest.approx(32 / 36) and rows["b"]["any_iou"] == pytest.approx(0.8)
    assert (rows["c"]["any_both_empty"], rows["c"]["any_dice"]) == (1, 1.0)
    expected = (56 / 64 + 32 / 36 + 1 + 1) / 4
    assert result.summary["metrics"]["any_dice"]["mean"] == pytest.approx(expected)
    assert result.summary["counts"]["any"] == {"n_both_empty": 1, "n_pred_empty": 1, "n_true_empty": 1, "n_hd95": 4}


def test_a_class_absent_from_both_maps_follows_the_binary_both_empty_rule(folders) -> None:
    pred_dir, root = folders
    standard = evaluate_folders(pred_dir, root, empty="standard")
    c = next(r for r in standard.rows if r["name"] == "c")
    for name in ("benign", "malignant"):  # as binary_metrics scores an empty pair: counted, Dice 1, HD95 0
        assert (c[f"dice_{name}"], c[f"iou_{name}"], c[f"hd95_{name}"], c[f"both_empty_{name}"]) == (1.0, 1.0, 0.0, 1)
    assert standard.summary["metrics"]["dice_benign"]["n"] == 4  # included, as the binary path includes it
    counts = standard.summary["counts"]["classes"]
    assert counts["benign"] == {"n_both_empty": 1, "n_pred_empty": 1, "n_true_empty": 2, "n_hd95": 3}
    assert counts["malignant"] == {"n_both_empty": 1, "n_pred_empty": 2, "n_true_empty": 2, "n_hd95": 2}

    paper = evaluate_folders(pred_dir, root, empty="paper")  # the release's 0/0 -> 0, per class
    c = next(r for r in paper.rows if r["name"] == "c")
    assert (c["dice_benign"], c["dice_malignant"], c["any_dice"]) == (0.0, 0.0, 0.0)
    assert paper.summary["metrics"]["dice_benign"]["mean"] == pytest.approx((0.75 + 1 + 0 + 0) / 4)
    assert paper.summary["metrics"]["dice_malignant"]["mean"] == pytest.approx(0.25)


def test_metrics_csv_columns_and_summary_keys(folders, tmp_path: Path) -> None:
    pred_dir, root = folders
    result = run_evaluate(pred_dir, root, out_dir=tmp_path / "report")
    expected = ["name"] + [f"{m}_{c}" for m in METRICS for c in ("benign", "malignant")] + [f"any_{m}" for m in METRICS]
    assert list(class_metric_keys(LABELS)) == expected[1:]
    with open(tmp_path / "report" / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == expected
        rows = list(reader)
    assert [r["name"] for r in rows] == ["a", "b", "c", "d"]
    assert float(rows[0]["dice_benign"]) == 0.75 and math.isnan(float(rows[1]["hd95_malignant"]))

    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary) == {"metrics", "mean_over_classes", "counts", "labels", "settings"}
    assert summary["labels"] == {"background": 0, "benign": 1, "malignant": 2}
    stats = {f"{m}_{c}" for m in ("dice", "iou", "hd95", "precision", "recall") for c in ("benign", "malignant")}
    assert set(summary["metrics"]) == stats | {f"any_{m}" for m in ("dice", "iou", "hd95", "precision", "recall")}
    assert set(summary["metrics"]["dice_benign"]) == {"mean", "std", "median", "min", "max", "n"}
    assert set(summary["counts"]) == {"n_images", "classes", "any", "n_missing_predictions"}
    assert summary["counts"]["n_images"] == 4 and summary["counts"]["n_missing_predictions"] == 0
    assert summary["settings"] == {
        "size": "native",
        "empty": "standard",
        "masks": "label maps of class values",
        "missing": "error",
    }
    assert summary == json.loads(json.dumps(summary))  # strict JSON: nan written as null

    text = format_summary(result.summary)
    lines = text.splitlines()
    assert lines[0].split() == ["class", "dice", "iou", "hd95", "precision", "recall"]
    assert [ln.split()[0] for ln in lines[1:5]] == ["benign", "malignant", "any", "mean"]
    assert len({len(ln) for ln in lines[:5]}) == 1  # aligned
    assert "0.6875" in lines[1] and "0.5938" in lines[4]
    assert "benign=1" in text and "hd95 n 3" in text


def test_fixed_size_resizes_label_maps_nearest(folders) -> None:
    pred_dir, root = folders
    native = evaluate_folders(pred_dir, root)
    doubled = evaluate_folders(pred_dir, root, size="20")  # NEAREST 10 -> 20 copies every pixel 2 x 2
    for a, b in zip(native.rows, doubled.rows):
        assert (a["dice_benign"], a["iou_malignant"], a["any_dice"]) == (
            b["dice_benign"],
            b["iou_malignant"],
            b["any_dice"],
        )
        assert b["true_area_benign"] == 4 * a["true_area_benign"]


def test_a_prediction_value_that_is_no_class_fails_naming_the_file(folders) -> None:
    pred_dir, root = folders
    bad = pred_dir / "b.png"
    save_gray(bad, box(0, 0, 2, 2, 3))  # value 3: not declared
    with pytest.raises(DataError) as info:
        evaluate_folders(pred_dir, root)
    message = str(info.value)
    assert str(bad) in message and "[3]" in message and "a.png" not in message
    with pytest.raises(ValueError, match="not declared"):
        class_metrics(np.full((4, 4), 7, np.uint8), np.zeros((4, 4), np.uint8), LABELS)


def test_labels_from_the_masks_folders_parent_or_passed_explicitly(folders, tmp_path: Path) -> None:
    pred_dir, root = folders
    assert evaluate_folders(pred_dir, root / "masks").labels == LABELS  # a masks folder: its root's dataset.json
    plain = tmp_path / "plain"  # no dataset.json: the labels argument decides
    for name, (_, gt) in cases().items():
        save_gray(plain / f"{name}.png", gt)
    result = run_evaluate(pred_dir, plain, out_dir=tmp_path / "r", labels=LABELS)
    assert result.summary["metrics"]["dice_benign"]["mean"] == pytest.approx(0.6875)
    with pytest.raises(ConfigError, match="threshold"):
        evaluate_folders(pred_dir, root, threshold=0.5)


def test_in_memory_label_maps_and_the_binary_default() -> None:
    result = evaluate_masks([(n, p, g) for n, (p, g) in cases().items()], labels=LABELS)
    assert result.summary["metrics"]["dice_malignant"]["mean"] == pytest.approx(0.5)
    binary = evaluate_masks([("x", np.ones((4, 4), bool), np.ones((4, 4), bool))])
    assert binary.labels == BINARY and set(binary.rows[0]) == set(CSV_COLUMNS)
    assert set(binary.summary) == {"metrics", "counts", "settings"}


def test_a_binary_dataset_json_keeps_the_binary_reports(tmp_path: Path) -> None:
    pred_dir, root = tmp_path / "pred", tmp_path / "data"
    mask = box(2, 2, 4, 4, 255)
    save_gray(pred_dir / "x.png", mask)
    save_gray(root / "masks" / "x.png", mask)
    (root / "dataset.json").write_text(json.dumps({"name": "binary, no labels"}))
    result = run_evaluate(pred_dir, root, out_dir=tmp_path / "r")
    with open(tmp_path / "r" / "metrics.csv", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == CSV_COLUMNS
    assert set(result.summary) == {"metrics", "counts", "settings"} and result.rows[0]["dice"] == 1.0
    assert format_summary(result.summary).splitlines()[0].split() == ["metric", "mean", "std", "median"]


# --------------------------------------------------------------------------------------------- prediction

PREDICT_LABELS = LabelSet(("background", "cyst", "tumour"), (0, 2, 5))  # values unlike indices: argmax -> value


class BandModel(torch.nn.Module):
    """A fake K-class model: columns in three bands (background | cyst | tumour), softmax probabilities."""

    image_size = 16
    threshold = 0.5
    labels = PREDICT_LABELS

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        column = torch.arange(w, dtype=torch.float32).expand(b, h, w)
        logits = torch.stack([-(column - c).abs() for c in (1.5, 7.5, 13.5)], dim=1) * 2.0
        return logits.softmax(dim=1)


class BinaryModel(torch.nn.Module):
    image_size = 16
    threshold = 0.5

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(images.mean(1, keepdim=True) * 4 + torch.linspace(-1, 1, 16))


def write_inputs(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {
        "wide": rng.integers(0, 256, (24, 40, 3), np.uint8),
        "square": rng.integers(0, 256, (16, 16, 3), np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    return images


def test_predict_writes_palette_label_maps_native_probabilities_and_overlays(tmp_path: Path) -> None:
    images = write_inputs(tmp_path / "in")
    gt_dir = tmp_path / "gt"
    gt = np.zeros((24, 40), np.uint8)
    gt[4:12, 16:26] = 2
    gt[14:22, 30:38] = 5
    save_gray(gt_dir / "wide.png", gt)
    out = tmp_path / "out"
    report = predict_files(
        BandModel(), tmp_path / "in", out, save_prob=True, overlay=True, gt_dir=gt_dir, device="cpu", progress=False
    )
    assert report.ok and sorted(report.written) == ["square", "wide"]

    with Image.open(out / "wide.png") as img:
        assert img.mode == "P" and img.size == (40, 24)
        values = np.asarray(img)
        palette = np.asarray(img.getpalette(), np.uint8).reshape(-1, 3)
    assert set(np.unique(values)) == {0, 2, 5}  # class values, not indices 0..2
    assert (values[:, 1] == 0).all() and (values[:, 20] == 2).all() and (values[:, 38] == 5).all()  # the bands
    assert tuple(palette[2]) == CLASS_COLOURS[1] and tuple(palette[5]) == CLASS_COLOURS[2]

    prob = np.load(out / "wide.prob.npy")
    assert prob.shape == (3, 24, 40) and prob.dtype == np.float32  # K x native H x W
    assert np.allclose(prob.sum(axis=0), 1.0, atol=1e-5)  # bilinear keeps a softmax a distribution
    assert np.array_equal(np.asarray(PREDICT_LABELS.values, np.uint8)[prob.argmax(axis=0)], values)
    assert np.load(out / "square.prob.npy").shape == (3, 16, 16)

    with Image.open(out / "wide.overlay.png") as img:
        drawn = np.asarray(img.convert("RGB"))
    assert drawn.shape[1] >= 40 and drawn.shape[0] > 24  # the legend strip under the image
    assert np.array_equal(drawn[:24, :40], class_overlay(images["wide"], values, PREDICT_LABELS, gt))
    assert (out / "square.overlay.png").is_file()  # no ground truth for it: prediction only


def test_write_class_prediction_refuses_a_wrong_number_of_classes(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(GmsegError, match="3 classes"):
        write_class_prediction(tmp_path, "x", image, torch.rand(2, 8, 8), PREDICT_LABELS)
    values = write_class_prediction(tmp_path, "x", image, torch.rand(3, 4, 4).softmax(0), PREDICT_LABELS)
    assert values.shape == (8, 8) and values.dtype == np.uint8 and not (tmp_path / "x.prob.npy").exists()


def test_the_binary_outputs_are_unchanged(tmp_path: Path) -> None:
    images = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    model = BinaryModel()
    predict_files(model, tmp_path / "in", out, save_prob=True, overlay=True, device="cpu", progress=False)
    for name, image in images.items():
        with torch.no_grad():
            from gmseg.predict import image_to_tensor

            probability = model.predict_proba(image_to_tensor(image, 16)[None])[0]
        expected = probability_at_size(probability, *image.shape[:2])
        prob = np.load(out / f"{name}.prob.npy")
        assert prob.shape == image.shape[:2] and prob.dtype == np.float32 and np.array_equal(prob, expected)
        with Image.open(out / f"{name}.png") as img:
            assert img.mode == "L" and np.array_equal(np.asarray(img), (expected > 0.5).astype(np.uint8) * 255)
        with Image.open(out / f"{name}.overlay.png") as img:
            assert img.size == image.shape[1::-1]  # contour overlay at the image's size, no legend


# --------------------------------------------------------------------------------------------- drawing


def test_class_overlay_fills_predictions_and_outlines_truths_in_class_colours(tmp_path: Path) -> None:
    image = np.full((12, 12, 3), 100, np.uint8)
    pred = np.zeros((12, 12), np.uint8)
    pred[1:5, 1:5] = 1
    gt = np.zeros((12, 12), np.uint8)
    gt[6:11, 6:11] = 2
    drawn = class_overlay(image, pred, LABELS, gt)
    assert (drawn[0, :] == 100).all()  # background untouched
    fill = np.rint(0.6 * 100 + 0.4 * np.asarray(CLASS_COLOURS[1])).astype(np.uint8)
    assert (drawn[2, 2] == fill).all()
    assert tuple(drawn[6, 8]) == CLASS_COLOURS[2] and (drawn[8, 8] == 100).all()  # outline, inside kept
    with pytest.raises(ConfigError, match="not declared"):
        class_overlay(image, np.full((12, 12), 9, np.uint8), LABELS)

    save_class_overlay(tmp_path / "o.png", image, pred, LABELS, gt)
    cases_ = [{"name": f"c{i}", "image": image, "pred": pred, "gt": gt, "dice": i / 4} for i in range(4)]
    path = report_grid(cases_, tmp_path / "grid.png", title="3 classes", labels=LABELS)
    for written in (tmp_path / "o.png", path):
        with Image.open(written) as img:
            assert img.format == "PNG"
            img.load()


def test_label_maps_round_trip_through_the_data_layer(tmp_path: Path) -> None:
    """predict writes and evaluate reads label maps through gmseg.data.io: palette index = class value."""
    from gmseg.data.io import read_label_map, write_label_map_png

    values = np.zeros((6, 7), np.uint8)
    values[1:3, 1:4], values[4:, 5:] = 2, 5
    write_label_map_png(tmp_path / "map.png", values, PREDICT_LABELS)
    with Image.open(tmp_path / "map.png") as img:
        assert img.mode == "P" and np.array_equal(np.asarray(img), values)
    assert np.array_equal(read_label_map(tmp_path / "map.png", PREDICT_LABELS), values)
    save_gray(tmp_path / "gray.png", values)
    assert np.array_equal(read_label_map(tmp_path / "gray.png", PREDICT_LABELS), values)
    with pytest.raises(ConfigError, match="not declared"):
        write_label_map_png(tmp_path / "bad.png", values + 1, PREDICT_LABELS)
