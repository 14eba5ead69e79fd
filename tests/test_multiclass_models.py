"""K classes through the models: GMS's two mask encodings round-trip label maps through the real TAESD,
GMS (both encodings) and the U-Net learn a 3-class task, a model folder keeps its labels, and the
trainer trains and selects on a dataset whose dataset.json declares three labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED, need
from gmseg.config import config_from_dict
from gmseg.data.io import write_image_png, write_label_map_png
from gmseg.data.splits import save_split
from gmseg.errors import ConfigError
from gmseg.first_stage import load_first_stage
from gmseg.labels import LabelSet
from gmseg.models import GMS, UNet, load_model
from gmseg.models.encodings import ColourEncoding, OneVsRestEncoding, make_encoding
from gmseg.training import train
from gmseg.training.trainer import class_scores

THREE = LabelSet(("background", "benign", "malignant"), (0, 1, 2))
BUSI = SHARED / "data" / "busi"


def pooled_class_dice(probability: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Dice of each foreground class over all pixels of all images (argmax of the probabilities)."""
    from monai.networks.utils import one_hot

    k = probability.shape[1]
    pred = one_hot(probability.argmax(1, keepdim=True), k).flatten(2)
    true = one_hot(target.long(), k).flatten(2)
    return (2 * (pred * true).sum((0, 2)) / (pred.sum((0, 2)) + true.sum((0, 2))))[1:].numpy()


def busi_three_class_maps(count: int = 16, size: int = 224) -> torch.Tensor:
    """(count, 1, size, size) class-index maps from BUSI training masks: a benign lesion (1) and a malignant
    one (2) in each map, the malignant drawn last where they overlap."""
    import pickle

    root = need(BUSI)
    with open(root / "busi_train_test_names.pkl", "rb") as f:
        train_names = [str(n) for n in pickle.load(f)["train"]["name_list"]]

    def load(name: str) -> np.ndarray:
        mask = Image.open(root / "masks" / f"{name}.png").convert("L").resize((size, size), Image.NEAREST)
        return np.asarray(mask) > 0

    benign = [n for n in train_names if n.startswith("benign")][:count]
    malignant = [n for n in train_names if n.startswith("malignant")][:count]
    maps = np.zeros((count, size, size), np.float32)
    for i, (b, m) in enumerate(zip(benign, malignant)):
        maps[i][load(b)] = 1
        maps[i][load(m)] = 2
    return torch.from_numpy(maps)[:, None]


@pytest.mark.parametrize("encoding, bar", [("colour", 0.98), ("one_vs_rest", 0.98)])
def test_encodings_round_trip_busi_label_maps_through_taesd(taesd_dir, encoding, bar):
    # Measured on these 16 maps: colour 0.991 / 0.996, one-vs-rest 0.993 / 0.997 (benign / malignant).
    target = busi_three_class_maps()
    coder = make_encoding(encoding, THREE)
    first_stage = load_first_stage(taesd_dir)
    with torch.no_grad():
        latent = coder.encode(first_stage, target)
        probability = coder.probabilities(first_stage, latent)
    assert latent.shape[1] == coder.latent_channels(4)
    assert probability.shape == (16, 3, 224, 224)
    assert torch.allclose(probability.sum(1), torch.ones(16, 224, 224), atol=1e-5)
    dice = pooled_class_dice(probability, target)
    assert (dice >= bar).all(), dice


def test_colour_encoding_puts_each_class_on_its_colour_and_back():
    coder = ColourEncoding(THREE)
    target = torch.tensor([[[[0.0, 1.0], [2.0, 1.0]]]])
    image = coder.to_image(target)
    assert image[0, :, 0, 0].tolist() == [-1, -1, -1] and image[0, :, 0, 1].tolist() == [1, 1, 1]
    probability = coder.from_decoded(image)
    assert probability.argmax(1).tolist() == [[[0, 1], [2, 1]]]
    assert (probability.amax(1) > 0.98).all()


