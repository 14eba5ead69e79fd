"""gmseg.report_html: report.html beside every scored folder (binary and multi-class), escaping, the pictures
folder's safety, and the training page of ``gmseg plot --html``. The browser checks are tests/test_browser.py."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmseg.cli import main
from gmseg.errors import GmsegError
from gmseg.evaluate import run_evaluate
from gmseg.labels import LabelSet
from gmseg.report_html import PICTURES, picture_name
from gmseg.synthetic import synthetic_pair

#: a case name that is markup: it must show as text and run nothing
MARKUP_NAME = "<img src=x onerror=alert(1)>"
CLASSES = LabelSet(("background", "benign", "malignant"), (0, 1, 2))


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_binary_dataset(root: Path, n: int = 12, seed: int = 0, shift: int = 0) -> tuple[Path, list[str]]:
    """``root/{images,masks}`` of synthetic cases and ``root/pred-<shift>`` predictions: each case's mask moved
    sideways by a growing amount (plus ``shift``), so Dice falls case by case; case 3's prediction is empty
    (Dice 0: the worst). The first case is named like markup. Returns the prediction folder and the names."""
    rng = np.random.default_rng(seed)
    names = [MARKUP_NAME] + [f"case{i:03d}" for i in range(1, n)]
    pred_dir = root / f"pred-{shift}"
    for i, name in enumerate(names):
        image, mask = synthetic_pair(rng, 64)
        if not (root / "images" / f"{name}.png").is_file():
            save(root / "images" / f"{name}.png", image)
            save(root / "masks" / f"{name}.png", mask * 255)
        else:
            mask = (np.asarray(Image.open(root / "masks" / f"{name}.png")) > 0).astype(np.uint8)
        pred = np.zeros_like(mask) if i == 3 else np.roll(mask, (i % 6) + shift * (i % 3), axis=1)
        save(pred_dir / f"{name}.png", pred * 255)
    return pred_dir, names


def make_class_dataset(root: Path) -> Path:
    """A 3-class dataset (dataset.json) on a flat grey image, so every class colour in a picture is the
    overlay's: case 'b1' holds benign only, 'm1' malignant only, 'both' one of each."""
    boxes = {"b1": [(1, 10, 10)], "m1": [(2, 30, 30)], "both": [(1, 8, 8), (2, 34, 34)]}
    for name, parts in boxes.items():
        values = np.zeros((64, 64), np.uint8)
        for value, top, left in parts:
            values[top : top + 20, left : left + 20] = value
        save(root / "images" / f"{name}.png", np.full((64, 64, 3), 90, np.uint8))
        save(root / "masks" / f"{name}.png", values)
        save(root / "pred" / f"{name}.png", np.roll(values, 2, axis=0))
    (root / "dataset.json").write_text(json.dumps({"labels": CLASSES.to_labels()}))
    return root / "pred"


def rows_of(page: str) -> list[str]:
    return re.findall(r'<tr class="case" data-name="([^"]*)"', page)


def test_evaluate_writes_a_report_with_every_case_its_picture_and_the_summary(tmp_path):
    pred_dir, names = make_binary_dataset(tmp_path / "data")
    result = run_evaluate(pred_dir, tmp_path / "data", out_dir=tmp_path / "scored")
    page = (tmp_path / "scored" / "report.html").read_text(encoding="utf-8")
    assert rows_of(page) == [html.escape(n, quote=True) for n in names]  # one row per case, metrics.csv order
    for name in names:  # every case has its thumbnail and its large view beside the page
        for suffix in (".s.jpg", ".jpg"):
            picture = tmp_path / "scored" / PICTURES / f"{picture_name(name)}{suffix}"
            assert Image.open(picture).size[0] > 0
        assert f'src="{PICTURES}/{picture_name(name)}.s.jpg"' in page
    assert page.count('loading="lazy"') == len(names)
    dice = result.summary["metrics"]["dice"]
    assert f"{dice['mean']:.3f} ± {dice['std'] / np.sqrt(dice['n']):.3f}" in page  # mean ± SE
    assert f"median {dice['median']:.3f}, n {dice['n']}" in page
    assert "http://" not in page and "https://" not in page  # nothing from the network


