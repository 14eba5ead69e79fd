"""gmseg.compare and ``gmseg compare``: paired statistics against hand-computed values, mismatched image sets,
the written files, and the cross-domain study's paired rows regenerated through the verb."""

from __future__ import annotations

import csv
import json
import math
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from gmseg.cli import main
from gmseg.compare import compare_folders, folder_labels, mean_se, paired_difference, run_compare
from gmseg.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
CROSS_DOMAIN = ROOT / "bench" / "results" / "cross_domain" / "full"


def scored(folder: Path, rows: dict[str, tuple[float, float]]) -> Path:
    """A scored folder's metrics.csv: name, dice, hd95 (and an area column, which is no score)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{name},{dice},{hd95},100" for name, (dice, hd95) in rows.items()]
    (folder / "metrics.csv").write_text("name,dice,hd95,true_area\n" + "\n".join(lines) + "\n")
    return folder


A = {"a": (0.5, 10.0), "b": (0.6, 5.0), "c": (0.7, math.nan)}
B = {"a": (0.6, 4.0), "b": (0.6, 8.0), "c": (0.9, 3.0)}


def test_paired_statistics_match_values_computed_by_hand():
    # Dice B - A: +0.1, 0, +0.2 -> mean 0.1; sd sqrt((0 + 0.01 + 0.01) / 2) = 0.1; SE 0.1 / sqrt(3)
    d = paired_difference({k: v[0] for k, v in A.items()}, {k: v[0] for k, v in B.items()})
    assert d.mean == pytest.approx(0.1) and d.se == pytest.approx(0.1 / math.sqrt(3))
    assert (d.n, d.other_better, d.first_better, d.ties) == (3, 2, 0, 1)
    # HD95 (lower is better), c is nan in A: -6 and +3 -> mean -1.5, sd sqrt(2 * 4.5^2) = 6.364, SE 4.5
    h = paired_difference({k: v[1] for k, v in A.items()}, {k: v[1] for k, v in B.items()}, lower_is_better=True)
    assert h.mean == pytest.approx(-1.5) and h.se == pytest.approx(4.5)
    assert (h.n, h.other_better, h.first_better, h.ties) == (2, 1, 1, 0)
    assert mean_se([0.2]) == (0.2, pytest.approx(math.nan, nan_ok=True))


def test_compare_writes_the_table_the_statistics_the_scatter_and_the_page(tmp_path, capsys):
    first, other = scored(tmp_path / "gms" / "test", A), scored(tmp_path / "unet" / "test", B)
    assert main(["compare", str(first), str(other), "--out", str(tmp_path / "cmp")]) == 0
    assert "better: unet 2, gms 0, ties 1 (n 3)" in capsys.readouterr().out
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert result["first"] == "gms" and result["n_cases"] == 3 and set(result["metrics"]) == {"dice", "hd95"}
    dice = result["metrics"]["dice"]["against_first"]["unet"]
    assert dice["mean"] == pytest.approx(0.1) and dice["se"] == pytest.approx(0.0577350269)
    hd95 = result["metrics"]["hd95"]
    assert hd95["higher_is_better"] is False and hd95["against_first"]["unet"]["n"] == 2
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert float(rows[2]["dice@gms"]) == 0.7 and float(rows[2]["dice@unet"]) == 0.9
    assert float(rows[2]["dice@unet-gms"]) == pytest.approx(0.2)
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "cmp" / "comparison.html").read_text(encoding="utf-8")
    shown = re.findall(r'<div class="disagreement" data-name="([^"]*)"', page)
    assert shown == ["c", "a", "b"]  # largest Dice difference first
    assert main(["compare", str(first), str(other), "--out", str(tmp_path / "cmp")]) == 2  # no silent overwrite
    assert main(["compare", str(first), str(other), "--out", str(first)]) == 2  # never into a compared folder


def test_different_image_sets_are_refused_naming_what_differs_unless_asked(tmp_path, capsys):
    first = scored(tmp_path / "one", A)
    other = scored(tmp_path / "two", {**B, "extra": (0.1, 1.0)})
    del_b = scored(tmp_path / "three", {k: v for k, v in B.items() if k != "b"})
    with pytest.raises(DataError) as error:
        compare_folders([first, other, del_b])
    text = str(error.value)
    assert "--intersection" in text and "'extra'" in text and "2 common case(s)" in text
    assert "one (" in text and "'b'" in text  # the first folder's case missing from the third, named
    assert main(["compare", str(first), str(other), "--out", str(tmp_path / "out")]) == 2
    assert "not scored on the same images" in capsys.readouterr().err and not (tmp_path / "out").exists()
    comparison = run_compare([str(first), str(other), str(del_b)], tmp_path / "out", intersection=True)
    assert comparison.names == ["a", "c"]
    stored = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert stored["dropped"] == {"one": 1, "two": 2, "three": 0}
    assert set(stored["metrics"]["dice"]["against_first"]) == {"two", "three"}


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    first = scored(tmp_path / "one", A)
    assert main(["compare", str(first), "--out", str(tmp_path / "out")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["compare", str(first), str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    assert "metrics.csv not found" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.csv").write_text("name,pred_area\nx,3\n")
    assert main(["compare", str(first), str(tmp_path / "bad"), "--out", str(tmp_path / "out")]) == 2
    assert "score columns" in capsys.readouterr().err


def test_labels_are_the_path_parts_that_differ(tmp_path):
    paths = [tmp_path / m / "generalization" / "busi" / "test" for m in ("gms-busi", "unet-busi")]
    assert folder_labels(paths) == ["gms-busi", "unet-busi"]
    first, other = scored(tmp_path / "x", A), scored(tmp_path / "y", B)
    assert [f.label for f in compare_folders([("GMS", first), ("U-Net", other)]).folders] == ["GMS", "U-Net"]


# (train, tested dataset, stage, the column of bench/results/cross_domain/full/table.md)
STUDY_COLUMNS = [
    ("busi", "busi", "test", 1),
    ("busi", "bus", "test", 2),
    ("busi", "bus", "all", 3),
    ("bus", "bus", "test", 4),
    ("bus", "busi", "test", 5),
    ("bus", "busi", "all", 6),
]


def test_the_cross_domain_studys_paired_row_comes_out_of_gmseg_compare_unchanged(tmp_path):
    """BENCHMARKS.md's U-Net minus GMS rows, regenerated by ``gmseg compare GMS U-Net`` on the committed
    per-image metrics: the same figures, to the last printed digit."""
    table = (CROSS_DOMAIN / "table.md").read_text(encoding="utf-8")
    row = next(line for line in table.splitlines() if line.startswith("| U-Net minus GMS-TAESD, paired"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    benchmarks = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    for train, tested, stage, column in STUDY_COLUMNS:
        gms, unet = (CROSS_DOMAIN / f"{m}-{train}" / "generalization" / tested / stage for m in ("gms", "unet"))
        out = tmp_path / f"{train}-{tested}-{stage}"
        assert main(["compare", str(gms), str(unet), "--out", str(out)]) == 0
        d = json.loads((out / "comparison.json").read_text())["metrics"]["dice"]["against_first"]["unet-" + train]
        cell = f"{100 * d['mean']:+.2f} ± {100 * d['se']:.2f} ({d['other_better']} of {d['n']})"
        assert cells[column] == cell
        if train == "bus":  # the BUS-trained table carries the paired row verbatim
            assert cell in benchmarks
        else:  # the BUSI-trained figures are quoted in the prose, the table's rounded to one decimal
            mean, se = (one_decimal(100 * d[k]) for k in ("mean", "se"))
            assert f"+{mean} ± {se}" in benchmarks.replace("\n  ", " ")


def one_decimal(value: float) -> str:
    """The table's two decimals rounded half up to one, as the prose quotes them (8.85 -> 8.9)."""
    return str(Decimal(f"{value:.2f}").quantize(Decimal("0.1"), ROUND_HALF_UP))
