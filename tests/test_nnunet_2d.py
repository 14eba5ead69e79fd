"""nnU-Net v2 raw datasets of 2D files (imagesTr/CASE_0000.png, labelsTr/CASE.png, dataset.json with
name -> index labels and file_ending ".png") through train, ``gmseg test`` and ``gmseg generalize``:
the cases of the dataset's own split (splits_final.json fold 0) scored one row per case, named by case."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmseg.cli import main
from gmseg.config import config_from_dict
from gmseg.errors import GmsegError
from gmseg.generalize import run_generalize
from gmseg.testing import run_test
from gmseg.training import train

LABELS = {"background": 0, "nucleus": 1, "membrane": 2}
FOLD0_VAL = ["cell_001", "cell_004", "cell_007"]


def make_nnunet_2d(root: Path, n: int = 10, labels: dict[str, int] = LABELS, rgb: bool = False) -> Path:
    """Dataset900_Cells: grey (or RGB) 24 x 28 PNG inputs with two bright boxes, PNG label maps of class
    indices; every class index above 1 of ``labels`` folds into 1 for a binary set."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        label = np.zeros((24, 28), np.uint8)
        label[4:10, 5:12] = 1
        label[14:20, 15:24] = 2 if len(labels) > 2 else 1
        image = np.clip(label * 80.0 + rng.normal(60, 10, label.shape), 0, 255).astype(np.uint8)
        pixels = np.repeat(image[..., None], 3, axis=2) if rgb else image
        Image.fromarray(pixels).save(root / "imagesTr" / f"cell_{i:03d}_0000.png")
        Image.fromarray(label).save(root / "labelsTr" / f"cell_{i:03d}.png")
    channel = "rgb" if rgb else "grey"
    meta = {"channel_names": {"0": channel}, "labels": labels, "numTraining": n, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def with_folds(root: Path) -> Path:
    """nnU-Net's splits_final.json: five folds, fold 0's validation cases are what test scores."""
    names = sorted(p.name.removesuffix(".png") for p in (root / "labelsTr").iterdir())
    fold = {"train": [n for n in names if n not in FOLD0_VAL], "val": FOLD0_VAL}
    (root / "splits_final.json").write_text(json.dumps([fold] * 5))
    return root


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    return with_folds(make_nnunet_2d(tmp_path_factory.mktemp("nnunet") / "Dataset900_Cells"))


@pytest.fixture(scope="module")
def run(cells, tmp_path_factory) -> Path:
    """One epoch of a tiny U-Net on the dataset, read in place (training splits by case too)."""
    out = tmp_path_factory.mktemp("runs")
    config = {
        "name": "cells",
        "data": {"root": str(cells), "image_size": 32, "val_fraction": 0.2, "augmentations": []},
        "model": {"name": "unet", "channels": [8, 16, 32]},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2, "warmup_epochs": 0, "seed": 3, "output_dir": str(out)},
    }
    return train(config_from_dict(config), run_dir=out / "unet", progress=False)


def rows_of(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_test_scores_the_folds_validation_cases_one_row_each(run, cells, tmp_path):
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["test"]) == FOLD0_VAL  # training held out what splits_final.json's fold 0 validates
    out = tmp_path / "test"
    result = run_test(run / "checkpoints" / "best", cells, out, progress=False)
    rows = rows_of(out)
    assert [r["name"] for r in rows] == FOLD0_VAL == [r["name"] for r in result.rows]
    for row in rows:  # per-class 2D scores of dataset.json's classes, sane values
        for key in ("dice_nucleus", "dice_membrane", "iou_nucleus", "any_dice", "recall_membrane"):
            assert 0.0 <= float(row[key]) <= 1.0
        assert int(row["true_area_nucleus"]) == 42 and int(row["true_area_membrane"]) == 54
        assert math.isnan(float(row["hd95_nucleus"])) or 0.0 <= float(row["hd95_nucleus"]) <= math.hypot(24, 28)
    assert result.labels.names == ("background", "nucleus", "membrane")
    # predictions named by case as nnU-Net names them, at the image's size, of declared classes
    predicted = sorted(p.name for p in (out / "predictions").iterdir() if not p.name.startswith("."))
    assert predicted == [f"{n}.png" for n in FOLD0_VAL]
    values = np.asarray(Image.open(out / "predictions" / "cell_001.png"))
    assert values.shape == (24, 28) and set(np.unique(values)) <= {0, 1, 2}
    assert json.loads((out / "tested_names.json").read_text())["test"] == FOLD0_VAL
    assert json.loads((out / "timing.json").read_text())["images"] == 3
    assert (out / "report.png").stat().st_size > 0
    assert len(list((out / "report_files").glob("*.s.jpg"))) == 3  # every case drawn in report.html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["n_images"] == 3


def test_cli_test_with_the_runs_split_and_with_every_case(run, cells, tmp_path):
    model = str(run / "checkpoints" / "best")
    args = ["test", "--model", model, "--data", str(cells), "--split", str(run / "split.json")]
    assert main([*args, "--out", str(tmp_path / "split")]) == 0
    split = json.loads((run / "split.json").read_text())
    assert [r["name"] for r in rows_of(tmp_path / "split")] == split["test"]
    assert main(["test", "--model", model, "--data", str(cells), "--stage", "all", "--out", str(tmp_path / "all")]) == 0
    assert [r["name"] for r in rows_of(tmp_path / "all")] == [f"cell_{i:03d}" for i in range(10)]


def test_without_a_split_file_only_every_case_is_tested(run, cells, tmp_path):
    bare = tmp_path / "Dataset901_NoFolds"
    shutil.copytree(cells, bare)
    (bare / "splits_final.json").unlink()
    with pytest.raises(GmsegError, match="ships no split file"):
        run_test(run / "checkpoints" / "best", bare, tmp_path / "t", progress=False)
    result = run_test(run / "checkpoints" / "best", bare, tmp_path / "t", stage="all", progress=False)
    assert len(result.rows) == 10


def test_generalize_takes_the_dataset_in_and_across_domain(run, cells, tmp_path):
    model = run / "checkpoints" / "best"
    across = run_generalize(model, [("cells", cells)], tmp_path / "across", progress=False)
    assert [(r["stage"], r["n_images"]) for r in across.rows] == [("test", 3), ("all", 10)]
    inside = run_generalize(model, [("cells", cells)], tmp_path / "in", in_domain="cells", progress=False)
    assert [(r["stage"], r["n_images"]) for r in inside.rows] == [("test", 3)]
    assert [r["name"] for r in rows_of(tmp_path / "in" / "cells" / "test")] == FOLD0_VAL


def test_binary_rgb_dataset_with_0_1_labels(model_dir, tmp_path):
    """nnU-Net's natural-image datasets: RGB inputs, label maps 0/1 (not 0/255), a binary model."""
    root = with_folds(make_nnunet_2d(tmp_path / "Dataset902_Roads", labels={"background": 0, "road": 1}, rgb=True))
    result = run_test(model_dir, root, tmp_path / "test", progress=False)
    assert [r["name"] for r in result.rows] == FOLD0_VAL
    assert all(r["true_area"] == 42 + 54 for r in result.rows)  # label value 1 is foreground
    assert all(0.0 <= r["dice"] <= 1.0 for r in result.rows)
