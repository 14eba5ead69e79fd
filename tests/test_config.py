"""Configuration: typos and bad values fail at once with the valid names and ranges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gmseg.cli import main
from gmseg.config import LEGACY_TRAIN_KEYS, Config, config_from_dict, load_config
from gmseg.errors import ConfigError
from gmseg.models import build_model, model_options, with_model_options
from gmseg.training import TRAINERS, trainer_options

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "gmseg" / "configs"
BENCH_CONFIGS = Path(__file__).resolve().parents[1] / "bench" / "configs"


def test_defaults_are_the_paper_protocol():
    config = config_from_dict({})
    assert (config.train.lr, config.train.batch_size, config.train.epochs, config.train.warmup_epochs) == (
        2e-3,
        8,
        1000,
        5,
    )
    model = model_options(config)
    assert config.data.image_size == 224 and model.ch_mult == [1, 2, 4, 4]
    assert model.supervised_levels == ["level2", "level1", "out"]


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"train\.epoch\b.*valid keys: epochs"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="Unknown key.*optimiser"):
        config_from_dict({"optimiser": {}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"epochs": "many"}}, "train.epochs must be int"),
        ({"train": {"lr": -1}}, "train.lr must be in"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"mixed_precision": "fp8"}}, "mixed_precision"),
        ({"data": {"image_size": 100}}, "multiple of 8"),
        ({"data": {"protocol": "cheat"}}, "data.protocol"),
        ({"data": {"augmentations": ["hflip", "mixup"]}}, "mixup"),
        ({"train": {"warmup_epochs": 10, "epochs": 5}}, "warmup_epochs"),
        ({"loss": {"rec_weight": 0, "dice_weight": 0}}, "at least one loss weight"),
        ({"train": {"shuffle": True}}, "train.shuffle"),
        ({"trainer": {"name": 3}}, "trainer.name must be a string"),
        ({"trainer": ["cached_latents"]}, "trainer must be a mapping"),
        ({"model": {"name": 3}}, "model.name must be a string"),
        ({"model": "gms"}, "model must be a mapping"),
    ],
)
def test_bad_values_are_rejected(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(data)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trainer": {"name": "cached_latents", "full_loss_lr_scale": 0}}, "trainer.full_loss_lr_scale must be in"),
        ({"trainer": {"name": "cached_latents", "latent_epochs": 2000}}, "trainer.latent_epochs must be in"),
        ({"trainer": {"name": "cached_latents", "latent_views": "two"}}, "trainer.latent_views must be int"),
        ({"trainer": {"name": "fast"}}, "trainer.name 'fast' is unknown"),
        ({"trainer": {"latent_epochs": 3}}, "trainer.latent_epochs"),  # not an option of the default trainer
    ],
)
def test_bad_trainer_options_are_rejected_where_the_trainer_is_made(data, message, tmp_path):
    """The trainer variants own their options' schema (training depends on config, not the reverse): the
    config keeps the section as given, and the trainer refuses it before anything is written."""
    from gmseg.training import make_trainer, train, trainer_options

    config = config_from_dict({**data, "train": {"output_dir": str(tmp_path / "runs")}})
    for entry in (trainer_options, make_trainer, train):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            entry(config)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"ch_mult": "1,2"}}, "model.ch_mult must be a list"),
        ({"model": {"name": "unet", "channels": [8]}}, "model.channels must be at least two"),
        ({"model": {"name": "sam"}}, "model.name 'sam' is unknown; choose one of gms, unet"),
        ({"model": {"chanels": [8, 16]}}, r"model.chanels; valid keys: "),
    ],
)
def test_bad_model_options_are_rejected_where_the_model_is_made(data, message, tmp_path):
    """The models own their options' schema (models depend on config, not the reverse): the config keeps
    the section as given, and the model, or `gmseg train` before anything is written, refuses it."""
    from gmseg.training import train

    config = config_from_dict({**data, "train": {"output_dir": str(tmp_path / "runs")}})
    for entry in (model_options, build_model, train):
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            entry(config)
    assert not (tmp_path / "runs").exists()


def test_reading_a_config_does_not_import_the_models():
    """Settings know no model class: a config (any model's options) is read without importing gmseg.models."""
    import subprocess
    import sys

    code = (
        "import sys; from gmseg.config import config_from_dict; "
        "config_from_dict({'model': {'name': 'unet', 'channels': [8, 16]}}); "
        "print('gmseg.models' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_overrides_are_yaml_typed():
    config = config_from_dict(
        {}, ["train.epochs=7", "train.lr=1e-3", "data.augmentations=[hflip]", "model.vae_config=null"]
    )
    assert config.train.epochs == 7 and config.train.lr == 1e-3 and config.data.augmentations == ["hflip"]
    with pytest.raises(ConfigError, match="section.key=value"):
        config_from_dict({}, ["train.epochs"])


def test_saved_config_round_trips(tmp_path):
    config = config_from_dict({"name": "x", "train": {"epochs": 3, "warmup_epochs": 1}})
    config.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_shipped_configs_are_valid():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"bus.yaml", "busi.yaml", "glas.yaml", "ham10000.yaml", "kvasir-instrument.yaml", "cpu-taesd.yaml"} <= set(
        names
    )
    for path in [*CONFIGS.glob("*.yaml"), *BENCH_CONFIGS.glob("*.yaml")]:
        assert isinstance(load_config(path), Config), path
    # Written in the current layout: the CPU schedules name their trainer variant, every config its model.
    for path in CONFIGS.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        assert raw["model"]["name"] == "gms" and not set(raw["train"]) & set(LEGACY_TRAIN_KEYS), path
    assert trainer_options(load_config("cpu-taesd")).name == "cached_latents"
    assert trainer_options(load_config(BENCH_CONFIGS / "busi-taesd-cpu.yaml")).latent_views == 2
    for path in [*CONFIGS.glob("*.yaml"), *BENCH_CONFIGS.glob("*.yaml")]:
        trainer_options(load_config(path))  # every shipped trainer section is its variant's
        model_options(load_config(path))  # and every model section its model's


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epocs: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.epocs" in err and "Traceback" not in err


def test_validation_fraction_zero_is_accepted():
    assert config_from_dict({"data": {"val_fraction": 0}}).data.val_fraction == 0.0
    with pytest.raises(ConfigError, match="data.val_fraction"):
        config_from_dict({"data": {"val_fraction": 1.0}})


def test_resume_config_check_names_the_frozen_keys_only():
    from gmseg.config import check_resume_config

    saved = with_model_options(config_from_dict({}))
    unfrozen = with_model_options(config_from_dict({}, ["train.epochs=2000", "data.root=elsewhere"]))
    check_resume_config(saved, unfrozen, "run")
    changed = with_model_options(config_from_dict({}, ["model.ch_mult=[1,2]", "data.split=x.json"]))
    with pytest.raises(
        ConfigError, match=r"data\.split: None -> 'x\.json', model\.ch_mult: \[1, 2, 4, 4\] -> \[1, 2\]:"
    ):
        check_resume_config(saved, changed, "run")


def test_named_sections_select_their_own_options():
    config = config_from_dict({"trainer": {"name": "cached_latents", "latent_epochs": 40}, "train": {"epochs": 44}})
    options = trainer_options(config)
    assert type(options).__qualname__ == "CachedLatentTrainer.Options"
    assert (options.latent_epochs, options.latent_views) == (40, 4)
    # Switching the trainer by name drops the other variant's options.
    switched = config_from_dict(config.to_dict(), ["trainer.name=default"])
    assert trainer_options(switched) == TRAINERS["default"].Options()
    assert (model_options(config).name, model_options(config).ch) == ("gms", 32)
    # Switching the model by name drops the other model's options; the completed config holds only its own.
    unet = with_model_options(config_from_dict({"model": {"vae": "madebyollin/taesd", "ch": 64}}, ["model.name=unet"]))
    assert unet.to_dict()["model"] == {"name": "unet", "channels": [16, 32, 64, 128, 256], "num_res_units": 2}
    # The model is built from a switched section as given, not only from a completed one.
    switched_model = config_from_dict({"model": {"vae": "madebyollin/taesd", "ch": 64}, "data": {"image_size": 64}})
    assert type(build_model(config_from_dict(switched_model.to_dict(), ["model.name=unet"]))).__name__ == "UNet"
    assert config_from_dict(unet.to_dict()).to_dict() == unet.to_dict()


def test_configs_written_before_the_trainer_variants_still_load():
    old = {"train": {"epochs": 44, "latent_epochs": 40, "latent_views": 2, "latent_dihedral": False}}
    options = trainer_options(config_from_dict(old))
    assert options.name == "cached_latents"
    assert (options.latent_epochs, options.latent_views, options.latent_dihedral) == (40, 2, False)
    # The same keys as --set overrides (old scripts), and a schedule without latent epochs: the paper's trainer.
    assert trainer_options(config_from_dict({}, ["train.latent_epochs=3", "train.epochs=10"])).latent_epochs == 3
    assert trainer_options(config_from_dict({"train": {"latent_epochs": 0, "latent_views": 4}})).name == "default"


@pytest.mark.parametrize("override", ["data.slice_axis=1", "data.empty_slice_fraction=0.5"])
def test_resume_refuses_a_changed_volume_slicing(override, tmp_path, capsys):
    """The slicing axis is recorded in the checkpoint's model and the empty-slice share decides which slices
    the epochs draw: a resume changing either would not continue the same run."""
    from gmseg.config import check_resume_config

    saved = config_from_dict({})
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=f"Cannot resume run with a changed {re.escape(key)}: "):
        check_resume_config(saved, config_from_dict({}, [override]), "run")
    run = tmp_path / "run"
    run.mkdir()
    saved.save(run / "config.yaml")
    assert main(["train", "--resume", str(run), "--set", override]) == 2
    err = capsys.readouterr().err
    assert f"changed {key}:" in err and value in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # refused before anything was written
