"""Volumes end to end: train on an MSD task folder slice by slice, record the normalisation, predict and test
in 3D (one row per case, nnU-Net's fields), evaluate two folders of volumes; and a real run on a few
hippocampus cases of ../shared."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED, write_msd_task
from gmseg.cli import main
from gmseg.config import config_from_dict
from gmseg.data.layouts import open_layout
from gmseg.data.normalization import VolumeInput
from gmseg.data.volume_dataset import VolumeSliceDataset
from gmseg.evaluate import run_evaluate
from gmseg.models import load_model
from gmseg.testing import run_test
from gmseg.training import train

HIPPOCAMPUS = SHARED / "data" / "msd-hippocampus"
LABELS = {"0": "background", "1": "anterior", "2": "posterior"}


def write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.5)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)  # x, y, z: z (array axis 0) is the thick one
    sitk.WriteImage(image, str(path))


def make_msd(root: Path, n: int = 6, modality: str = "MRI") -> Path:
    """An MSD task: (8, 24, 20) volumes, two box-shaped structures on the middle slices, intensities of
    another scale in each case (z-scored per volume), and some slices without any foreground."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        label = np.zeros((8, 24, 20), np.uint8)
        label[2:6, 4:10, 3:9] = 1
        label[2:6, 13:20, 10:17] = 2
        image = (label * 40.0 + rng.normal(0, 8, label.shape)) * (1 + i) + 100 * i
        cases.append((image.astype(np.float32), label))
    return write_msd_task(root, cases, write, LABELS, name="Toy", modality=modality)


def unet_config(root: Path, out: Path, epochs: int = 3, **data) -> dict:
    return {
        "name": "vol",
        "data": {"root": str(root), "image_size": 32, "val_fraction": 0.25, "augmentations": [], **data},
        "model": {"name": "unet", "channels": [8, 16, 32]},
        "train": {"epochs": epochs, "batch_size": 4, "lr": 1e-2, "warmup_epochs": 0, "seed": 3, "output_dir": str(out)},
    }


@pytest.fixture(scope="module")
def msd(tmp_path_factory) -> Path:
    return make_msd(tmp_path_factory.mktemp("toy") / "Task99_Toy")


