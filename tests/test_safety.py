"""Nothing lost, nothing misread: each edge where gmseg could destroy data or report a wrong number, and
for each class of them a variant, through the command line as a user meets them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmseg.cli import main
from gmseg.data.io import read_image, read_mask
from gmseg.data.prepare import prepare_folders
from gmseg.errors import CheckpointError, ConfigError, DataError
from gmseg.models import GMS, load_model

S = 32


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (S, S, 3), dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def square(value=255, dtype=np.uint8, channels: int | None = None) -> np.ndarray:
    shape = (S, S) if channels is None else (S, S, channels)
    m = np.zeros(shape, dtype)
    m[8:24, 8:24] = value
    return m


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path) -> Path:
    for i in range(4):
        write_image(tmp_path / "D" / "images" / f"c{i}.png", seed=i)
        write_mask(tmp_path / "D" / "masks" / f"c{i}.png", square())
    return tmp_path / "D"


# ------------------------------------------------------------------------------------- data loss


def test_predict_never_writes_into_its_input_or_ground_truth_folder(model_dir, dataset, capsys):
    before = snapshot(dataset)
    images, masks = dataset / "images", dataset / "masks"
    assert main(["predict", "--model", str(model_dir), "--input", str(images), "--output", str(images)]) == 2
    assert "input image" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                "--input",
                str(images),
                "--output",
                str(masks),
                "--gt",
                str(masks),
                "--overlay",
            ]
        )
        == 2
    )
    assert "ground-truth folder" in capsys.readouterr().err
    # Variant: a single image named explicitly, the output its own folder.
    assert main(["predict", "--model", str(model_dir), "--input", str(images / "c0.png"), "--output", str(images)]) == 2
    assert snapshot(dataset) == before


def test_predict_refuses_to_replace_existing_outputs_without_overwrite(model_dir, dataset, tmp_path, capsys):
    out = tmp_path / "pred"
    args = ["predict", "--model", str(model_dir), "--input", str(dataset / "images"), "--output", str(out)]
    assert main(args) == 0
    stamp = (out / "c0.png").stat().st_mtime_ns
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "c0.png").stat().st_mtime_ns == stamp
    assert main(args + ["--overwrite"]) == 0


def test_predict_refuses_two_inputs_with_one_stem(model_dir, tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png")
    Image.open(tmp_path / "in" / "a.png").save(tmp_path / "in" / "a.jpg")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model_dir), "--input", str(tmp_path / "in"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a.jpg" in err and "a.png" in err and not out.exists()
    # Variant: the same name in two folders.
    write_image(tmp_path / "other" / "a.png", seed=3)
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                "--input",
                str(tmp_path / "in" / "a.png"),
                str(tmp_path / "other"),
                "--output",
                str(out),
            ]
        )
        == 2
    )


def test_predict_skips_hidden_macos_files(model_dir, dataset, tmp_path, capsys):
    (dataset / "images" / "._c0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model_dir), "--input", str(dataset / "images"), "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name != ".gmseg-written") == [f"c{i}.png" for i in range(4)]


def test_prepare_refuses_an_output_that_holds_its_inputs(dataset, capsys):
    before = snapshot(dataset)
    code = main(
        [
            "prepare",
            "folders",
            "--images",
            str(dataset / "images"),
            "--masks",
            str(dataset / "masks"),
            "--out",
            str(dataset),
        ]
    )
    assert code == 2 and "write over the originals" in capsys.readouterr().err
    # Variant: --overwrite does not make it allowed (replacing the folder would delete the inputs).
    assert (
        main(
            [
                "prepare",
                "folders",
                "--images",
                str(dataset / "images"),
                "--masks",
                str(dataset / "masks"),
                "--out",
                str(dataset),
                "--overwrite",
            ]
        )
        == 2
    )
    assert snapshot(dataset) == before


def test_reprepare_replaces_a_dataset_whole_or_not_at_all(dataset, tmp_path):
    out = tmp_path / "prepared"
    prepare_folders(dataset / "images", dataset / "masks", out)
    with pytest.raises(ConfigError, match="not empty"):
        prepare_folders(dataset / "images", dataset / "masks", out)
    (dataset / "images" / "c3.png").unlink()
    (dataset / "masks" / "c3.png").unlink()
    prepare_folders(dataset / "images", dataset / "masks", out, overwrite=True)
    assert sorted(p.stem for p in (out / "images").iterdir()) == ["c0", "c1", "c2"]  # no stale c3 mixed in
    before = snapshot(out)
    (dataset / "images" / "c1.png").write_bytes(b"truncated")
    with pytest.raises(DataError):
        prepare_folders(dataset / "images", dataset / "masks", out, overwrite=True)
    assert snapshot(out) == before  # a failed re-prepare leaves the previous dataset as it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


# ----------------------------------------------------------------------------------- wrong results


@pytest.mark.parametrize("encoding", ["red", "gray100", "palette"])
def test_evaluate_reads_masks_by_the_same_rule_as_prepare(encoding, tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    if encoding == "red":
        gt = square(value=(255, 0, 0), channels=3)
        write_mask(gt_dir / "x.png", gt)
    elif encoding == "gray100":
        write_mask(gt_dir / "x.png", square(value=100))
    else:  # variant: a palette mask whose lesion colour is green
        img = Image.fromarray(square(value=1)).convert("P")
        img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
        gt_dir.mkdir(parents=True)
        img.save(gt_dir / "x.png")
    write_mask(pred_dir / "x.png", square())
    assert read_mask(gt_dir / "x.png").sum() == 256  # what prepare and training read
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 0
    summary = json.loads((pred_dir / "summary.json").read_text())
    assert summary["metrics"]["dice"]["mean"] == 1.0 and summary["counts"]["n_true_empty"] == 0


def test_a_mask_encoded_unlike_its_folder_is_reported(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for i in range(3):
        write_mask(gt_dir / f"m{i}.png", square())
        write_mask(pred_dir / f"m{i}.png", square())
    write_mask(gt_dir / "odd.png", square(value=100))
    write_mask(pred_dir / "odd.png", square())
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 0
    err = capsys.readouterr().err
    assert "odd.png" in err and "unlike the folder" in err and "m0.png" not in err


def test_soft_masks_are_warned_about_and_a_threshold_can_be_set(tmp_path):
    yy, xx = np.mgrid[0:S, 0:S]
    blurred = np.clip(255 - 12 * np.hypot(yy - 16, xx - 16), 0, 255).astype(np.uint8)  # a blurred disc
    write_image(tmp_path / "images" / "a.png")
    write_mask(tmp_path / "masks" / "a.png", blurred)
    report = prepare_folders(tmp_path / "images", tmp_path / "masks", tmp_path / "out")
    assert any("grey levels" in n and "a.png" in n for n in report.notes)
    assert "--mask-threshold" in report.summary()
    loose = read_mask(tmp_path / "out" / "masks" / "a.png").sum()
    assert (
        main(
            [
                "prepare",
                "folders",
                "--images",
                str(tmp_path / "images"),
                "--masks",
                str(tmp_path / "masks"),
                "--out",
                str(tmp_path / "half"),
                "--mask-threshold",
                "0.5",
            ]
        )
        == 0
    )
    half = read_mask(tmp_path / "half" / "masks" / "a.png").sum()
    assert half == int((blurred > 127.5).sum()) and half < loose / 1.3
    # Variant: a soft ground truth at evaluation time is reported too.
    from gmseg.evaluate import evaluate_folders

    write_mask(tmp_path / "pred" / "a.png", square())
    result = evaluate_folders(tmp_path / "pred", tmp_path / "masks")
    assert any("soft ground truth" in w for w in result.warnings)


def declare_bits(path: Path, bits: int) -> None:
    """Give a PNG an sBIT chunk (right after IHDR) declaring ``bits`` significant bits per sample."""
    import struct
    import zlib

    data = path.read_bytes()
    end = 8 + 8 + 13 + 4  # signature, IHDR length/type, IHDR data, CRC
    body = b"sBIT" + bytes([bits])
    chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body))
    path.write_bytes(data[:end] + chunk + data[end:])


@pytest.mark.parametrize("bits", [12, 10])
def test_high_bit_depth_images_are_scaled_by_their_bit_depth(bits, tmp_path):
    top = 2**bits - 1
    data = (np.linspace(0, top, S * S).reshape(S, S)).astype(np.uint16)
    path = tmp_path / f"scan{bits}.png"
    Image.fromarray(data).save(path)
    declare_bits(path, bits)  # the bit depth the file declares decides, never the image's own maximum
    notes: list[str] = []
    rgb = read_image(path, notes)
    assert rgb.max() == 255 and abs(int(rgb[S // 2, 0, 0]) - round(data[S // 2, 0] / top * 255)) <= 1
    assert notes and f"{bits}-bit" in notes[0]


def test_an_unknown_or_missing_stage_is_an_error_not_every_image(model_dir, dataset, tmp_path, capsys):
    def test_stage(stage: str) -> int:
        out = tmp_path / f"out-{stage}-{len(list(tmp_path.iterdir()))}"
        return main(["test", "--model", str(model_dir), "--data", str(dataset), "--stage", stage, "--out", str(out)])

    (dataset / "split.json").write_text(json.dumps({"train": ["c0", "c1", "c2"], "test": ["c3"]}))
    for stage in ("tset", "val"):
        assert test_stage(stage) == 2
        assert "has no stage" in capsys.readouterr().err
    # Variant: a folder without split.json asked for a stage other than test or all.
    (dataset / "split.json").unlink()
    assert test_stage("val") == 2
    assert test_stage("all") == 0


# ----------------------------------------------------------------------------- errors a user reads


def test_bad_devices_are_errors(model_dir, dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "foo"):
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(model_dir),
                    "--input",
                    str(dataset / "images"),
                    "--output",
                    str(tmp_path / device),
                    "--device",
                    device,
                ]
            )
            == 2
        )
        assert "device" in capsys.readouterr().err
        assert not (tmp_path / device).exists()


def test_os_errors_are_one_line_naming_the_path(model_dir, dataset, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert (
        main(["predict", "--model", str(model_dir), "--input", str(dataset / "images"), "--output", str(blocker)]) != 0
    )
    assert "existing file" in capsys.readouterr().err
    # Variant: an output below a file (NotADirectoryError from the OS itself), for evaluate.
    write_mask(tmp_path / "pred" / "c0.png", square())
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(dataset), "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and str(blocker) in err and len(err.strip().splitlines()) == 1


def test_a_failing_cleanup_never_hides_the_first_error(tmp_path, monkeypatch):
    from gmseg import fileio

    def broken_unlink(self, missing_ok=False):
        raise PermissionError("cleanup failed")

    monkeypatch.setattr(Path, "unlink", broken_unlink)

    def write(handle):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        fileio.atomic_write(tmp_path / "x.bin", write)


def test_model_folder_errors_name_the_file(model_dir, tmp_path, monkeypatch):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["threshold"] = "0.5"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="config.json.*threshold"):
        load_model(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(broken)
    monkeypatch.chdir(tmp_path)
    for missing in ("runs/x/checkpoints/best", "./model", "no-such-folder"):
        with pytest.raises(CheckpointError, match="does not exist"):
            load_model(missing)


def test_offline_hub_ids_fail_fast_with_the_flag_to_pass(tmp_path, monkeypatch, capsys):
    import socket

    from gmseg import hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    hub.hub_reachable.cache_clear()

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    calls = []

    def no_network(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        raise OSError("not in the local cache")

    monkeypatch.setattr("diffusers.AutoencoderKL.load_config", no_network)
    try:
        assert main(["demo", "--out", str(tmp_path / "demo"), "--quick"]) == 2
    finally:
        hub.hub_reachable.cache_clear()
    assert calls == [True]  # straight to the cache: no download attempt, no retries
    assert "--vae" in capsys.readouterr().err


def test_import_official_and_image_size_errors(tmp_path, tiny_vae_dir):
    from gmseg.official import import_official

    bad = tmp_path / "best_model.pth"
    torch.save({"model": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="not the mapping model's state dict"):
        import_official(bad, str(tiny_vae_dir))
    with pytest.raises(ConfigError, match="multiple of 8"):
        import_official(bad, str(tiny_vae_dir), image_size=0)


def test_output_files_respect_the_umask(model_dir, dataset, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "pred"
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(model_dir),
                    "--input",
                    str(dataset / "images"),
                    "--output",
                    str(out),
                    "--save-prob",
                ]
            )
            == 0
        )
        GMS.from_pretrained(str(model_dir)).save_pretrained(tmp_path / "copy")
    finally:
        os.umask(old)
    for path in (out / "c0.prob.npy", out / "c0.png", tmp_path / "copy" / "model.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_long_silent_steps_show_progress(dataset, tmp_path, tiny_vae_dir, capsys):
    prepare_folders(dataset / "images", dataset / "masks", tmp_path / "p")
    assert "prepare folders" in capsys.readouterr().err
    from gmseg.config import config_from_dict
    from gmseg.training import make_trainer

    config = config_from_dict(
        {
            "name": "bar",
            "data": {"root": str(tmp_path / "p"), "image_size": S, "val_fraction": 0.25},
            "model": {"vae": str(tiny_vae_dir), "ch": 16, "ch_mult": [1, 2, 2]},
            "train": {"epochs": 1, "batch_size": 2, "warmup_epochs": 0, "output_dir": str(tmp_path / "runs")},
            "trainer": {"name": "cached_latents", "latent_epochs": 1, "latent_views": 1},
        }
    )
    make_trainer(config, progress=True).fit()
    err = capsys.readouterr().err
    assert "encode latent views" in err and "encode validation" in err
