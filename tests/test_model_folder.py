"""One model-folder format, written and read by the base class: a model says only what differs (its config,
its extra files, which module holds its weights), and loading dispatches on the stored class."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import offline_hub_snapshot, tiny_gms_config
from gmseg import models
from gmseg.errors import CheckpointError, ConfigError
from gmseg.first_stage import load_first_stage
from gmseg.models import GMS, MODELS, ExportedModel, SegmentationModel, UNet, load_model
from gmseg.models.exported import ExportConfig, file_sha256
from gmseg.models.unet import unet_arguments


class Scaler(SegmentationModel):
    """A model declared only through the hooks: a frozen offset (in its config) and a trained scale."""

    name = "scaler"

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.offset = offset
        self.scale = nn.Linear(1, 1, bias=False)

    @property
    def trainable(self) -> nn.Module:
        return self.scale

    @property
    def image_size(self) -> int:
        return 8

    @property
    def threshold(self) -> float:
        return 0.5

    def predict_proba(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scale.weight[0, 0] * image.mean(1, keepdim=True) + self.offset)

    @staticmethod
    def config_problems(config: dict[str, Any]) -> list[str]:
        return (
            []
            if isinstance(config.get("offset"), float)
            else [f"offset must be a number, got {config.get('offset')!r}"]
        )

    def to_config(self) -> dict[str, Any]:
        return {"offset": self.offset}

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: Path, **not_needed: Any) -> Scaler:
        return cls(config["offset"])


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(models.BY_CLASS_NAME, "Scaler", Scaler)


def test_a_model_declared_by_its_hooks_round_trips_through_its_folder(registered, tmp_path):
    model = Scaler(offset=0.25)
    with torch.no_grad():
        model.scale.weight.fill_(3.0)
    model.save_pretrained(tmp_path / "m")
    stored = json.loads((tmp_path / "m" / "config.json").read_text())
    assert stored["_class_name"] == "Scaler" and stored["offset"] == 0.25 and "gmseg_version" in stored
    assert set(load_file(str(tmp_path / "m" / "model.safetensors"))) == {"weight"}  # the trainable part only
    assert "library_name: gmseg" in (tmp_path / "m" / "README.md").read_text()  # the Hub model card
    image = torch.rand(1, 3, 8, 8)
    for loaded in (load_model(tmp_path / "m"), Scaler.from_pretrained(tmp_path / "m")):
        assert isinstance(loaded, Scaler) and not loaded.training
        assert torch.equal(loaded.predict_proba(image), model.predict_proba(image))
    (tmp_path / "m" / "config.json").write_text(json.dumps({**stored, "offset": "high"}))
    with pytest.raises(ConfigError, match=r"config\.json: offset must be a number, got 'high'"):
        Scaler.from_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="leave config out"):
        model.save_pretrained(tmp_path / "n", config={"offset": 1.0})


def test_registered_models_leave_saving_and_loading_to_the_base_class():
    for cls in (*MODELS.values(), ExportedModel):
        for method in ("save_pretrained", "from_pretrained", "_save_pretrained"):
            assert getattr(cls, method).__qualname__.startswith("SegmentationModel."), (cls, method)
        for hook in ("to_config", "from_config"):
            assert getattr(cls, hook) is not getattr(SegmentationModel, hook), (cls, hook)


def test_a_folder_of_another_class_is_named_not_misread(tmp_path):
    torch.manual_seed(0)
    UNet(unet_arguments([8, 16], 32)).save_pretrained(tmp_path / "unet")
    with pytest.raises(CheckpointError, match=r"describes a UNet model, not a GMS; load it with .*load_model"):
        GMS.from_pretrained(tmp_path / "unet")


def test_a_gms_on_the_hub_with_its_first_stage_inside_loads_by_id(tiny_vae_dir, tmp_path, monkeypatch):
    """The whole snapshot is fetched, so the folder-relative first stage is found beside config.json."""
    torch.manual_seed(0)
    model = GMS(tiny_gms_config(), first_stage_module=load_first_stage(tiny_vae_dir))
    snapshot = offline_hub_snapshot(tmp_path, monkeypatch, "someone/gms-tiny")
    model.save_pretrained(snapshot, include_first_stage=True)
    loaded = load_model("someone/gms-tiny")
    assert isinstance(loaded, GMS) and loaded.gms_config.first_stage["path"] == "first_stage"
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.predict_proba(image), model.predict_proba(image))


def test_a_unet_folder_takes_no_first_stage_and_loads_anyway(tiny_vae_dir, tmp_path):
    torch.manual_seed(0)
    UNet(unet_arguments([8, 16], 32)).save_pretrained(tmp_path / "unet")
    assert isinstance(load_model(tmp_path / "unet", first_stage=load_first_stage(tiny_vae_dir)), UNet)


@dataclass
class FakeGraph:
    folder: Path
    config: ExportConfig


def fake_export(folder: Path) -> FakeGraph:
    """An exported folder as gmseg export lays it out (the graph bytes are not run here, only hashed)."""
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"a graph")
    config = ExportConfig(format="onnx", exported_from="UNet", image_size=32)
    config.sha256 = {"model.onnx": file_sha256(folder / "model.onnx")}
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return FakeGraph(folder, config)


def test_an_exported_folder_saves_again_with_its_graph(tmp_path):
    source = fake_export(tmp_path / "exported")
    model = load_model(source.folder, first_stage=object())  # a first stage does not concern a graph
    assert isinstance(model, ExportedModel)
    model.save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["README.md", "config.json", "model.onnx"]
    again = load_model(tmp_path / "copy")
    assert again.export_config == source.config and again.graph_file == tmp_path / "copy" / "model.onnx"
    (tmp_path / "copy" / "model.onnx").write_bytes(b"another graph")
    with pytest.raises(CheckpointError, match="another export"):
        ExportedModel.from_pretrained(tmp_path / "copy")