def test_a_case_named_like_markup_is_text_in_the_page(tmp_path):
    pred_dir, _ = make_binary_dataset(tmp_path / "data", n=4)
    run_evaluate(pred_dir, tmp_path / "data", out_dir=tmp_path / "scored")
    page = (tmp_path / "scored" / "report.html").read_text(encoding="utf-8")
    assert MARKUP_NAME not in page
    assert html.escape(MARKUP_NAME) in page
    assert page.count("<script>") == 1  # the page's own, fixed script and nothing else


def test_the_report_of_a_multiclass_dataset_draws_one_colour_per_class(tmp_path):
    pred_dir = make_class_dataset(tmp_path / "data")
    run_evaluate(pred_dir, tmp_path / "data", out_dir=tmp_path / "scored")
    page = (tmp_path / "scored" / "report.html").read_text(encoding="utf-8")
    swatches = re.findall(r'<span class="swatch" style="background:(#[0-9a-f]{6})" data-class="(\d)">', page)
    expected = ["#" + "".join(f"{c:02x}" for c in CLASSES.colours[i]) for i in (1, 2)]
    assert swatches == [(expected[0], "1"), (expected[1], "2")]  # the legend: one colour per class
    assert ">benign (1)<" in page and ">malignant (2) <" in page
    assert 'data-classes="1"' in page and 'data-classes="2"' in page and 'data-classes="1 2"' in page

    def near(name: str, colour: tuple[int, int, int]) -> int:
        """Pixels of a case's large picture within JPEG's error of ``colour``."""
        picture = np.asarray(Image.open(tmp_path / "scored" / PICTURES / f"{picture_name(name)}.jpg"), np.int32)
        return int((np.abs(picture - np.asarray(colour)).max(axis=2) < 40).sum())

    white, red = CLASSES.colours[1], CLASSES.colours[2]
    assert near("b1", white) > 20 and near("b1", red) == 0  # benign outlined in its colour only
    assert near("m1", red) > 20 and near("m1", white) == 0
    assert near("both", white) > 20 and near("both", red) > 20


def test_the_report_follows_the_file_rule(tmp_path):
    pred_dir, _ = make_binary_dataset(tmp_path / "data", n=3)
    out = tmp_path / "scored"
    (out / PICTURES).mkdir(parents=True)
    (out / PICTURES / "mine.txt").write_text("a user's file")
    with pytest.raises(GmsegError, match="report_files already exists"):  # refused before anything is scored
        run_evaluate(pred_dir, tmp_path / "data", out_dir=out)
    assert (out / PICTURES / "mine.txt").read_text() == "a user's file" and not (out / "metrics.csv").exists()
    (out / PICTURES / "mine.txt").unlink()
    (out / PICTURES).rmdir()
    run_evaluate(pred_dir, tmp_path / "data", out_dir=out)
    with pytest.raises(GmsegError, match="already exist"):
        run_evaluate(pred_dir, tmp_path / "data", out_dir=out)
    run_evaluate(pred_dir, tmp_path / "data", out_dir=out, overwrite=True)  # the folder is replaced whole
    assert len(list((out / PICTURES).glob("*.jpg"))) == 6 and not list(out.glob(".*.tmp"))
    with pytest.raises(GmsegError, match="reads its inputs from"):  # never among the images it reads
        run_evaluate(pred_dir, tmp_path / "data", out_dir=tmp_path / "data" / "images", overwrite=True)


def test_evaluate_without_images_writes_no_report_and_an_explicit_images_folder_is_used(tmp_path, capsys):
    pred_dir, _ = make_binary_dataset(tmp_path / "data", n=3)
    run_evaluate(pred_dir, tmp_path / "data" / "masks", out_dir=tmp_path / "masks-root")  # masks/ knows images/
    assert (tmp_path / "masks-root" / "report.html").is_file()
    bare = tmp_path / "bare"
    bare.mkdir()
    for mask in (tmp_path / "data" / "masks").iterdir():
        (bare / mask.name).write_bytes(mask.read_bytes())
    run_evaluate(pred_dir, bare, out_dir=tmp_path / "no-images")
    assert not (tmp_path / "no-images" / "report.html").exists()
    images = str(tmp_path / "data" / "images")
    args = ["evaluate", "--pred", str(pred_dir), "--gt", str(bare), "--out", str(tmp_path / "cli"), "--images"]
    assert main([*args, images]) == 0
    assert len(rows_of((tmp_path / "cli" / "report.html").read_text(encoding="utf-8"))) == 3
    assert main([*args, str(tmp_path / "nowhere")]) == 2
    assert "images folder not found" in capsys.readouterr().err


