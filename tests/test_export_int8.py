"""gmseg export --precision int8: ONNX Runtime and NNCF post-training quantisation calibrated on training images
prepared as prediction prepares them; the folder runs through ``gmseg predict`` within the stated loose bound
of torch, records its calibration set, and is refused in one line without calibration images or without nncf."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gmseg.calibration import calibration_set
from gmseg.cli import main
from gmseg.errors import ConfigError, GmsegError
from gmseg.export import INT8_MEAN_TOLERANCE, export_model
from gmseg.inference import InferenceSpec
from gmseg.models import load_model
from gmseg.synthetic import make_synthetic_dataset

pytest.importorskip("onnxruntime", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")
pytest.importorskip("openvino", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")
pytest.importorskip("nncf", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")

SIZE = 32
TRAIN, TEST = 6, 2


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=TRAIN, n_test=TEST, size=SIZE, seed=5)


@pytest.fixture(scope="module")
def int8(model_dir, data, tmp_path_factory) -> dict[str, Path]:
    """format -> the tiny GMS (conftest's ``model_dir``) exported int8, calibrated on 4 of the training images."""
    root = tmp_path_factory.mktemp("int8")
    return {
        fmt: export_model(model_dir, root / fmt, fmt, precision="int8", calibration=data, calibration_size=4).folder
        for fmt in ("onnx", "openvino")
    }


def graph_ops(folder: Path, fmt: str) -> set[str]:
    """The operation types of an exported graph: int8 shows as (De)QuantizeLinear in ONNX, FakeQuantize in IR."""
    if fmt == "onnx":
        import onnx

        return {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    import openvino

    return {op.get_type_name() for op in openvino.Core().read_model(str(folder / "model.xml")).get_ops()}


# ------------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize(("fmt", "quantizer_op"), [("onnx", "QuantizeLinear"), ("openvino", "FakeQuantize")])
def test_an_int8_folder_predicts_within_the_loose_bound_of_torch(int8, model_dir, data, tmp_path, fmt, quantizer_op):
    """The stated bound: mean |dprob| per image <= INT8_MEAN_TOLERANCE (0.1) on the test images, every
    probability finite and in [0, 1]; and the graph is really int8 (its probabilities are not fp32's)."""
    assert quantizer_op in graph_ops(int8[fmt], fmt)
    inputs = [str(data / "images" / f"case_{i:03d}.png") for i in range(TRAIN, TRAIN + TEST)]  # not calibrated on
    for name, model in (("torch", model_dir), ("int8", int8[fmt])):
        argv = ["predict", "--model", str(model), "--input", *inputs, "--output", str(tmp_path / name), "--save-prob"]
        assert main(argv) == 0
    files = sorted((tmp_path / "torch").glob("*.prob.npy"))
    assert len(files) == TEST
    for file in files:
        expected, actual = np.load(file), np.load(tmp_path / "int8" / file.name)
        assert np.isfinite(actual).all() and 0.0 <= actual.min() and actual.max() <= 1.0
        change = np.abs(actual - expected)
        assert change.mean() <= INT8_MEAN_TOLERANCE, file.name
        assert change.max() > 1e-4, "probabilities equal to fp32's: the graph was not quantised"
        assert (tmp_path / "int8" / file.name.replace(".prob.npy", ".png")).is_file()


def test_an_int8_onnx_graph_runs_on_openvino_too(int8, model_dir):
    from gmseg.inference import make_predictor

    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    model = load_model(int8["onnx"])
    on_ort = make_predictor(model, "cpu")(images)
    on_openvino = make_predictor(model, "cpu", backend="openvino")(images)
    assert (on_ort - on_openvino).abs().mean() <= INT8_MEAN_TOLERANCE


def test_config_records_the_precision_and_the_calibration_set(int8, data):
    split = json.loads((data / "split.json").read_text())
    for fmt, folder in int8.items():
        config = json.loads((folder / "config.json").read_text())
        assert config["precision"] == "int8", fmt
        calibration = config["calibration"]
        assert calibration["source"] == str(data) and calibration["stage"] == "train"
        assert calibration["seed"] == 0 and calibration["count"] == 4 == len(calibration["names"])
        assert set(calibration["names"]) < set(split["train"]), "a sample of the training split only"
    assert (
        json.loads((int8["onnx"] / "config.json").read_text())["calibration"]["names"]
        == json.loads((int8["openvino"] / "config.json").read_text())["calibration"]["names"]
    ), "the same seed draws the same sample"


def test_an_fp32_export_records_fp32_and_no_calibration(model_dir, tmp_path):
    config = json.loads((export_model(model_dir, tmp_path / "fp32", "onnx").folder / "config.json").read_text())
    assert config["precision"] == "fp32" and config["calibration"] is None


def test_an_unknown_precision_in_config_json_is_refused(int8, tmp_path):
    import shutil

    folder = Path(shutil.copytree(int8["onnx"], tmp_path / "int4"))
    config = json.loads((folder / "config.json").read_text())
    config["precision"] = "int4"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="precision must be fp32 or int8"):
        load_model(folder)


# ------------------------------------------------------------------------------------------------- calibration
def test_calibration_images_are_prepared_as_prediction_prepares_them(data, tmp_path, monkeypatch):
    """Ranges set on other inputs than the graph will see are wrong ranges: the calibration images are what
    ``gmseg predict`` gives the model for the same files (recorded by a backend), for a model whose size
    (24) is not the files' (32) and whose intensity standardisation is not 'none'."""
    import types

    from gmseg.inference import BACKENDS
    from gmseg.models import UNet
    from gmseg.models.unet import unet_arguments

    UNet(unet_arguments([4, 8], 24, intensity="clahe")).save_pretrained(tmp_path / "unet")
    seen: list[torch.Tensor] = []

    def build(model, device, options):
        def run(images: torch.Tensor) -> torch.Tensor:
            seen.append(images.clone())
            return torch.zeros(len(images), 1, 24, 24)

        return run

    monkeypatch.setitem(sys.modules, "recording_backend", types.SimpleNamespace(build=build))
    monkeypatch.setitem(BACKENDS, "recording", "recording_backend")
    calibration = calibration_set(data, InferenceSpec.of(load_model(tmp_path / "unet")), size=TRAIN)
    inputs = [str(data / "images" / f"{name}.png") for name in calibration.names]
    argv = ["predict", "--model", str(tmp_path / "unet"), "--input", *inputs, "--output", str(tmp_path / "out")]
    assert main([*argv, "--backend", "recording"]) == 0
    predicted = torch.cat(seen).numpy()
    assert predicted.shape == (TRAIN, 3, 24, 24)
    assert np.array_equal(np.concatenate(calibration.images), predicted)


def test_calibration_is_a_seeded_sample_of_the_training_split_or_a_whole_folder(data):
    spec = InferenceSpec(image_size=SIZE)
    assert calibration_set(data, spec, size=3, seed=1).names == calibration_set(data, spec, size=3, seed=1).names
    samples = {tuple(calibration_set(data, spec, size=3, seed=seed).names) for seed in range(5)}
    assert len(samples) > 1 and all(len(names) == 3 for names in samples)
    whole = calibration_set(data / "images", spec, size=100)
    assert whole.stage is None and len(whole.names) == TRAIN + TEST, "a plain folder: every image in it"


def test_int8_without_calibration_images_is_refused_in_one_line(model_dir, data, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_train = make_synthetic_dataset(tmp_path / "no-train", n_train=1, n_test=1, size=SIZE)
    (no_train / "split.json").write_text(json.dumps({"train": [], "test": ["case_000", "case_001"]}))
    cases = [
        ([], "needs --calibration"),
        (["--calibration", str(tmp_path / "missing")], "is not a folder"),
        (["--calibration", str(empty)], "holds no images"),
        (["--calibration", str(no_train)], "the train split of .* holds no images"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        out = tmp_path / "out"
        argv = ["export", "--model", str(model_dir), "--format", "onnx", "--out", str(out), "--precision", "int8"]
        assert main([*argv, *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "Traceback" not in error
        assert __import__("re").search(message, error), (message, error)
        assert not out.exists()
    with pytest.raises(GmsegError, match="--calibration is for --precision int8"):
        export_model(model_dir, tmp_path / "fp32", "onnx", calibration=data)
    with pytest.raises(GmsegError, match="--calibration-size must be a positive"):
        export_model(model_dir, tmp_path / "x", "onnx", precision="int8", calibration=data, calibration_size=0)
    assert not (tmp_path / "fp32").exists() and not (tmp_path / "x").exists()


def test_a_missing_nncf_fails_in_one_line_naming_the_extra(model_dir, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import now raises ImportError, as when not installed
    out = tmp_path / "ov"
    argv = ["export", "--model", str(model_dir), "--format", "openvino", "--out", str(out)]
    assert main([*argv, "--precision", "int8", "--calibration", str(data)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'nncf'" in error and "pip install 'gmseg[deploy]'" in error
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_int8_graph_beyond_its_bound_leaves_nothing_behind(model_dir, data, tmp_path, monkeypatch):
    import gmseg.export

    monkeypatch.setattr(gmseg.export, "INT8_MEAN_TOLERANCE", -1.0)  # any change, even 0, now fails verification
    with pytest.raises(GmsegError, match="int8 onnx graph .* nothing was written"):
        export_model(model_dir, tmp_path / "out", "onnx", precision="int8", calibration=data, calibration_size=2)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------- the benchmark
def test_the_backends_benchmark_has_int8_variants_and_keeps_going_past_a_refused_int8_export(tmp_path, monkeypatch):
    """bench/backends.py: each runtime's int8 variant reads its own int8 export; an int8 export refused by its
    bound becomes a row saying why (a result), while a refused fp32 export still stops the benchmark (a bug)."""
    import importlib

    import gmseg.export

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    backends = importlib.import_module("backends")
    assert backends.VARIANTS["onnxruntime int8"][:1] == ("onnxruntime",)
    assert backends.VARIANTS["openvino int8"][2] == "openvino int8"
    assert [backends.variant_precision(v) for v in ("openvino int8", "openvino bf16", "onnxruntime fp32")] == [
        "int8",
        "bf16",
        "fp32",
    ]
    calls = []

    def fake_export(model, out, fmt, precision="fp32", **calibration):
        calls.append((fmt, precision, calibration))
        if precision == "int8" and fmt == "openvino":
            raise GmsegError("the int8 openvino graph gives probabilities 2e-01 away; nothing was written")
        return gmseg.export.ExportReport(Path(out), fmt, 0.0)

    monkeypatch.setattr(gmseg.export, "export_model", fake_export)
    folders, refused = backends.export_folders(
        "model", {"onnx", "onnx int8", "openvino int8"}, tmp_path, tmp_path / "cal", 8
    )
    assert set(folders) == {"onnx", "onnx int8"} and list(refused) == ["openvino int8"]
    assert (
        "onnx",
        "int8",
        {"calibration": tmp_path / "cal", "calibration_size": 8, "calibration_split": None},
    ) in calls
    assert ("onnx", "fp32", {}) in calls
    monkeypatch.setattr(gmseg.export, "export_model", lambda *a, **k: (_ for _ in ()).throw(GmsegError("fp32 bug")))
    with pytest.raises(GmsegError, match="fp32 bug"):
        backends.export_folders("model", {"onnx"}, tmp_path, tmp_path / "cal", 8)
