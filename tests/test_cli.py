"""The `gmseg` command end to end: import-official, predict (no ground truth), bad inputs."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gmseg.cli import main


@pytest.fixture
def imported(parity, tmp_path) -> str:
    out = tmp_path / "release-model"
    code = main(
        [
            "import-official",
            "--lmm",
            str(parity / "lmm_official.pth"),
            "--vae",
            str(parity / "tiny_vae.ckpt"),
            "--vae-config",
            str(parity / "tiny_vae.yaml"),
            "--image-size",
            "64",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return str(out)


def save_fixture_images(parity, folder) -> list[str]:
    io = load_file(str(parity / "pipeline_io.safetensors"))
    folder.mkdir()
    names = []
    for index, image in enumerate(io["image"]):
        pixels = ((image.permute(1, 2, 0).numpy() + 1) / 2 * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"case{index}.png")
        names.append(f"case{index}")
    return names


def test_import_official_then_predict_reproduces_the_release(parity, imported, tmp_path):
    names = save_fixture_images(parity, tmp_path / "images")
    out = tmp_path / "predictions"
    assert (
        main(["predict", "--model", imported, "--input", str(tmp_path / "images"), "--output", str(out), "--save-prob"])
        == 0
    )
    expected = load_file(str(parity / "pipeline_io.safetensors"))["pred_prob"]
    for index, name in enumerate(names):
        probability = np.load(out / f"{name}.prob.npy")
        assert probability.dtype == np.float32 and probability.shape == (64, 64)
        reference = expected[index, 0].numpy()
        assert np.abs(probability - reference).max() / np.abs(reference).max() < 1e-4
        mask = np.asarray(Image.open(out / f"{name}.png"))
        assert set(np.unique(mask)) <= {0, 255}
        decided = np.abs(reference - 0.5) > 1e-4
        assert np.array_equal((mask > 0)[decided], (reference > 0.5)[decided])


def test_predict_keeps_original_size_reports_bad_files_and_fails(parity, imported, tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)).save(folder / "wide.jpg")
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(folder / "gray.bmp")
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = main(
        ["predict", "--model", imported, "--input", str(folder), "--output", str(out), "--save-prob", "--overlay"]
    )
    assert code == 1
    assert "broken.png" in capsys.readouterr().out
    assert np.asarray(Image.open(out / "wide.png")).shape == (90, 130)
    assert np.load(out / "wide.prob.npy").shape == (90, 130)
    assert np.asarray(Image.open(out / "gray.png")).shape == (40, 40)
    assert Image.open(out / "wide.overlay.png").size == (130, 90)
    assert not (out / "broken.png").exists()


def test_import_official_refuses_a_crafted_pickle(parity, tmp_path, capsys):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "best_model.pth"
    torch.save({"model": Evil()}, evil)
    code = main(
        [
            "import-official",
            "--lmm",
            str(evil),
            "--vae",
            str(parity / "tiny_vae.ckpt"),
            "--vae-config",
            str(parity / "tiny_vae.yaml"),
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "m").exists()


def test_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    assert (
        main(["predict", "--model", str(tmp_path / "nope"), "--input", str(tmp_path), "--output", str(tmp_path / "o")])
        == 2
    )
    assert "not a gmseg model folder" in capsys.readouterr().err
