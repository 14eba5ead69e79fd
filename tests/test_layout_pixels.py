"""A 2D file read through a layout (nnU-Net raw dataset of PNGs) gives training exactly the pixels 2D
prediction gives the model for the same file: 16-bit data scaled by its declared bit depth, palettes as
their colours, alpha dropped; true volumes keep nnU-Net's per-modality z-score."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gmseg.config import config_from_dict
from gmseg.data.layouts import open_layout
from gmseg.data.normalization import VolumeInput
from gmseg.data.readers import read_image
from gmseg.data.slicing import take_slice
from gmseg.data.volume_dataset import VolumeSliceDataset, fit_layout_input
from gmseg.labels import LabelSet
from gmseg.predict import image_batches
from gmseg.training import make_dataset

SIZE = 32  # the files are 24 x 28: both paths resize
KINDS = ("uint8", "uint16", "sbit12", "palette", "rgba")


def with_sbit(path: Path, bits: int) -> None:
    """Insert a PNG sBIT chunk (``bits`` significant bits of grey) after IHDR, as 12-bit scanners write."""
    data = path.read_bytes()
    end = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR body, CRC
    chunk = struct.pack(">I4sB", 1, b"sBIT", bits) + struct.pack(">I", zlib.crc32(b"sBIT" + bytes([bits])))
    path.write_bytes(data[:end] + chunk + data[end:])


def save_image(path: Path, label: np.ndarray, kind: str, rng: np.random.Generator) -> None:
    """One input file of ``kind``; 16-bit kinds hold values far above 255 (up to ~3000 / 4095)."""
    base = label * 0.4 + rng.uniform(0.1, 0.5, label.shape)  # 0.1 .. 0.9
    if kind == "uint8":
        Image.fromarray((base * 255).astype(np.uint8)).save(path)
    elif kind == "uint16":
        Image.fromarray((base * 3300).astype(np.uint16)).save(path)
    elif kind == "sbit12":
        Image.fromarray((base * 4095).astype(np.uint16)).save(path)
        with_sbit(path, 12)
    elif kind == "palette":
        image = Image.fromarray((label + rng.integers(0, 2, label.shape)).astype(np.uint8), mode="L").convert("P")
        image.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * (253 * 3))
        image.save(path)
    else:  # rgba: alpha carries no anatomy
        rgb = np.repeat((base * 255).astype(np.uint8)[..., None], 3, axis=2)
        alpha = np.full(label.shape + (1,), 128, np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(path)


def make_png_dataset(root: Path, kind: str, n: int = 3) -> Path:
    """An nnU-Net raw dataset of 2D PNGs (imagesTr/CASE_0000.png, labelsTr/CASE.png, dataset.json)."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        label = np.zeros((24, 28), np.uint8)
        label[4 + i : 12 + i, 5:15] = 1
        save_image(root / "imagesTr" / f"case_{i:03d}_0000.png", label, kind, rng)
        Image.fromarray(label).save(root / "labelsTr" / f"case_{i:03d}.png")
    meta = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "cell": 1}, "numTraining": n}
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".png"}))
    return root


def training_inputs(root: Path, intensity: str = "none") -> tuple[list[Path], list[torch.Tensor]]:
    """What training feeds the model for each item, as the trainer builds it (``batch["image"] * 2 - 1``
    of the unaugmented dataset), with the file each item came from."""
    config = config_from_dict(
        {
            "name": "pixels",
            "data": {"root": str(root), "image_size": SIZE, "augmentations": [], "intensity": intensity},
            "model": {"name": "unet", "channels": [8, 16, 32]},
            "train": {"epochs": 1, "warmup_epochs": 0, "seed": 0},
        }
    )
    layout = open_layout(root)
    names = [c.name for c in layout.cases()]
    record = fit_layout_input(layout, names, seed=0, axis=None)
    dataset = make_dataset(config, names, augment=False, volume_input=record)
    files = [layout.case(ref.case).images[0] for ref in dataset.slices]
    return files, [dataset[i]["image"] * 2 - 1 for i in range(len(dataset))]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("intensity", ["none", "clahe"])
def test_training_item_equals_what_predict_feeds_the_model(kind, intensity, tmp_path):
    root = make_png_dataset(tmp_path / "Dataset950_Pixels", kind)
    files, trained = training_inputs(root, intensity)
    assert len(files) == 3
    (paths, _, batch, failed) = next(iter(image_batches(files, SIZE, len(files), intensity)))  # gmseg predict
    assert not failed and paths == files
    for index, (path, seen) in enumerate(zip(files, trained)):
        assert seen.shape == (3, SIZE, SIZE)
        torch.testing.assert_close(seen, batch[index], atol=1e-6, rtol=0, msg=f"{kind}: {path}")


