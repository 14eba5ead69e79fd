"""gmseg export: ONNX / OpenVINO model folders that every verb loads, equal to the torch model in fp32, and
refused by name when their graph is corrupt, swapped or does not fit their config.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gmseg.cli import main
from gmseg.errors import CheckpointError, GmsegError
from gmseg.export import export_model
from gmseg.first_stage import load_first_stage
from gmseg.inference import make_predictor
from gmseg.models import GMS, ExportedModel, GMSConfig, UNet, load_model
from gmseg.models.exported import file_sha256
from gmseg.models.unet import unet_arguments
from gmseg.synthetic import make_synthetic_dataset

pytest.importorskip("onnxruntime", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")
pytest.importorskip("openvino", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")

SIZE = 32


@pytest.fixture(scope="module")
def gms_dir(tiny_vae_dir, tmp_path_factory) -> Path:
    """A GMS model folder on the tiny test autoencoder (conftest), seeded mapping weights."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("gms")
    GMS(GMSConfig(image_size=SIZE), first_stage_module=load_first_stage(tiny_vae_dir)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp("unet")
    UNet(unet_arguments([8, 16, 32], SIZE)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(gms_dir, unet_dir, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(model, format) -> exported folder, written once for the module."""
    root = tmp_path_factory.mktemp("exported")
    folders = {}
    for name, source in (("gms", gms_dir), ("unet", unet_dir)):
        for fmt in ("onnx", "openvino"):
            folders[name, fmt] = export_model(source, root / f"{name}-{fmt}", fmt).folder
    return folders


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=2, n_test=3, size=SIZE, seed=5)


def images(count: int = 3) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7)) * 2 - 1


# ------------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("model_name", ["gms", "unet"])
@pytest.mark.parametrize(("fmt", "backend"), [("onnx", "onnxruntime"), ("onnx", "openvino"), ("openvino", "openvino")])
def test_exported_graph_equals_torch_in_fp32(exported, gms_dir, unet_dir, model_name, fmt, backend):
    source = load_model(gms_dir if model_name == "gms" else unet_dir)
    folder = exported[model_name, fmt]
    model = load_model(folder)
    assert isinstance(model, ExportedModel) and model.graph_format == fmt
    assert (model.image_size, model.threshold, model.labels) == (source.image_size, source.threshold, source.labels)
    expected = make_predictor(source, "cpu")(images())
    actual = make_predictor(model, "cpu", backend=backend)(images())
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    assert (actual - expected).abs().max().item() <= 1e-4
    assert expected.std() > 1e-3, "probabilities that vary, or the comparison proves little"


def test_the_python_api_predicts_with_an_exported_folder(exported, gms_dir):
    expected = load_model(gms_dir).predict_proba(images())
    assert (load_model(exported["gms", "onnx"]).predict_proba(images()) - expected).abs().max() <= 1e-4


def test_openvino_fp32_is_forced_where_the_cpu_would_run_bf16(exported, gms_dir):
    """OpenVINO runs bf16 unless told otherwise on CPUs that have it: fp32 must stay fp32 there."""
    openvino = pytest.importorskip("openvino")
    default = str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    if "bf16" not in default and "bfloat16" not in default:
        pytest.skip(f"this CPU's OpenVINO default precision is {default}, not bf16: nothing to force here")
    expected = load_model(gms_dir).predict_proba(images())
    model = load_model(exported["gms", "openvino"])
    fp32 = make_predictor(model, "cpu", backend="openvino")(images())
    bf16 = make_predictor(model, "cpu", backend="openvino", precision="bf16")(images())
    assert (fp32 - expected).abs().max() <= 1e-4 < (bf16 - expected).abs().max()


def test_mixed_splits_a_gms_graph_into_its_three_stages_exactly(exported):
    """The encoder, mapping and decoder parts chained in f32 give the whole graph's probabilities."""
    openvino = pytest.importorskip("openvino")
    from gmseg.inference import openvino_backend

    core = openvino.Core()
    network = core.read_model(str(exported["gms", "openvino"] / "model.xml"))
    network.reshape({network.inputs[0]: [1, 3, SIZE, SIZE]})
    stages = openvino_backend.gms_stages(network, "model.xml")
    assert len(stages) == 3 and all(len(s.inputs) >= 1 for s in stages)
    names = [{op.get_friendly_name() for op in stage.get_ordered_ops()} for stage in stages]
    assert any(n.startswith("/encoder/") for n in names[0]) and not any(n.startswith("/mapping/") for n in names[0])
    assert any(n.startswith("/mapping/") for n in names[1]) and not any(n.startswith("/decoder/") for n in names[1])
    assert any(n.startswith("/decoder/") for n in names[2]) and not any(n.startswith("/mapping/") for n in names[2])
    run = openvino_backend.chained(core, stages, ("f32", "f32", "f32"))
    whole = make_predictor(load_model(exported["gms", "openvino"]), "cpu", backend="openvino")(images())
    parts = torch.cat([torch.from_numpy(run(image.numpy())) for image in images().split(1)])
    assert (parts - whole).abs().max() <= 1e-6 and whole.std() > 1e-3


def test_mixed_runs_the_mapping_in_fp32_and_the_autoencoder_in_bf16(exported):
    openvino = pytest.importorskip("openvino")
    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16 instructions: OpenVINO runs every precision in f32 here")
    model = load_model(exported["gms", "openvino"])
    run = {
        p: make_predictor(model, "cpu", backend="openvino", precision=p)(images()) for p in ("fp32", "bf16", "mixed")
    }
    assert (run["mixed"] - run["fp32"]).abs().max() > 1e-4, "the autoencoder ran in bf16"
    assert (run["mixed"] - run["bf16"]).abs().max() > 1e-4, "the mapping did not"
    assert (run["mixed"] - run["fp32"]).abs().max() <= 0.25


def test_mixed_is_refused_where_there_is_no_gms_graph(exported, gms_dir):
    with pytest.raises(GmsegError, match="no mapping or decoder stage"):
        make_predictor(load_model(exported["unet", "openvino"]), "cpu", backend="openvino", precision="mixed")
    for backend, folder in (("torch", gms_dir), ("onnxruntime", exported["gms", "onnx"])):
        with pytest.raises(GmsegError, match=f"backend {backend} has no --precision mixed"):
            make_predictor(load_model(folder), "cpu", backend=backend, precision="mixed")


def test_exported_config_names_its_kind_and_graph(exported):
    config = json.loads((exported["unet", "openvino"] / "config.json").read_text())
    assert config["_class_name"] == "ExportedModel" and config["exported_from"] == "UNet"
    assert sorted(config["sha256"]) == ["model.bin", "model.xml"] and config["image_size"] == SIZE
    assert sorted(p.name for p in exported["gms", "onnx"].iterdir()) == ["config.json", "model.onnx"]


# ---------------------------------------------------------------------------------------------- the verbs
def test_predict_test_and_generalize_take_an_exported_folder(exported, gms_dir, data, tmp_path):
    folder = str(exported["gms", "onnx"])
    inputs = str(data / "images")
    for name, model in (("torch", str(gms_dir)), ("exported", folder)):
        argv = ["predict", "--model", model, "--input", inputs, "--output", str(tmp_path / name), "--save-prob"]
        assert main(argv) == 0
    names = sorted(p.name for p in (tmp_path / "torch").glob("case_*"))
    assert names == sorted(p.name for p in (tmp_path / "exported").glob("case_*")) and len(names) == 2 * 5
    for prob_file in (tmp_path / "torch").glob("*.prob.npy"):
        torch_prob, exported_prob = np.load(prob_file), np.load(tmp_path / "exported" / prob_file.name)
        assert np.abs(torch_prob - exported_prob).max() <= 1e-4
    assert main(["test", "--model", folder, "--data", str(data), "--out", str(tmp_path / "test")]) == 0
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    assert summary["counts"]["n_images"] == 3
    argv = ["generalize", "--model", folder, "--data", f"syn={data}", "--out", str(tmp_path / "gen")]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "gen" / "generalization.json").read_text())["rows"]
    assert {row["stage"] for row in rows} == {"test", "all"}


def test_export_verb_writes_a_folder_predict_runs_on_openvino(unet_dir, data, tmp_path, capsys):
    out = tmp_path / "ov"
    assert main(["export", "--model", str(unet_dir), "--format", "openvino", "--out", str(out)]) == 0
    assert "max |dprob| against torch fp32" in capsys.readouterr().out
    argv = ["predict", "--model", str(out), "--input", str(data / "images"), "--output", str(tmp_path / "pred")]
    assert main([*argv, "--backend", "openvino"]) == 0
    assert len(list((tmp_path / "pred").glob("*.png"))) == 5


# ---------------------------------------------------------------------------------------------- refusals
def copy_folder(folder: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, to))