def test_one_vs_rest_background_wins_below_one_half():
    coder = OneVsRestEncoding(THREE)
    foreground = torch.tensor([0.4, 0.6]).view(1, 2, 1, 1)
    scores = torch.cat([1 - foreground.amax(1, keepdim=True), foreground], 1)
    assert (scores / scores.sum(1, keepdim=True)).argmax(1).item() == 2
    assert coder.latent_channels(4) == 8
    with pytest.raises(ConfigError, match="binary masks use the release"):
        OneVsRestEncoding(LabelSet.binary("lesion"))
    with pytest.raises(ConfigError, match="mask_encoding 'rgb'"):
        make_encoding("rgb", THREE)


def test_class_scores_average_the_classes_present():
    target = torch.tensor([[[[0, 1], [1, 0]]], [[[0, 0], [0, 0]]]], dtype=torch.float32)
    prediction = torch.tensor([[[[0, 1], [2, 0]]], [[[0, 0], [0, 0]]]])
    dice, iou = class_scores(prediction, target, 3)
    # image 1: class 1 Dice 2*1/(1+2) = 2/3, class 2 predicted but absent: 0 -> mean 1/3; image 2: nothing: 1.
    assert dice.tolist() == pytest.approx([1 / 3, 1.0])
    assert iou.tolist() == pytest.approx([0.25, 1.0])


