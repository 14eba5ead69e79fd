"""gmseg.evaluate: folder scoring, the paper's 224 protocol, error reports and result files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmseg.errors import ConfigError, DataError
from gmseg.evaluate import (
    CSV_COLUMNS,
    EvaluationResult,
    evaluate_folders,
    evaluate_masks,
    format_summary,
    parse_size,
    run_evaluate,
    summarize,
    write_results,
)

KVASIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kvasir-seg-5"


def save_mask(path: Path, mask: np.ndarray) -> Path:
    """0/255 8-bit PNG (or any PIL format by suffix), as `gmseg predict` and datasets store masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = mask if mask.dtype == np.uint8 else mask.astype(np.uint8) * 255
    Image.fromarray(arr).save(path)
    return path


def box(shape: tuple[int, int], top: int, left: int, h: int, w: int) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top : top + h, left : left + w] = True
    return m


# --------------------------------------------------------------------------- in memory, summaries


def test_evaluate_masks_counts_and_both_empty_conventions() -> None:
    blank = np.zeros((20, 20), bool)
    blob = box((20, 20), 5, 5, 10, 10)
    half = box((20, 20), 5, 5, 10, 5)  # 50 px inside the 100 px blob: Dice 100/150
    pairs = [("perfect", blob, blob), ("normal", blank, blank), ("half", half, blob), ("missed", blank, blob)]

    std = evaluate_masks(pairs, empty="standard")
    assert [r["name"] for r in std.rows] == ["perfect", "normal", "half", "missed"]
    assert std.summary["metrics"]["dice"]["mean"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    counts = std.summary["counts"]
    assert counts == {"n_images": 4, "n_both_empty": 1, "n_pred_empty": 2, "n_true_empty": 1, "n_hd95": 3}
    assert std.summary["settings"]["empty"] == "standard"

    paper = evaluate_masks(pairs, empty="paper")
    assert paper.summary["metrics"]["dice"]["mean"] == pytest.approx((1 + 0 + 2 / 3 + 0) / 4)
    assert paper.summary["metrics"]["iou"]["mean"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert paper.summary["counts"]["n_both_empty"] == 1


def test_summary_std_uses_ddof_1_and_finite_hd95_only() -> None:
    rows = [
        {
            "name": n,
            "dice": d,
            "iou": d,
            "hd95": h,
            "precision": d,
            "recall": d,
            "pred_area": 1,
            "true_area": 1,
            "both_empty": 0,
        }
        for n, d, h in (("a", 1.0, 2.0), ("b", 0.6, math.nan), ("c", 0.2, 4.0))
    ]
    s = summarize(rows, "standard")
    dice = s["metrics"]["dice"]
    # mean 0.6, squared deviations 0.16 + 0 + 0.16: ddof=1 -> sqrt(0.32 / 2) = 0.4 (ddof=0 would be 0.327)
    assert dice["std"] == pytest.approx(0.4)
    stats = (dice["mean"], dice["median"], dice["min"], dice["max"], dice["n"])
    assert stats == pytest.approx((0.6, 0.6, 0.2, 1.0, 3))
    hd = s["metrics"]["hd95"]
    assert (hd["n"], hd["mean"], hd["std"]) == pytest.approx((2, 3.0, math.sqrt(2)))
    assert s["counts"]["n_hd95"] == 2
    one = summarize(rows[:1], "paper", size=224)
    assert math.isnan(one["metrics"]["dice"]["std"])  # undefined for a single image
    assert one["settings"] == {"size": 224, "empty": "paper", "masks": "non-zero is foreground (JPEG: > half scale)"}


# --------------------------------------------------------------------------- the paper's protocol


def release_scores(pred_paths: list[Path], gt_paths: list[Path]) -> tuple[list[float], list[float]]:
    """The release's valid.py procedure, written out independently of gmseg."""
    dices, ious = [], []
    for pp, gp in zip(pred_paths, gt_paths):
        p = np.array(Image.open(pp).convert("L").resize((224, 224), Image.NEAREST)) / 255 >= 0.5
        g = np.array(Image.open(gp).convert("L").resize((224, 224), Image.NEAREST)) / 255 >= 0.5
        tp, fp, fn = np.sum(p & g), np.sum(p & ~g), np.sum(~p & g)
        dices.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0)
        ious.append(tp / (tp + fp + fn) if (tp + fp + fn) > 0 else 0.0)
    return dices, ious


def test_size_224_paper_mode_reproduces_the_release(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    names, pred_paths, gt_paths = [], [], []
    for i in range(6):
        gt = rng.random((448, 448)) < 0.4  # noisy masks: NEAREST sampling matters
        gt[100:300, 80:250] = True
        gt_arr = gt.astype(np.uint8) * 255
        gt_arr[gt_arr == 0] = np.where(rng.random(int((gt_arr == 0).sum())) < 0.1, 127, 0)  # below 0.5
        gt_arr[:10][gt_arr[:10] == 255] = 128  # 128/255 >= 0.5: still foreground
        pred_shape = [(448, 448), (224, 224), (300, 500)][i % 3]  # both sides resized, any size
        pred = rng.random(pred_shape) < 0.5
        if i == 4:  # a normal image predicted normal: the release's 0/0 -> 0
            gt_arr[:] = 0
            pred[:] = False
        names.append(f"case_{i}")
        gt_paths.append(save_mask(gt_dir / f"case_{i}.png", gt_arr))
        pred_paths.append(save_mask(pred_dir / f"case_{i}.png", pred))

    # The release reads graded masks at /255 >= 0.5: its protocol is that threshold (the default rule,
    # any non-zero, reads 0/255 masks identically).
    result = evaluate_folders(pred_dir, gt_dir, names=names, size=224, empty="paper", threshold=0.5)
    dices, ious = release_scores(pred_paths, gt_paths)
    assert [r["dice"] for r in result.rows] == dices  # exact, not approximate
    assert [r["iou"] for r in result.rows] == ious
    assert result.rows[4]["dice"] == 0.0 and result.rows[4]["both_empty"] == 1
    dice = result.summary["metrics"]["dice"]
    assert dice["mean"] == pytest.approx(np.mean(dices), rel=1e-12)
    assert dice["std"] == pytest.approx(np.std(dices, ddof=1), rel=1e-12)
    assert result.summary["metrics"]["iou"]["mean"] == pytest.approx(np.mean(ious), rel=1e-12)
    assert result.summary["settings"]["size"] == 224
    assert result.summary["counts"]["n_both_empty"] == 1
    # the same files in standard mode differ only by the both-empty image
    std = evaluate_folders(pred_dir, gt_dir, names=names, size="224", empty="standard", threshold=0.5)
    assert std.rows[4]["dice"] == 1.0
    assert [r["dice"] for i, r in enumerate(std.rows) if i != 4] == [d for i, d in enumerate(dices) if i != 4]


# --------------------------------------------------------------------------- folders, errors


def test_native_mode_dataset_root_suffixes_and_ignored_files(tmp_path: Path) -> None:
    root, pred_dir = tmp_path / "dataset", tmp_path / "pred"
    gt = box((30, 40), 5, 5, 10, 20)
    save_mask(root / "masks" / "a.png", gt)
    save_mask(root / "masks" / "b.bmp", gt)  # any image suffix for ground truth
    save_mask(pred_dir / "a.png", gt)
    save_mask(pred_dir / "b.png", box((30, 40), 5, 5, 10, 10))
    save_mask(pred_dir / "a.overlay.png", np.ones((30, 40), bool))  # written by predict: not a mask
    np.save(pred_dir / "a.prob.npy", np.zeros((30, 40), np.float32))
    result = evaluate_folders(pred_dir, root)  # names=None: every prediction
    assert [r["name"] for r in result.rows] == ["a", "b"]
    assert result.rows[0]["dice"] == 1.0
    assert result.rows[1]["dice"] == pytest.approx(2 * 100 / 300)
    assert result.summary["settings"]["size"] == "native"
    # the mask folder itself is accepted too
    assert evaluate_folders(pred_dir, root / "masks").rows == result.rows


def test_one_error_lists_every_missing_and_mismatched_file(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    m = box((32, 32), 4, 4, 8, 8)
    for name in ("ok1", "no_pred", "mismatch", "ok2"):
        save_mask(gt_dir / f"{name}.png", m)
    for name in ("ok1", "no_gt", "ok2", "stray"):
        save_mask(pred_dir / f"{name}.png", m)
    save_mask(pred_dir / "mismatch.png", np.zeros((16, 32), bool))

    with pytest.raises(DataError) as info:
        evaluate_folders(pred_dir, gt_dir, names=["ok1", "no_pred", "no_gt", "mismatch", "ok2"])
    err = info.value
    assert len(err.problems) == 3
    msg = str(err)
    assert "no_pred: prediction missing" in msg and "no_pred.png" in msg
    assert "no_gt: ground-truth mask missing" in msg
    assert "mismatch: size mismatch" in msg and "32x16" in msg and "32x32" in msg
    assert "ok1" not in msg and "ok2" not in msg

    # names=None: predictions without ground truth are all listed (a stray file is named, not skipped)
    with pytest.raises(DataError) as info:
        evaluate_folders(pred_dir, gt_dir)
    listed = " ".join(info.value.problems)
    assert "no_gt" in listed and "stray" in listed and "mismatch" in listed

    # at a fixed size, differing native sizes are fine
    ok = evaluate_folders(pred_dir, gt_dir, names=["ok1", "mismatch"], size=224)
    assert [r["name"] for r in ok.rows] == ["ok1", "mismatch"]


def test_other_input_errors(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    with pytest.raises(DataError, match="no predictions"):
        evaluate_folders(pred_dir, gt_dir)
    with pytest.raises(DataError, match="folder"):
        evaluate_folders(tmp_path / "nope", gt_dir)
    save_mask(pred_dir / "x.png", box((8, 8), 1, 1, 3, 3))
    save_mask(gt_dir / "x.png", box((8, 8), 1, 1, 3, 3).astype(np.uint8))  # 0/1 values: the mask rule reads them
    (pred_dir / "y.png").write_bytes(b"not a png")
    save_mask(gt_dir / "y.png", box((8, 8), 1, 1, 3, 3))
    with pytest.raises(DataError) as info:
        evaluate_folders(pred_dir, gt_dir, size=8)
    listed = " ".join(info.value.problems)
    assert "x:" not in listed
    assert "y: cannot read prediction" in listed
    assert evaluate_folders(pred_dir, gt_dir, names=["x"], size=8).rows[0]["dice"] == 1.0
    with pytest.raises(ConfigError):
        evaluate_folders(pred_dir, gt_dir, empty="nope")
    for bad in ("big", 0, -3, True, 2.5):
        with pytest.raises(ConfigError):
            parse_size(bad)
    assert parse_size("native") == "native" and parse_size("224") == 224 and parse_size(np.int64(64)) == 64


# --------------------------------------------------------------------------- output files


def test_write_results_files_are_parseable(tmp_path: Path) -> None:
    blob = box((20, 20), 5, 5, 10, 10)
    blank = np.zeros((20, 20), bool)
    half = box((20, 20), 5, 5, 10, 5)
    result = evaluate_masks([("a", blob, blob), ("b", blank, blob), ("c", half, blob)])
    csv_path, json_path = write_results(result, tmp_path / "out")
    assert (csv_path.name, json_path.name) == ("metrics.csv", "summary.json")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert float(rows[2]["dice"]) == result.rows[2]["dice"]  # full precision
    assert math.isnan(float(rows[1]["hd95"]))

    def no_nan(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    summary = json.loads(json_path.read_text(), parse_constant=no_nan)  # strict JSON
    assert summary["counts"]["n_images"] == 3
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(result.summary["metrics"]["dice"]["mean"])
    assert summary["metrics"]["precision"]["n"] == 2  # precision undefined with an empty prediction
    # no temp files left behind
    assert sorted(p.name for p in csv_path.parent.iterdir()) == ["metrics.csv", "summary.json"]

    # rewriting replaces, never appends
    first = result.rows[:1]
    write_results(EvaluationResult(rows=first, summary=summarize(first, "standard")), csv_path.parent)
    assert len(csv_path.read_text().splitlines()) == 2
    summary1 = json.loads(json_path.read_text())
    assert summary1["metrics"]["dice"]["std"] is None  # nan -> null


def test_format_summary_table() -> None:
    blob = box((20, 20), 5, 5, 10, 10)
    result = evaluate_masks([("a", blob, blob), ("c", box((20, 20), 5, 5, 10, 5), blob)])
    text = format_summary(result.summary)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "mean", "std", "median"]
    assert [ln.split()[0] for ln in lines[1:6]] == ["dice", "iou", "hd95", "precision", "recall"]
    assert len({len(ln) for ln in lines[:6]}) == 1  # aligned columns
    assert "0.8333" in lines[1]  # mean Dice of 1 and 2/3
    assert "empty=standard" in text


def test_run_evaluate_with_split_file(tmp_path: Path) -> None:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "data"
    m = box((24, 24), 2, 2, 10, 10)
    for name in ("t1", "t2", "v1"):
        save_mask(gt_dir / "masks" / f"{name}.png", m)
        save_mask(pred_dir / f"{name}.png", m)
    save_mask(gt_dir / "masks" / "tr.png", m)  # train image: not predicted, must not be required
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["tr"], "test": ["t1", "t2"]}))
    result = run_evaluate(pred_dir, gt_dir, split=split, size="224", empty="paper")
    assert [r["name"] for r in result.rows] == ["t1", "t2"]
    assert (pred_dir / "metrics.csv").is_file() and (pred_dir / "summary.json").is_file()
    assert json.loads((pred_dir / "summary.json").read_text())["settings"]["size"] == 224
    # Without a split every ground-truth mask needs a prediction (issue #41): 'tr' has none, so say so.
    out = run_evaluate(pred_dir, gt_dir, out_dir=tmp_path / "report", missing="skip")
    assert len(out.rows) == 3 and (tmp_path / "report" / "metrics.csv").is_file()
    assert out.summary["counts"]["n_missing_predictions"] == 1
    with pytest.raises(ConfigError, match="val"):
        run_evaluate(pred_dir, gt_dir, split=split, stage="val")


@pytest.mark.skipif(not KVASIR.is_dir(), reason="shared data ../shared/data/kvasir-seg-5 not available")
def test_real_masks_scored_against_themselves() -> None:
    result = evaluate_folders(KVASIR / "masks", KVASIR)
    assert len(result.rows) == 5
    assert all(r["dice"] == 1.0 and r["hd95"] == 0.0 for r in result.rows)
