"""The packaged configs: found by name from any folder, a user's file used as is, typos list the names."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import SHARED, need
from gmseg.config import Config, load_config
from gmseg.configs import CONFIG_DIR, config_path, packaged_configs
from gmseg.errors import ConfigError
from gmseg.models import build_model, with_model_options
from gmseg.training import trainer_options

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "src" / "gmseg" / "configs"
DATASETS = ("bus", "busi", "glas", "ham10000", "kvasir-instrument")


def test_the_configs_live_in_the_package() -> None:
    assert CONFIG_DIR == REPO_CONFIGS.resolve()
    assert set(DATASETS) | {"cpu-taesd", "cpu-taesd3"} <= set(packaged_configs())
    assert not (REPO_CONFIGS.parents[2] / "configs").exists()  # no second copy at the repository root


@pytest.mark.parametrize("name", ["busi", "busi.yaml", "cpu-taesd"])
def test_bare_names_resolve_to_the_packaged_file(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # from any folder
    path = config_path(name)
    assert path == CONFIG_DIR / f"{name.removesuffix('.yaml')}.yaml" and path.is_file()
    assert isinstance(load_config(path), Config)


def test_an_existing_file_is_returned_as_is(tmp_path: Path, monkeypatch) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\n")
    assert config_path(own) == own and config_path(str(own)) == own
    monkeypatch.chdir(tmp_path)
    (tmp_path / "busi.yaml").write_text("name: local\n")  # a file in the working folder wins over the package
    assert config_path("busi.yaml") == Path("busi.yaml")
    (tmp_path / "busi").mkdir()  # a folder of that name is not a config: the packaged one is meant
    assert config_path("busi") == CONFIG_DIR / "busi.yaml"


@pytest.mark.parametrize("name", ["bussi", "configs/nope.yaml", "/no/such/config.yaml", ""])
def test_anything_else_lists_the_packaged_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_path(name)
    message = str(info.value)
    assert repr(name) in message and all(n in message for n in DATASETS)


def with_trainer_options(config: Config) -> dict:
    """The config as a dict, its model and trainer sections completed with their defaults (as a run records it)."""
    return {**with_model_options(config).to_dict(), "trainer": asdict(trainer_options(config))}


def test_the_shipped_taesd3_config_is_the_setting_the_latent_space_study_measured() -> None:
    """cpu-taesd3 ships because its first stage validated best on BUSI (BENCHMARKS.md, "Latent spaces"): the
    config must be that run's setting, not a neighbour of it, or the recommendation would not hold."""
    measured = Path(__file__).resolve().parents[1] / "bench/results/latent_spaces/taesd3/run/config.yaml"
    shipped, run = (with_trainer_options(load_config(c)) for c in ("cpu-taesd3", measured))
    assert shipped["model"]["vae"] == "madebyollin/taesd3" and Path(run["model"]["vae"]).name == "taesd3"
    for section in ("model", "loss", "train", "trainer"):
        differing = {k for k in run[section] if shipped[section][k] != run[section][k]}
        assert differing <= {"vae", "output_dir"}, (section, differing)
    for key in ("val_fraction", "image_size", "augmentations", "protocol", "intensity"):
        assert shipped["data"][key] == run["data"][key], key


def test_the_taesd3_config_builds_a_16_channel_mapping_on_the_local_weights() -> None:
    weights = need(SHARED / "weights" / "taesd3")
    model = build_model(load_config("cpu-taesd3", [f"model.vae={weights}"]))
    assert model.first_stage.latent_channels == 16
    assert model.gms_config.mapping["in_channels"] == model.gms_config.mapping["out_channels"] == 16