# ---------------------------------------------------------------------------------------- training
def make_three_class_folder(root: Path, count: int = 12, size: int = 64, seed: int = 0) -> Path:
    """Images with a bright disc (class 1) and a dark square (class 2) on noise, dataset.json with labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    names = []
    for i in range(count):
        image = rng.normal(128, 20, (size, size, 3))
        mask = np.zeros((size, size), np.uint8)
        cy, cx, r = rng.integers(14, size - 14, 2).tolist() + [int(rng.integers(6, 12))]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        y0, x0 = rng.integers(2, size - 18, 2)
        square = np.zeros_like(disc)
        square[y0 : y0 + 14, x0 : x0 + 14] = True
        image[disc] += 90
        image[square & ~disc] -= 90
        mask[disc] = 1
        mask[square & ~disc] = 2
        name = f"case{i:02d}"
        write_image_png(root / "images" / f"{name}.png", np.clip(image, 0, 255).astype(np.uint8))
        write_label_map_png(root / "masks" / f"{name}.png", mask, THREE)
        names.append(name)
    (root / "dataset.json").write_text(json.dumps({"name": "three", "labels": THREE.to_labels()}))
    save_split({"train": names[:-2], "test": names[-2:]}, root / "split.json")
    return root


@pytest.fixture(scope="module")
def three_class_data(tmp_path_factory) -> Path:
    return make_three_class_folder(tmp_path_factory.mktemp("three") / "data")


def three_class_config(root: Path, out: Path, model: dict, epochs: int = 6) -> object:
    model = dict(model)
    trainer = model.pop("trainer", {"name": "default"})
    return config_from_dict(
        {
            "data": {"root": str(root), "image_size": 64, "val_fraction": 0.2},
            "model": model,
            "trainer": trainer,
            "loss": {"dice_levels": ["out"]},
            "train": {"epochs": epochs, "batch_size": 4, "warmup_epochs": 0, "lr": 0.002, "output_dir": str(out)},
        }
    )


def losses(run: Path) -> list[float]:
    rows = (run / "train_log.csv").read_text().splitlines()
    header = rows[0].split(",")
    return [float(r.split(",")[header.index("loss")]) for r in rows[1:]]


@pytest.mark.parametrize(
    "model",
    [
        {"name": "gms", "mask_encoding": "colour", "ch": 16, "ch_mult": [1, 2, 2]},
        {"name": "gms", "ch": 16, "ch_mult": [1, 2, 2]},  # the default encoding: one-vs-rest
        {
            "name": "gms",
            "mask_encoding": "one_vs_rest",
            "ch": 16,
            "ch_mult": [1, 2, 2],
            "trainer": {"name": "cached_latents", "latent_epochs": 3, "cached_full_loss": True},
        },
        {"name": "unet", "channels": [8, 16, 32]},
    ],
    ids=["gms-colour", "gms-default-encoding", "gms-one-vs-rest-cached-latents", "unet"],
)
def test_a_few_epochs_on_three_classes_lower_the_loss_and_keep_the_labels(three_class_data, taesd_dir, tmp_path, model):
    if model["name"] == "gms":
        model = {**model, "vae": str(taesd_dir)}
    run = train(three_class_config(three_class_data, tmp_path, model), run_dir=tmp_path / "run", progress=False)
    curve = losses(run)
    assert curve[-1] < curve[0], curve
    folder = run / "checkpoints" / "best"
    stored = json.loads((folder / "config.json").read_text())
    assert stored["labels"] == {"background": 0, "benign": 1, "malignant": 2}
    loaded = load_model(folder)
    assert loaded.labels == THREE
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    probability = loaded.predict_proba(images)
    assert probability.shape == (2, 3, 64, 64)
    assert torch.allclose(probability.sum(1), torch.ones(2, 64, 64), atol=1e-4)
    if model["name"] == "gms":
        encoding = model.get("mask_encoding", "one_vs_rest")
        assert isinstance(loaded, GMS) and stored["mask_encoding"] == encoding
        if "trainer" in model:  # the cached views keep class-index masks for the full-loss epochs' Dice
            rows = (run / "train_log.csv").read_text().splitlines()
            dice = [float(r.split(",")[rows[0].split(",").index("loss_dice")]) for r in rows[1:]]
            assert dice[:3] == [0.0, 0.0, 0.0] and all(0 < d < 2 for d in dice[3:]), dice
        width = 8 if encoding == "one_vs_rest" else 4
        assert stored["mapping"]["out_channels"] == width
    else:
        assert isinstance(loaded, UNet) and stored["unet"]["out_channels"] == 3


def test_a_binary_model_folder_records_no_labels(tmp_path, tiny_vae_dir):
    model = GMS(
        {"mapping": {"in_channels": 4, "out_channels": 4, "ch": 16, "ch_mult": [1, 2, 2]}, "image_size": 32},
        first_stage_module=load_first_stage(tiny_vae_dir),
    )
    model.save_pretrained(tmp_path / "m")
    stored = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "labels" not in stored and "mask_encoding" not in stored
    assert load_model(tmp_path / "m").labels.is_binary


def test_train_test_and_predict_a_three_class_unet_from_the_command_line(three_class_data, tmp_path):
    from gmseg.cli import main

    run = tmp_path / "run"
    argv = ["train", "--config", "busi", "--set", f"data.root={three_class_data}", "--set", "data.split=null"]
    argv += ["--run-dir", str(run), "--no-progress", "--set", "data.augmentations=[hflip]"]
    argv += ["--set", "model.name=unet", "--set", "trainer.name=default", "--set", "model.channels=[8,16,32]"]
    argv += ["--set", "data.image_size=64", "--set", "train.epochs=2", "--set", "train.warmup_epochs=0"]
    assert main(argv) == 0
    out = tmp_path / "test"
    assert main(["test", "--model", str(run), "--data", str(three_class_data), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"dice_benign", "dice_malignant", "any_dice"} <= set(summary["metrics"])
    assert summary["metrics"]["dice_benign"]["n"] == 2 and (out / "report.png").is_file()
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"dice_benign", "dice_malignant", "hd95_malignant", "any_dice"} <= set(header)
    predicted = tmp_path / "predicted"
    argv = ["predict", "--model", str(run), "--input", str(three_class_data / "images"), "--output", str(predicted)]
    assert main(argv) == 0
    label_map = Image.open(predicted / "case00.png")
    assert label_map.mode == "P" and set(np.unique(np.asarray(label_map))) <= {0, 1, 2}