@pytest.fixture(scope="module")
def run(msd, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return train(config_from_dict(unet_config(msd, out)), run_dir=out / "unet", progress=False)


def test_training_on_an_msd_folder_splits_by_case_and_records_the_normalisation(run, msd):
    split = json.loads((run / "split.json").read_text())
    cases = {c.name for c in open_layout(msd).cases()}
    groups = [set(split.get(k, [])) for k in ("train", "val", "test")]
    assert set().union(*groups) <= cases and all(g for g in groups)
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    config = json.loads((run / "checkpoints" / "best" / "config.json").read_text())
    assert config["volume"]["scheme"] == "zscore" and config["volume"]["modality"] == "MRI"
    assert load_model(run / "checkpoints" / "best").volume_input == VolumeInput(scheme="zscore", modality="MRI")
    with (run / "val_best.csv").open() as handle:  # validation scored per slice, named CASE_sNNN
        names = [row["name"] for row in csv.DictReader(handle)]
    assert names and all(n.rsplit("_s", 1)[0] in split["val"] for n in names)


def test_slices_with_a_controlled_empty_share(msd):
    layout = open_layout(msd)
    names = [c.name for c in layout.cases()][:2]
    none = VolumeSliceDataset(layout, names, VolumeInput(), empty_fraction=0.0)
    assert len(none) == 8  # 4 foreground slices (z 2..5) per case along the thick axis z
    third = VolumeSliceDataset(layout, names, VolumeInput(), empty_fraction=1 / 3)
    assert len(third) == 12 and sum(not r.foreground for r in third.slices) == 4
    item = third[0]
    assert item["image"].shape == (3, 24, 20) and float(item["image"].min()) >= 0.0
    assert set(np.unique(item["mask"].numpy())) <= {0.0, 1.0, 2.0}  # class indices of the 3 classes
    along_x = VolumeSliceDataset(layout, names, VolumeInput(slice_axis=2), empty_fraction=0.0)
    assert along_x[0]["image"].shape == (3, 8, 24)  # the override: (z, y) slices


def test_test_and_evaluate_give_one_row_per_case_in_3d(run, msd, tmp_path):
    result = run_test(run / "checkpoints" / "best", msd, tmp_path / "test", split=run / "split.json", progress=False)
    split = json.loads((run / "split.json").read_text())
    with (tmp_path / "test" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["name"] for r in rows) == sorted(split["test"])
    assert {"dice_anterior", "hd95_posterior", "mean_dice", "mean_hd95"} <= set(rows[0])
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"} and "Dice" in summary["foreground_mean"]
    assert len(summary["metric_per_case"]) == len(split["test"])
    assert (tmp_path / "test" / "report.png").stat().st_size > 0
    predicted = sitk.ReadImage(str(tmp_path / "test" / "predictions" / f"{split['test'][0]}.nii.gz"))
    assert predicted.GetSpacing() == pytest.approx((1.0, 1.0, 2.5))
    assert result.summary["metrics"]["dice_anterior"]["n"] == len(split["test"])
    # The same predictions scored by `gmseg evaluate` against the task folder: the same rows.
    code = main(
        ["evaluate", "--pred", str(tmp_path / "test" / "predictions"), "--gt", str(msd), "--out", str(tmp_path / "ev")]
    )
    assert code == 0
    again = run_evaluate(tmp_path / "test" / "predictions", msd / "labelsTr", out_dir=tmp_path / "ev2")
    assert [r["dice_anterior"] for r in again.rows] == pytest.approx([float(r["dice_anterior"]) for r in rows])


def test_cached_latent_trainer_works_on_slices(msd, tiny_vae_dir, tmp_path):
    config = {
        "name": "gms-vol",
        "trainer": {"name": "cached_latents", "latent_epochs": 1, "latent_views": 2},
        "data": {"root": str(msd), "image_size": 32, "val_fraction": 0.25, "augmentations": ["hflip"]},
        "model": {"vae": str(tiny_vae_dir), "ch": 16, "ch_mult": [1, 2, 2]},
        "train": {"epochs": 2, "batch_size": 8, "lr": 5e-3, "warmup_epochs": 0, "seed": 1, "output_dir": str(tmp_path)},
    }
    run_dir = train(config_from_dict(config), run_dir=tmp_path / "gms", progress=False)
    model = load_model(run_dir / "checkpoints" / "best")
    assert model.volume_input.scheme == "zscore" and model.labels.num_classes == 3
    with (run_dir / "train_log.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2


@pytest.mark.slow
def test_real_hippocampus_cases_train_predict_evaluate(tmp_path):
    """Six real MSD Task04 cases (../shared): train the U-Net a few epochs on slices, test on held-out
    cases in 3D. A few epochs learn little; what is checked is that the whole path runs on real files
    (float32 and uint8 images, real geometry) and the numbers are real per-case 3D scores."""
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"{HIPPOCAMPUS} is absent: this test needs the project's ../shared folder")
    meta = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    root = tmp_path / "Task04_Hippocampus"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    chosen = meta["training"][:6]
    for entry in chosen:
        for key in ("image", "label"):
            shutil.copy(HIPPOCAMPUS / entry[key], root / entry[key])
    (root / "dataset.json").write_text(json.dumps({**meta, "training": chosen, "test": [], "numTraining": 6}))
    names = sorted(Path(e["image"]).name.removesuffix(".nii.gz") for e in chosen)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": names[:4], "val": names[4:5], "test": names[5:]}))
    config = unet_config(root, tmp_path, epochs=2, split=str(split))
    run_dir = train(config_from_dict(config), run_dir=tmp_path / "run", progress=False)
    out = tmp_path / "test"
    result = run_test(run_dir / "checkpoints" / "best", root, out, split=split, progress=False)
    assert [r["name"] for r in result.rows] == names[5:]
    row = result.rows[0]
    assert 0.0 <= row["dice_Anterior"] <= 1.0 and 0.0 <= row["dice_Posterior"] <= 1.0
    label = sitk.ReadImage(str(root / "labelsTr" / f"{names[5]}.nii.gz"))
    predicted = sitk.ReadImage(str(out / "predictions" / f"{names[5]}.nii.gz"))
    assert predicted.GetSize() == label.GetSize() and predicted.GetSpacing() == label.GetSpacing()
    assert predicted.GetOrigin() == label.GetOrigin() and predicted.GetDirection() == label.GetDirection()


def test_generalize_scores_a_volume_dataset_per_case(run, msd, tmp_path):
    from gmseg.generalize import run_generalize

    result = run_generalize(run / "checkpoints" / "best", [("toy", msd)], tmp_path / "gen", progress=False)
    (row,) = result.rows
    assert row["stage"] == "all" and row["n_images"] == 6  # no split file: every case, one row each
    with (tmp_path / "gen" / "toy" / "all" / "metrics.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_generalize_plans_a_volume_dataset_from_one_opening(msd, monkeypatch):
    import gmseg.data.volume_dataset as volume_dataset
    from gmseg.generalize import plan_jobs

    opened = []
    original = volume_dataset.open_volume_layout

    def counting(folder):
        opened.append(folder)
        return original(folder)

    monkeypatch.setattr(volume_dataset, "open_volume_layout", counting)
    jobs = plan_jobs([("toy", msd)], ["test", "all"], None)
    assert [job.stage for job in jobs] == ["all"] and opened == [msd]  # dataset.json read once, not per stage