def rewrite_hash(folder: Path, name: str) -> None:
    """Make config.json agree with a replaced graph file, as a careless hand copy would."""
    config = json.loads((folder / "config.json").read_text())
    config["sha256"][name] = file_sha256(folder / name)
    (folder / "config.json").write_text(json.dumps(config))


def predict_error(model: Path, data: Path, out: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--input", str(data / "images"), "--output", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert not out.exists(), "nothing is written when the model cannot run"
    return error


def test_a_truncated_graph_is_refused_by_name(exported, data, tmp_path, capsys):
    folder = copy_folder(exported["gms", "onnx"], tmp_path / "cut")
    graph = folder / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="model.onnx"):
        load_model(folder)
    assert "model.onnx" in predict_error(folder, data, tmp_path / "out", capsys)


def test_a_graph_from_another_export_is_refused_by_name(exported, tmp_path):
    folder = copy_folder(exported["gms", "onnx"], tmp_path / "swapped")
    (folder / "model.onnx").write_bytes((exported["unet", "onnx"] / "model.onnx").read_bytes())
    with pytest.raises(CheckpointError, match=r"model\.onnx.*another export"):
        load_model(folder)


@pytest.mark.parametrize(("fmt", "graph"), [("onnx", "model.onnx"), ("openvino", "model.xml")])
def test_an_unreadable_graph_is_refused_by_the_runtime_by_name(exported, data, tmp_path, capsys, fmt, graph):
    folder = copy_folder(exported["gms", fmt], tmp_path / "garbage")
    (folder / graph).write_bytes(b"not a graph at all")
    rewrite_hash(folder, graph)
    error = predict_error(folder, data, tmp_path / "out", capsys)
    assert graph in error and "export the model again" in error


