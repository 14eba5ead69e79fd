"""The predictor contract and its backend registry: torch keeps today's numbers, each backend refuses what it
cannot do by name, and a new backend is one module plus one registry line."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_msd
from gmseg.errors import GmsegError
from gmseg.first_stage import load_first_stage
from gmseg.inference import BACKENDS, InferenceSpec, Predictor, make_predictor
from gmseg.labels import LabelSet
from gmseg.models import GMS, GMSConfig, UNet, load_model
from gmseg.models.unet import unet_arguments
from gmseg.predict import predict_files
from gmseg.synthetic import make_synthetic_dataset

SIZE = 32


@pytest.fixture(scope="module")
def gms(tiny_vae_dir) -> GMS:
    torch.manual_seed(1)
    return GMS(GMSConfig(image_size=SIZE, threshold=0.4), first_stage_module=load_first_stage(tiny_vae_dir)).eval()


def images(count: int = 3) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_torch_backend_gives_the_model_s_own_numbers_bit_for_bit(gms):
    predictor = make_predictor(gms, "cpu")
    assert isinstance(predictor, Predictor) and predictor.backend == "torch"
    expected = torch.cat([gms.predict_proba(image) for image in images().split(1)])  # the release's batch-1 loop
    assert torch.equal(predictor(images()), expected)


def test_the_spec_is_what_inference_needs_of_the_model(gms):
    spec = make_predictor(gms, "cpu").spec
    assert spec == InferenceSpec(image_size=SIZE, intensity="none", labels=gms.labels, threshold=0.4)
    assert spec.channels == 1
    three = LabelSet.from_labels({"background": 0, "benign": 1, "malignant": 2})
    unet = UNet(unet_arguments([8, 16], SIZE, labels=three))
    assert make_predictor(unet, "cpu").spec.channels == 3


def test_the_compiled_part_of_gms_is_behind_the_contract(gms):
    """``inference_stages`` (what --compile takes) composes to ``predict_proba``, for GMS and the default."""
    prepare, head = gms.inference_stages()
    assert prepare(images(1)).shape[1] == 4, "GMS compiles after the frozen encoder: prepare gives latents"
    assert torch.equal(head(prepare(images(1))), gms.predict_proba(images(1)))
    unet = UNet(unet_arguments([8, 16], SIZE)).eval()
    prepare, head = unet.inference_stages()
    assert torch.equal(head(prepare(images(1))), unet.predict_proba(images(1)))


def test_unknown_backend_and_misplaced_options_are_refused_by_name(gms):
    with pytest.raises(GmsegError, match="unknown backend 'tensorrt'.*onnxruntime"):
        make_predictor(gms, "cpu", backend="tensorrt")
    with pytest.raises(GmsegError, match="gmseg export"):
        make_predictor(gms, "cpu", backend="onnxruntime")
    with pytest.raises(GmsegError, match="gmseg export"):
        make_predictor(gms, "cpu", backend="openvino")
    with pytest.raises(GmsegError, match="precision"):
        make_predictor(gms, "cpu", precision="fp16")


def test_a_runtime_backend_refuses_torch_only_options_by_name(gms, tmp_path):
    pytest.importorskip("onnxruntime", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")
    from gmseg.export import export_model

    model = load_model(export_model(gms, tmp_path / "onnx", "onnx").folder)
    with pytest.raises(GmsegError, match="onnxruntime has no --precision bf16"):
        make_predictor(model, "cpu", backend="onnxruntime", precision="bf16")
    with pytest.raises(GmsegError, match="--channels-last is an option of the torch backend"):
        make_predictor(model, "cpu", backend="onnxruntime", channels_last=True)
    with pytest.raises(GmsegError, match="--compile is an option of the torch backend"):
        make_predictor(model, "cpu", backend="openvino", compile=True)
    with pytest.raises(GmsegError, match="backend torch runs torch models"):
        make_predictor(model, "cpu", backend="torch")


def test_a_new_backend_is_one_module_and_one_registry_line(gms, tmp_path, monkeypatch):
    """A backend that halves the torch probabilities, registered by one line, runs through predict_files."""
    module = types.ModuleType("halving_backend")
    calls = []

    def build(model, device, options):
        calls.append((type(model).__name__, device.type, options.precision))
        return lambda batch: model.predict_proba(batch.to(device)) * 0.5

    module.build = build
    monkeypatch.setitem(sys.modules, "halving_backend", module)
    monkeypatch.setitem(BACKENDS, "halving", "halving_backend")  # the one registry line
    data = make_synthetic_dataset(tmp_path / "data", n_train=1, n_test=1, size=SIZE, seed=1)
    for name in ("torch", "halving"):
        report = predict_files(
            gms, data / "images", tmp_path / name, backend=name, save_prob=True, device="cpu", progress=False
        )
        assert report.ok and len(report.written) == 2
    assert calls == [("GMS", "cpu", "fp32")]
    for prob in sorted((tmp_path / "torch").glob("*.prob.npy")):
        np.testing.assert_allclose(np.load(tmp_path / "halving" / prob.name), np.load(prob) * 0.5, atol=1e-6)


def test_predict_py_keeps_its_names_for_callers():
    import gmseg.inference
    import gmseg.predict

    for name in ("make_predictor", "mirror_averaged", "pick_device", "PRECISIONS", "MIRROR_AXES"):
        assert getattr(gmseg.predict, name) is getattr(gmseg.inference, name), name


def test_backend_modules_load_only_when_chosen():
    """Importing gmseg.inference imports no optional runtime: a missing extra costs nothing until asked for."""
    import subprocess

    code = "import sys, gmseg.predict, gmseg.inference; print(sorted({'onnxruntime', 'openvino'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=True,
        cwd=Path.cwd(),
    )
    assert out.stdout.strip() == "[]"


def test_backends_bench_scores_a_volume_dataset_per_case(tmp_path):
    """bench/backends.py --data on an MSD task: each variant predicts the test cases whole, scored in 3D, and
    dDice is paired per case (onnxruntime fp32 is torch fp32's numbers); int8 calibrates on slices of the
    split's training case and is scored like the others."""
    import json

    pytest.importorskip("onnxruntime", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import backends

    task = make_tiny_msd(tmp_path / "Task98_Tiny")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["vol_000"], "val": [], "test": ["vol_001", "vol_002", "vol_003"]}))
    three = LabelSet.from_labels({"background": 0, "anterior": 1, "posterior": 2})
    torch.manual_seed(0)
    UNet(unet_arguments([8, 16], SIZE, labels=three)).eval().save_pretrained(tmp_path / "model")
    out = tmp_path / "backends.json"
    argv = ["--model", str(tmp_path / "model"), "--data", str(task), "--split", str(split), "--device", "cpu"]
    argv += ["--variants", "torch fp32", "onnxruntime fp32", "onnxruntime int8", "--images", "2", "--rounds", "1"]
    assert backends.main([*argv, "--batch", "2", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    rows = {row["variant"]: row for row in payload["rows"]}
    assert payload["scored_per"].startswith("case")
    for variant in ("torch fp32", "onnxruntime fp32", "onnxruntime int8"):
        assert rows[variant]["d_dice_images"] == 3 and rows[variant]["d_dice_unit"] == "cases"
    assert rows["torch fp32"]["d_dice"] == 0.0
    assert abs(rows["onnxruntime fp32"]["d_dice"]) < 0.05  # Dice points
    assert rows["onnxruntime int8"]["precision"] == "int8" and "refused" not in rows["onnxruntime int8"]
    with pytest.raises(GmsegError, match="ships no split file"):  # refused before any timing
        backends.main(["--model", str(tmp_path / "model"), "--data", str(task), "--out", str(tmp_path / "no.json")])
    assert not (tmp_path / "no.json").exists()


def test_backends_bench_refuses_a_2d_nnunet_dataset_by_name(tmp_path):
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from PIL import Image

    import backends

    root = tmp_path / "Dataset001_Flat"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "imagesTr" / f"c{i}_0000.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "labelsTr" / f"c{i}.png")
    meta = {"channel_names": {"0": "US"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2}
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".png"}))
    with pytest.raises(GmsegError, match="2D nnU-Net dataset: prepare it"):
        backends.is_volume_data(root)
    assert (
        backends.is_volume_data(make_synthetic_dataset(tmp_path / "prepared", n_train=1, n_test=1, size=SIZE)) is False
    )


