"""bench/cross_domain_table.py, bench/multiclass_table.py and bench/study_stats.py: paired model differences
and the pathology confusion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import cross_domain_table  # noqa: E402
import multiclass_table  # noqa: E402
from study_stats import paired_difference  # noqa: E402


def scored(folder: Path, dice: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    rows = "".join(f"{name},{value}\n" for name, value in dice.items())
    (folder / "metrics.csv").write_text("name,dice\n" + rows)


def test_paired_difference_uses_the_images_both_scored():
    mean, se, n, better = paired_difference({"a": 0.9, "b": 0.7, "c": 0.8}, {"a": 0.8, "b": 0.8, "z": 0.1})
    assert (n, better) == (2, 1)
    assert mean == pytest.approx(0.0, abs=1e-9)
    assert se == pytest.approx(10.0)  # differences +10 and -10 points: sd 14.14, over sqrt(2)


def test_cross_domain_table_pairs_unet_and_gms_per_column(tmp_path):
    scored(tmp_path / "unet-busi/generalization/busi/test", {"x": 0.9, "y": 0.8, "w": 0.7})
    scored(tmp_path / "gms-busi/generalization/busi/test", {"x": 0.7, "y": 0.7, "w": 0.7})
    scored(tmp_path / "unet-busi/generalization/bus/all", {"x": 0.5})  # GMS not scored there yet
    result = cross_domain_table.paired(tmp_path)
    assert set(result) == {"BUSI→BUSI (130)"}
    cell = result["BUSI→BUSI (130)"]
    assert (cell["n_images"], cell["unet_better"]) == (3, 2)
    assert cell["mean"] == pytest.approx(10.0)
    line = cross_domain_table.markdown({}, result).splitlines()[2]
    assert "+10.00 ± 5.77 (2 of 3)" in line


def area_row(true: tuple[float, float], pred: tuple[float, float]) -> dict[str, str]:
    """A metrics.csv row as csv.DictReader gives it: (benign, malignant) true and predicted areas."""
    return {
        "true_area_benign": str(true[0]),
        "true_area_malignant": str(true[1]),
        "pred_area_benign": str(pred[0]),
        "pred_area_malignant": str(pred[1]),
    }


def test_pathology_confusion_reads_the_majority_label_from_the_areas():
    rows = [
        area_row((120, 0), (80, 30)),  # benign, mostly predicted benign: correct
        area_row((0, 50), (60, 10)),  # malignant predicted benign
        area_row((0, 70), (0, 0)),  # malignant, nothing predicted
        area_row((10, 10), (5, 5)),  # both kinds: no single pathology, left out
        area_row((0, 0), (3, 0)),  # normal image: left out
    ]
    result = multiclass_table.pathology_confusion(rows)
    assert result["n"] == 3
    assert result["matrix"]["benign"] == {"benign": 1, "malignant": 0, "none": 0}
    assert result["matrix"]["malignant"] == {"benign": 1, "malignant": 0, "none": 1}
    assert result["accuracy"] == pytest.approx(1 / 3)
