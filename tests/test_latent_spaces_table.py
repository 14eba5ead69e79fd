"""bench/latent_spaces_table.py: the latent-space study's table and its rule for the one wider mapping."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import latent_spaces_table  # noqa: E402


@pytest.fixture(scope="module")
def table():
    return latent_spaces_table


def fake_part(out: Path, part: str, val_dice: list[float], busi_dice: float = 0.7) -> None:
    """A finished part as bench/latent_spaces.sh leaves it: run log, generalization table, timing."""
    run = out / part / "run"
    run.mkdir(parents=True)
    rows = [f"{i + 1},{v},60.0" for i, v in enumerate(val_dice)]
    (run / "train_log.csv").write_text("epoch,val_dice,seconds\n" + "\n".join(rows) + "\n")
    stat = {"mean": busi_dice, "se": 0.02, "n": 130}
    cells = [
        {"dataset": "busi", "stage": "test", "dice": stat},
        {"dataset": "bus", "stage": "test", "dice": stat},
        {"dataset": "bus", "stage": "all", "dice": stat},
    ]
    scored = out / part / "generalization"
    (scored / "busi" / "test").mkdir(parents=True)
    (scored / "generalization.json").write_text(json.dumps({"rows": cells}))
    (scored / "busi" / "test" / "timing.json").write_text(json.dumps({"seconds_per_image": 0.25}))


def test_the_wider_mapping_goes_to_the_space_that_validates_better(table, tmp_path):
    fake_part(tmp_path, "taesd3", [0.60, 0.71, 0.70], busi_dice=0.9)  # better on test, worse on validation
    with pytest.raises(SystemExit, match="train taef1 first"):
        table.wider_part(tmp_path)
    fake_part(tmp_path, "taef1", [0.65, 0.72], busi_dice=0.5)
    assert table.wider_part(tmp_path) == "taef1-ch64"


def test_the_table_has_a_row_per_finished_part_and_the_unet_for_reference(table, tmp_path):
    fake_part(tmp_path, "taesd", [0.75])
    fake_part(tmp_path, "unet", [0.78, 0.79], busi_dice=0.78)
    (tmp_path / "ceiling" / "taesd").mkdir(parents=True)
    (tmp_path / "ceiling" / "taesd" / "ceiling.json").write_text(
        json.dumps({"latent_channels": 4, "mask_dice": 0.977, "psnr_mean": 25.5})
    )
    rows = table.gather(tmp_path)
    assert [r["part"] for r in rows] == ["taesd", "unet"]  # parts not yet run are left out
    assert rows[0]["channels"] == 4 and rows[0]["mask_ceiling"] == 0.977
    assert rows[1]["autoencoder"] is None and rows[1]["val_best"] == 0.79 and rows[1]["minutes"] == 2.0
    text = table.markdown(rows)
    assert "| taesd | 4 | 32 | 0.9770 | 25.50 | 0.750 | 70.00 ± 2.00 |  | 70.00 ± 2.00 | 70.00 ± 2.00 |  |" in text
    assert "| none (U-Net, reference) |  | U-Net |  |  | 0.790 | 78.00 ± 2.00 |  |" in text


def scored(folder: Path, dice: dict[str, float]) -> None:
    """A scored folder's per-image metrics.csv, as gmseg test writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{name},{value}" for name, value in dice.items()]
    (folder / "metrics.csv").write_text("name,dice\n" + "\n".join(lines) + "\n")


def test_each_first_stage_is_paired_with_taesd_image_by_image(table, tmp_path):
    for part in ("taesd", "taesd3"):
        fake_part(tmp_path, part, [0.7])
    (tmp_path / "taesd3" / "run" / "run_info.json").write_text(json.dumps([{"trainable_parameters": 1600000}]))
    tested = "generalization/busi/test"
    scored(tmp_path / "taesd" / tested, {"a": 0.5, "b": 0.6, "c": 0.7})
    scored(tmp_path / "taesd3" / tested, {"a": 0.6, "b": 0.6, "c": 0.9, "z": 1.0})  # +10, 0, +20; z unpaired
    scored(tmp_path / "taesd" / "generalization/bus/all", {"x": 0.8, "y": 0.8})
    scored(tmp_path / "taesd3" / "generalization/bus/all", {"x": 0.7, "y": 1.0})
    rows = {r["part"]: r for r in table.gather(tmp_path)}
    assert rows["taesd"]["busi_vs_taesd"] is None and rows["taesd3"]["parameters"] == 1600000
    assert rows["taesd3"]["busi_vs_taesd"]["n_images"] == 3 and rows["taesd3"]["busi_vs_taesd"]["better"] == 2
    text = table.markdown(list(rows.values()))
    assert "| 70.00 ± 2.00 | +10.00 ± 5.77 (2 of 3) | 70.00 ± 2.00 | 70.00 ± 2.00 | +5.00 ± 15.00 (1 of 2) |" in text
    assert "(1.60 M)" in text


def test_inference_times_measured_side_by_side_replace_the_scoring_runs_own(table, tmp_path):
    for part in ("taesd", "taesd3"):
        fake_part(tmp_path, part, [0.7])  # their scoring runs took 0.25 s/image
    (tmp_path / "inference.json").write_text(json.dumps({"rows": [{"part": "taesd", "seconds_per_image": 0.31}]}))
    rows = {r["part"]: r for r in table.gather(tmp_path)}
    assert rows["taesd"]["seconds_per_image"] == 0.31 and rows["taesd3"]["seconds_per_image"] is None
    text = table.markdown(list(rows.values()))
    assert text.count("| 1.0 | 0.310 |") == 1 and text.count("| 1.0 |  |") == 1


def test_the_inference_bench_times_each_runs_architecture(tmp_path, tiny_vae_dir):
    import latent_spaces_inference

    for part, ch in (("taesd", 32), ("taesd3-ch64", 64)):
        run = tmp_path / part / "run"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"name: x\nmodel:\n  name: gms\n  vae: {tiny_vae_dir}\n  ch: {ch}\n")
    assert latent_spaces_inference.main(["--out", str(tmp_path), "--images", "1", "--rounds", "1"]) == 0
    rows = json.loads((tmp_path / "inference.json").read_text())["rows"]
    assert [r["part"] for r in rows] == ["taesd", "taesd3-ch64"] and all(r["seconds_per_image"] > 0 for r in rows)


def test_a_run_scored_before_its_schedule_ended_says_so(table, tmp_path):
    fake_part(tmp_path, "taesd", [0.70, 0.72, 0.75])
    fake_part(tmp_path, "taef1", [0.70, 0.71])
    for part, epochs in (("taesd", 3), ("taef1", 3)):
        (tmp_path / part / "run" / "config.yaml").write_text(f"train:\n  epochs: {epochs}\n")
    text = table.markdown(table.gather(tmp_path))
    assert "| 0.750 | 70.00" in text and "| 0.710 (2 of 3 epochs) | 70.00" in text