def test_backends_bench_keeps_scoring_a_prepared_2d_dataset_per_image(tmp_path):
    import json

    pytest.importorskip("onnxruntime", reason="the deploy extra (pip install 'gmseg[deploy]') is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import backends

    data = make_synthetic_dataset(tmp_path / "data", n_train=2, n_test=3, size=SIZE, seed=2)
    torch.manual_seed(0)
    UNet(unet_arguments([8, 16], SIZE)).eval().save_pretrained(tmp_path / "model")
    out = tmp_path / "backends.json"
    argv = ["--model", str(tmp_path / "model"), "--data", str(data), "--device", "cpu", "--rounds", "1"]
    argv += ["--variants", "torch fp32", "onnxruntime fp32", "--images", "2", "--batch", "2", "--out", str(out)]
    assert backends.main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["scored_per"] == "image"
    row = next(r for r in payload["rows"] if r["variant"] == "onnxruntime fp32")
    assert row["d_dice_images"] == 3 and row["d_dice_unit"] == "images" and abs(row["d_dice"]) < 0.05


def test_backends_bench_times_the_release_loop_beside_the_runtimes(model_dir, tmp_path):
    """The ``release`` variant is the release's valid.py loop on the same weights and images: its
    probabilities are torch fp32's exactly, and every row says how many times that loop it runs; a U-Net
    has no release loop and no mapping for OpenVINO's mixed precision, and no such rows."""
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import backends

    out = tmp_path / "gms.json"
    argv = ["--model", str(model_dir), "--device", "cpu", "--rounds", "1", "--images", "2", "--batch", "2"]
    variants = ["release", "torch fp32", "openvino mixed"]
    assert backends.main([*argv, "--variants", *variants, "--out", str(out)]) == 0
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["release"]["x_release"] == 1.0 and rows["release"]["max_dprob"] == 0.0
    assert rows["torch fp32"]["x_release"] > 0 and rows["openvino mixed"]["x_release"] > 0
    assert rows["openvino mixed"]["max_dprob"] <= 0.25
    torch.manual_seed(0)
    UNet(unet_arguments([8, 16], SIZE)).eval().save_pretrained(tmp_path / "unet")
    argv[1] = str(tmp_path / "unet")
    assert backends.main([*argv, "--variants", *variants, "--out", str(tmp_path / "unet.json")]) == 0
    rows = json.loads((tmp_path / "unet.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["torch fp32"] and rows[0]["x_release"] is None, "no mapping to split"
    three = LabelSet.from_labels({"background": 0, "anterior": 1, "posterior": 2})
    assert backends.is_binary_gms(load_model(model_dir))
    assert not backends.is_binary_gms(types.SimpleNamespace(mapping=None, labels=three)), "multi-class GMS"


def test_predict_throughput_bench_times_a_model_folder_with_and_without_workers(tmp_path):
    """bench/predict_throughput.py --model: any model folder, each worker setting one timed predict_files
    call, and the files every setting wrote are byte-identical."""
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import predict_throughput

    torch.manual_seed(0)
    UNet(unet_arguments([8, 16], SIZE)).eval().save_pretrained(tmp_path / "unet")
    out = tmp_path / "throughput.json"
    argv = ["--model", str(tmp_path / "unet"), "--images", "6", "--image-size", "40", "--workers", "0", "1"]
    predict_throughput.main([*argv, "--data", str(tmp_path / "data"), "--out", str(out)])
    payload = json.loads(out.read_text())
    assert [row["workers"] for row in payload["rows"]] == [0, 1] and payload["identical"] is True
    assert all(row["images"] == 6 and row["images_per_s"] > 0 for row in payload["rows"])
    assert payload["settings"]["model_size"] == SIZE


def test_denormals_bench_times_prediction_in_each_flush_mode(model_dir, tmp_path):
    """``bench/denormals.py --predict`` runs gmseg's default predictor in each flush mode, in its own process,
    and compares each mode's probabilities with PyTorch's default (off): itself exactly."""
    import json

    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import denormals

    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        pixels = np.random.default_rng(index).integers(0, 255, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"case{index}.png")
    out = tmp_path / "denormals.json"
    argv = ["--model", str(model_dir), "--predict", str(images), "--limit", "2", "--batch", "2"]
    denormals.main([*argv, "--rounds", "1", "--repeats", "1", "--json", str(out)])
    modes = json.loads(out.read_text())["predict"]
    assert set(modes) == {"off", "set late", "set first"}
    assert modes["off"]["max_abs_diff"] == 0.0 and modes["off"]["mask_pixels_changed"] == 0
    assert [modes[mode]["flushing"] for mode in ("off", "set late", "set first")] == [False, True, True]
    assert all(mode["seconds"] > 0 and mode["max_abs_diff"] < 1e-4 for mode in modes.values())
