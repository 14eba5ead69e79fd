"""`gmseg test`, `evaluate`, `plot` and `demo` through the command line, on real and generated data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from conftest import KVASIR5, need
from gmseg.cli import main
from gmseg.first_stage import load_first_stage
from gmseg.models import GMS, GMSConfig


@pytest.fixture
def taesd_model_dir(taesd_dir, tmp_path):
    import torch

    torch.manual_seed(0)
    model = GMS(GMSConfig(), first_stage_module=load_first_stage(taesd_dir))
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_gmseg_test_end_to_end_on_real_kvasir_images(taesd_model_dir, tmp_path, capsys):
    data = need(KVASIR5)
    out = tmp_path / "result"
    assert main(["test", "--model", str(taesd_model_dir), "--data", str(data), "--out", str(out)]) == 0
    assert "dice" in capsys.readouterr().out
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["name"] for r in rows) == sorted(p.stem for p in (data / "images").glob("*.png"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["n_images"] == 5
    assert 0.0 <= summary["metrics"]["dice"]["mean"] <= 1.0
    for image in (data / "images").glob("*.png"):
        prediction = Image.open(out / "predictions" / image.name)
        assert prediction.size == Image.open(image).size  # original resolution
    report = Image.open(out / "report.png")
    assert report.size[0] > 300 and report.size[1] > 300
    assert json.loads((out / "timing.json").read_text())["images"] == 5


def test_gmseg_test_with_a_split_file_and_the_paper_protocol(taesd_model_dir, tmp_path):
    data = need(KVASIR5)
    names = sorted(p.stem for p in (data / "images").glob("*.png"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:3], "test": names[3:]}))
    out = tmp_path / "paper"
    code = main(
        [
            "test",
            "--model",
            str(taesd_model_dir),
            "--data",
            str(data),
            "--split",
            str(split),
            "--size",
            "224",
            "--empty",
            "paper",
            "--tta",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["n_images"] == 2 and summary["settings"]["empty"] == "paper"
    assert json.loads((out / "timing.json").read_text())["tta"] is True


def test_evaluate_cli_names_missing_predictions(tmp_path, capsys):
    gt = tmp_path / "gt"
    pred = tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:10, 4:10] = 255
    for name in ("a", "b"):
        Image.fromarray(mask).save(gt / f"{name}.png")
    Image.fromarray(mask).save(pred / "a.png")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "test": ["a", "b"]}))
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--split", str(split)]) == 2
    assert "b.png" in capsys.readouterr().err
    # Without a split, every ground-truth mask needs a prediction too (issue #41), unless --missing says.
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt)]) == 2
    assert "b.png" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--missing", "skip"]) == 0
    assert json.loads((pred / "summary.json").read_text())["metrics"]["dice"]["mean"] == 1.0


def test_demo_quick_runs_end_to_end_and_plots(taesd_dir, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--vae", str(taesd_dir), "--out", str(out), "--quick"]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert 0.0 <= summary["test_dice"] <= 1.0 and summary["n_test"] == 8
    assert (out / "test" / "report.png").is_file()
    run_dir = next((out / "runs").iterdir())
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "curves.png")]) == 0
    assert Image.open(tmp_path / "curves.png").size[0] > 300


def test_demo_without_a_reachable_first_stage_says_what_to_pass(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "--vae" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "data").exists()  # failed before writing anything


def test_prepare_folders_cli(tmp_path, capsys):
    images, masks = tmp_path / "imgs", tmp_path / "msks"
    images.mkdir(), masks.mkdir()
    rng = np.random.default_rng(0)
    for index in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / f"IMD00{index}.jpg")
        mask = np.zeros((20, 24), np.uint8)
        mask[5:12, 6:15] = 255
        Image.fromarray(mask).save(masks / f"IMD00{index}_lesion.bmp")
    out = tmp_path / "prepared"
    assert (
        main(
            [
                "prepare",
                "folders",
                "--images",
                str(images),
                "--masks",
                str(masks),
                "--mask-suffix",
                "_lesion",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["test"]) == [f"IMD00{i}" for i in range(5)]
    assert len(list((out / "masks").glob("*.png"))) == 5
    assert main(["prepare", "busi", "--out", str(out)]) == 2
    assert "--raw" in capsys.readouterr().err


@pytest.mark.slow
def test_full_demo_reaches_its_dice_bar(taesd_dir, tmp_path, capsys):
    """The README's main job, as a user runs it (minutes; marked slow, run by default and in CI)."""
    out = tmp_path / "demo"
    assert main(["demo", "--vae", str(taesd_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["test_dice"] > 0.85 and summary["n_test"] == 40 and not summary["stopped_by_budget"]
    printed = capsys.readouterr().out
    for line in ("[1/5", "[2/5", "[3/5", "[4/5", "[5/5", "report", "metrics", "curves"):
        assert line in printed