@pytest.mark.parametrize("kind", KINDS)
def test_training_pixels_are_the_2d_readers_pixels(kind, tmp_path):
    """Before any resize: the slice's pixels are read_image's, value for value."""
    root = make_png_dataset(tmp_path / "Dataset951_Raw", kind)
    layout = open_layout(root)
    names = [c.name for c in layout.cases()]
    dataset = VolumeSliceDataset(layout, names, fit_layout_input(layout, names, seed=0, axis=None))
    for index, ref in enumerate(dataset.slices):
        image, mask = dataset._pair(index)
        expected = read_image(layout.case(ref.case).images[0])
        np.testing.assert_array_equal(image, expected)
        assert mask.shape == expected.shape[:2] and mask.max() == 1


def test_16_bit_values_above_255_are_scaled_not_clipped(tmp_path):
    """The bug: training clipped raw 16-bit values to 255 (an all-white image) where prediction scaled them."""
    root = make_png_dataset(tmp_path / "Dataset952_Bits", "uint16")
    layout = open_layout(root)
    names = [c.name for c in layout.cases()]
    dataset = VolumeSliceDataset(layout, names, fit_layout_input(layout, names, seed=0, axis=None))
    image = np.asarray(dataset._pair(0)[0], dtype=np.float64)
    raw = np.asarray(Image.open(layout.case(dataset.slices[0].case).images[0]), dtype=np.float64)
    assert raw.min() > 255  # every raw value would have been clipped to white
    np.testing.assert_allclose(image[..., 0], np.clip(np.rint(raw / 257.0), 0, 255))


class Stop(Exception):
    """Raised by the stand-in model once it has seen its batch: nothing is predicted or written."""


def capturing_predictor(seen: list[torch.Tensor]) -> Any:
    """A predictor (gmseg.inference's contract: ``spec`` and a call on a batch) that keeps its input."""

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch)
        raise Stop

    predictor.spec = SimpleNamespace(image_size=SIZE, intensity="none", labels=LabelSet.binary(), threshold=0.5)
    return predictor


def test_predict_on_a_png_with_a_layout_trained_model_feeds_the_same_pixels(tmp_path, monkeypatch):
    """The other direction: ``gmseg predict`` of a model trained on the 2D nnU-Net dataset (its folder records
    ``volume``: scheme rgb) takes a PNG through the 2D path, whose pixels are now the training ones."""
    import gmseg.predict

    root = make_png_dataset(tmp_path / "Dataset953_Predict", "uint16")
    files, trained = training_inputs(root)
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(gmseg.predict, "make_predictor", lambda *args, **kwargs: capturing_predictor(seen))
    model = SimpleNamespace(volume_input=VolumeInput(scheme="rgb", modality="grey"))
    with pytest.raises(Stop):
        gmseg.predict.predict_files(
            model, files, tmp_path / "out", batch_size=3, device="cpu", progress=False, workers=0
        )
    for index, expected in enumerate(trained):
        torch.testing.assert_close(seen[0][index], expected, atol=1e-6, rtol=0)
    assert not (tmp_path / "out").exists() or not any(p.suffix == ".png" for p in (tmp_path / "out").iterdir())


def test_test_verb_feeds_the_same_pixels(tmp_path, monkeypatch):
    """``gmseg test`` on the dataset (through gmseg.predict's one loop) feeds the model what training saw."""
    import gmseg.predict
    from gmseg.testing import run_test

    root = make_png_dataset(tmp_path / "Dataset954_Test", "sbit12")
    files, trained = training_inputs(root)
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(gmseg.predict, "make_predictor", lambda *args, **kwargs: capturing_predictor(seen))
    model = SimpleNamespace(volume_input=VolumeInput(scheme="rgb", modality="grey"))
    with pytest.raises(Stop):
        run_test(model, root, tmp_path / "out", stage="all", batch_size=len(files), device="cpu", progress=False)
    order = [case.images[0] for case in open_layout(root).cases()]  # the order gmseg test predicts them in
    for file, expected in zip(files, trained):
        torch.testing.assert_close(seen[0][order.index(file)], expected, atol=1e-6, rtol=0)


def test_true_volumes_keep_the_per_volume_zscore(tmp_path):
    """A NIfTI dataset's slices are still nnU-Net's z-score mapped to pixels, not a 2D reader's scaling."""
    import SimpleITK as sitk

    root = tmp_path / "Dataset955_Volumes"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        label = np.zeros((4, 12, 10), np.uint8)
        label[1:3, 3:8, 2:7] = 1
        image = (label * 900.0 + rng.normal(400, 50, label.shape)).astype(np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(image), str(root / "imagesTr" / f"vol_{i:03d}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(root / "labelsTr" / f"vol_{i:03d}.nii.gz"))
    meta = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2}
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii.gz"}))
    layout = open_layout(root)
    names = [c.name for c in layout.cases()]
    record = fit_layout_input(layout, names, seed=0, axis=None)
    assert record == VolumeInput(scheme="zscore", modality="T2")
    dataset = VolumeSliceDataset(layout, names, record, empty_fraction=0.0)
    for index, ref in enumerate(dataset.slices):
        volume = layout.load_case(layout.case(ref.case))[0].array
        expected = record.pixels(take_slice(volume, 0, ref.index), record.statistics(volume))
        np.testing.assert_array_equal(dataset._pair(index)[0][..., 0], expected)