def test_plot_html_writes_the_curves_and_the_log(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "train_log.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "loss", "val_dice", "lr"])
        for epoch, (loss, dice) in enumerate([(0.9, 0.4), (0.5, 0.7), (0.4, 0.65)], start=1):
            writer.writerow([epoch, loss, dice, 1e-3])
    assert main(["plot", str(run), "--html"]) == 0
    page = (run / "curves.html").read_text(encoding="utf-8")
    assert (run / "curves.png").is_file() and 'src="data:image/png;base64,' in page
    assert "Best validation Dice 0.7000 at epoch 2" in page
    assert page.count("<tr>") == 1 + 3  # header and one row per epoch
    assert not list(run.glob(".curves.*"))


def test_generalize_and_test_write_a_report_for_every_dataset_and_stage(tmp_path):
    """``gmseg generalize`` (hence ``gmseg test`` under it) leaves report.html beside each metrics.csv."""
    from gmseg.config import config_from_dict
    from gmseg.generalize import run_generalize
    from gmseg.models import build_model
    from gmseg.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", n_train=2, n_test=2, size=32, seed=1)
    config = config_from_dict(
        {"name": "tiny", "data": {"root": str(data), "image_size": 32}},
        ["model.name=unet", "model.channels=[4,8]"],
    )
    run_generalize(build_model(config), [("synth", data)], tmp_path / "gen", device="cpu", progress=False)
    for stage, n in (("test", 2), ("all", 4)):
        folder = tmp_path / "gen" / "synth" / stage
        with open(folder / "metrics.csv", newline="") as handle:
            names = [row["name"] for row in csv.DictReader(handle)]
        page = (folder / "report.html").read_text(encoding="utf-8")
        assert len(names) == n and rows_of(page) == names
        assert all((folder / PICTURES / f"{picture_name(name)}.s.jpg").is_file() for name in names)


def test_a_volume_test_reports_every_case_at_its_fullest_slices(tmp_path):
    """``gmseg test`` on an MSD task: one row per case scored in 3D, the thumbnail its fullest slice, the
    large view its three fullest side by side, and a note naming them."""
    pytest.importorskip("SimpleITK")
    from gmseg.config import config_from_dict
    from gmseg.report_html import VOLUME_SLICES
    from gmseg.testing import run_test
    from gmseg.training import train
    from test_volumes_pipeline import make_msd, unet_config

    msd = make_msd(tmp_path / "Task99_Toy", n=4)
    run = train(
        config_from_dict(unet_config(msd, tmp_path / "runs", epochs=1)), run_dir=tmp_path / "run", progress=False
    )
    run_test(run / "checkpoints" / "best", msd, tmp_path / "test", stage="all", progress=False)
    with open(tmp_path / "test" / "metrics.csv", newline="") as handle:
        names = [row["name"] for row in csv.DictReader(handle)]
    page = (tmp_path / "test" / "report.html").read_text(encoding="utf-8")
    assert len(names) == 4 and rows_of(page) == names
    assert page.count("along axis 0 (fullest ") == 2 * len(names)  # the thumbnail's title and the caption
    assert ">mean over classes<" in page and ">anterior<" in page and ">mean_dice<" in page
    for name in names:
        thumb = Image.open(tmp_path / "test" / PICTURES / f"{picture_name(name)}.s.jpg")
        large = Image.open(tmp_path / "test" / PICTURES / f"{picture_name(name)}.jpg")
        assert thumb.size == (20, 24)  # one (Y, X) slice of the (8, 24, 20) volume: z has the largest spacing
        assert large.size == (VOLUME_SLICES * 20 + (VOLUME_SLICES - 1) * 6, 24)
