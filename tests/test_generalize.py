"""`gmseg generalize`: one model (GMS or the U-Net baseline) over several datasets, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gmseg.cli import main
from gmseg.config import config_from_dict
from gmseg.errors import ConfigError
from gmseg.generalize import parse_dataset_arg, run_generalize
from gmseg.models import load_model
from gmseg.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, Path]:
    """Two small datasets with their own splits; the second is drawn from another seed."""
    one = make_synthetic_dataset(tmp_path_factory.mktemp("one"), n_train=8, n_test=2, size=32, seed=3)
    two = make_synthetic_dataset(tmp_path_factory.mktemp("two"), n_train=3, n_test=2, size=32, seed=9)
    return one, two


def tiny_config(data: Path, out: Path, vae: Path | None = None) -> dict:
    config = {
        "name": "tiny",
        "data": {"root": str(data), "image_size": 32, "val_fraction": 0.25},
        "train": {"epochs": 1, "batch_size": 4, "lr": 5e-3, "warmup_epochs": 0, "seed": 5, "output_dir": str(out)},
    }
    if vae is not None:
        config["model"] = {"vae": str(vae), "ch": 16, "ch_mult": [1, 2, 2]}
    return config


@pytest.fixture(scope="module")
def unet_run(domains, tmp_path_factory) -> Path:
    from gmseg.training import train

    out = tmp_path_factory.mktemp("unet")
    config = config_from_dict(tiny_config(domains[0], out), ["model.name=unet", "model.channels=[8,16]"])
    return train(config, run_dir=out / "run", progress=False)


@pytest.fixture(scope="module")
def gms_run(domains, tiny_vae_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gms")
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(domains[0], out, tiny_vae_dir)))
    assert main(["train", "--config", str(config_path), "--run-dir", str(out / "run"), "--no-progress"]) == 0
    return out / "run"


def test_unet_run_folder_loads_and_predicts_through_gmseg_predict(unet_run, domains, tmp_path):
    model = load_model(unet_run)
    assert model.image_size == 32 and model.threshold == 0.5
    out = tmp_path / "masks"
    assert main(["predict", "--model", str(unet_run), "--input", str(domains[1] / "images"), "--output", str(out)]) == 0
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(p.stem for p in (domains[1] / "images").glob("*.png"))


@pytest.mark.parametrize("which", ["gms", "unet"])
def test_generalize_writes_one_table_over_datasets(which, gms_run, unet_run, domains, tmp_path, capsys):
    model = str(gms_run / "checkpoints" / "best") if which == "gms" else str(unet_run)
    out = tmp_path / "gen"
    code = main(
        [
            "generalize",
            "--model",
            model,
            "--data",
            f"one={domains[0]}",
            "--in-domain",
            "one",
            "--data",
            f"two={domains[1]}",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = json.loads((out / "generalization.json").read_text())
    rows = {(r["dataset"], r["stage"]): r for r in table["rows"]}
    # In-domain: the test split only (its other images trained the model); cross-domain: test and all.
    assert sorted(rows) == [("one", "test"), ("two", "all"), ("two", "test")]
    assert rows[("one", "test")]["domain"] == "in" and rows[("two", "all")]["domain"] == "cross"
    assert rows[("one", "test")]["n_images"] == 2 and rows[("two", "all")]["n_images"] == 5
    for row in rows.values():
        assert 0.0 <= row["dice"]["mean"] <= 1.0 and row["dice"]["se"] >= 0.0
    for dataset, stage in rows:
        assert (out / dataset / stage / "report.png").is_file()
        assert (out / dataset / stage / "metrics.csv").is_file()
    tested = json.loads((out / "one" / "test" / "tested_names.json").read_text())["test"]
    assert tested == json.loads((domains[0] / "split.json").read_text())["test"]
    markdown = (out / "generalization.md").read_text()
    assert "| two | cross | all | 5 |" in markdown and "±" in markdown
    assert "generalization.md" in capsys.readouterr().out


def test_no_test_name_ever_enters_training_or_validation(gms_run, unet_run, domains):
    test_names = set(json.loads((domains[0] / "split.json").read_text())["test"])
    for run in (gms_run, unet_run):
        split = json.loads((run / "split.json").read_text())
        assert split["val"] and split["train"]
        assert not (set(split["train"]) | set(split["val"])) & test_names
        assert set(split["test"]) == test_names


def test_unknown_stage_and_bad_arguments_are_errors(unet_run, domains, tmp_path, capsys):
    assert (
        main(
            [
                "test",
                "--model",
                str(unet_run),
                "--data",
                str(domains[0]),
                "--stage",
                "tset",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no stage 'tset'" in err and "'test'" in err and "'all'" in err
    assert not (tmp_path / "t").exists()
    with pytest.raises(ConfigError, match="not one of the datasets"):
        run_generalize(unet_run, [("one", domains[0])], tmp_path / "g", in_domain="busi")
    with pytest.raises(ConfigError, match="must differ"):
        run_generalize(unet_run, [("one", domains[0]), ("one", domains[1])], tmp_path / "g")
    with pytest.raises(ConfigError, match="NAME=FOLDER"):
        parse_dataset_arg("bad name=x")
    assert parse_dataset_arg("data/bus") == ("bus", Path("data/bus"))


def test_run_dir_refuses_an_existing_run(gms_run, capsys):
    config = gms_run / "config.yaml"
    assert main(["train", "--config", str(config), "--run-dir", str(gms_run), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