def test_a_graph_that_does_not_fit_its_config_is_refused(exported, data, tmp_path, capsys):
    folder = copy_folder(exported["unet", "onnx"], tmp_path / "resized")
    config = json.loads((folder / "config.json").read_text())
    config["image_size"] = 2 * SIZE  # the graph takes 32x32 images
    (folder / "config.json").write_text(json.dumps(config))
    error = predict_error(folder, data, tmp_path / "out", capsys)
    assert "model.onnx" in error and "another model" in error


def test_a_missing_runtime_fails_in_one_line_naming_the_extra(exported, gms_dir, data, tmp_path, capsys, monkeypatch):
    import sys

    model = str(exported["gms", "onnx"])
    for module in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError, as when not installed
        capsys.readouterr()
        out = tmp_path / f"out-{module}"
        argv = ["predict", "--model", model, "--input", str(data / "images"), "--output", str(out)]
        assert main([*argv, "--backend", module]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and repr(module) in error and "pip install 'gmseg[deploy]'" in error
        assert not out.exists()
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--model", str(gms_dir), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'onnx'" in error and "gmseg[deploy]" in error
    assert not (tmp_path / "x").exists()


def test_export_refuses_to_write_over_what_it_reads_or_holds(gms_dir, exported, tmp_path):
    with pytest.raises(GmsegError, match="model folder"):
        export_model(gms_dir, gms_dir, "onnx")
    with pytest.raises(GmsegError, match="model folder"):
        export_model(gms_dir, gms_dir.parent, "onnx")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(GmsegError, match="not empty"):
        export_model(gms_dir, taken, "onnx")
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(GmsegError, match="already an exported model"):
        export_model(exported["gms", "onnx"], tmp_path / "again", "onnx")
    with pytest.raises(GmsegError, match="format"):
        export_model(gms_dir, tmp_path / "tf", "tflite")


def test_a_graph_that_fails_verification_leaves_nothing_behind(gms_dir, tmp_path, monkeypatch):
    import gmseg.export

    monkeypatch.setattr(gmseg.export, "TOLERANCE", -1.0)  # any difference, even 0, now fails verification
    with pytest.raises(GmsegError, match="nothing was written"):
        export_model(gms_dir, tmp_path / "out", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_volumes_go_through_an_exported_folder_slice_batch_by_slice_batch(tmp_path):
    """A U-Net trained on volumes keeps its voxel normalisation in the export; a NIfTI volume predicted with
    the exported folder equals the torch folder's prediction (labels, and probabilities to 1e-4)."""
    import SimpleITK as sitk

    from gmseg.data.normalization import VolumeInput

    torch.manual_seed(0)
    model = UNet(unet_arguments((4, 8), SIZE, 0))
    model.record_volume_input(VolumeInput(scheme="zscore", modality="MRI"))
    model.save_pretrained(tmp_path / "unet")
    folder = export_model(tmp_path / "unet", tmp_path / "exported", "onnx").folder
    assert load_model(folder).volume_input == model.volume_input
    (tmp_path / "in").mkdir()
    volume = np.random.default_rng(0).normal(300, 50, (5, 22, 27)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "in" / "case.nii.gz"))
    for name in ("unet", "exported"):
        argv = ["predict", "--model", str(tmp_path / name), "--input", str(tmp_path / "in"), "--save-prob"]
        assert main([*argv, "--output", str(tmp_path / f"out-{name}"), "--batch-size", "2"]) == 0
    written = sorted(p.name for p in (tmp_path / "out-unet").glob("case*"))
    assert written == sorted(p.name for p in (tmp_path / "out-exported").glob("case*")) and len(written) == 2
    for file in written:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out-unet" / file)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out-exported" / file)))
        assert a.shape == volume.shape and np.abs(a.astype(np.float64) - b).max() <= 1e-4, file
