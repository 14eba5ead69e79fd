"""Issue #41, parts C, D, E and G: every input validated where it enters, one line instead of a traceback,
no silent wrong score, checks before any work. Each class is shown on a case the issue lists and on a
variant of our own."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmseg.bounds import check_mask_threshold
from gmseg.cli import main
from gmseg.config import config_from_dict, load_config
from gmseg.data.prepare import prepare_folders
from gmseg.data.splits import load_split, save_split, with_validation
from gmseg.errors import ConfigError, DataError, GmsegError
from gmseg.evaluate import parse_size, run_evaluate
from gmseg.generalize import run_generalize
from gmseg.models import UNet, read_model_config
from gmseg.models.gms import GMSConfig
from gmseg.models.unet import unet_arguments
from gmseg.synthetic import make_synthetic_dataset
from gmseg.testing import run_test


def mask_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def box(value: int = 255, size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[4:10, 4:10] = value
    return mask


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI: exit status 2, no traceback, and the message holds every expected fragment."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err, (fragment, err)
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=6, n_test=2, size=32, seed=3)


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory) -> Path:
    """An untrained U-Net model folder: enough for the checks that must come before any prediction."""
    folder = tmp_path_factory.mktemp("unet")
    UNet(unet_arguments([4, 8], 32)).save_pretrained(folder)
    return folder


def yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data)


def unet_run_config(root: Path, out: Path, **data_options) -> dict:
    return {
        "name": "v",
        "data": {"root": str(root), "image_size": 32, "augmentations": [], **data_options},
        "model": {"name": "unet", "channels": [4, 8], "num_res_units": 0},
        "train": {"epochs": 2, "batch_size": 2, "warmup_epochs": 0, "output_dir": str(out), "seed": 1},
    }


# ------------------------------------------------------------------------------ C: silent wrong scores


def test_generalize_in_domain_without_a_split_refuses_before_predicting(data, tmp_path):
    plain = tmp_path / "plain"
    (plain / "images").mkdir(parents=True)
    (plain / "masks").mkdir()
    for name in ("case_000", "case_001"):
        for kind in ("images", "masks"):
            (plain / kind / f"{name}.png").write_bytes((data / kind / f"{name}.png").read_bytes())
    with pytest.raises(ConfigError, match="no split.json.*training ones included"):
        run_generalize("no/such/model", [("plain", plain)], tmp_path / "out", in_domain="plain")
    assert not (tmp_path / "out").exists()


def test_standard_protocol_refuses_validation_names_that_are_test_names():
    split = {"train": ["a", "b"], "val": ["c"], "test": ["c", "d"]}
    with pytest.raises(DataError, match="validation and test lists share 1"):
        with_validation(split, 0.1, protocol="standard")
    with pytest.raises(DataError, match="share"):  # variant: no validation carving asked for, still refused
        with_validation(split, 0.0, protocol="standard")
    assert with_validation(split, 0.1, protocol="paper")["val"] == ["c", "d"]  # the release's protocol on purpose


def test_evaluate_names_missing_predictions_unless_told(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for name in ("a", "b", "c"):
        mask_png(gt / f"{name}.png", box())
    mask_png(pred / "a.png", box())
    with pytest.raises(DataError, match="prediction missing") as error:
        run_evaluate(pred, gt)
    assert "b:" in str(error.value) and "c:" in str(error.value)
    skipped = run_evaluate(pred, gt, out_dir=tmp_path / "skip", missing="skip")
    assert [r["name"] for r in skipped.rows] == ["a"]
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["counts"]["n_missing_predictions"] == 2
    # variant: scored as empty masks, the two missing cases count as Dice 0 in the mean
    empty = run_evaluate(pred, gt, out_dir=tmp_path / "empty", missing="empty")
    assert [r["dice"] for r in empty.rows] == [1.0, 0.0, 0.0]
    assert empty.summary["settings"]["missing"] == "empty" and "2 prediction(s) missing" in empty.warnings[0]


def test_a_prediction_without_ground_truth_is_still_an_error(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    mask_png(gt / "a.png", box())
    mask_png(pred / "a.png", box())
    mask_png(pred / "stray.png", box())
    with pytest.raises(DataError, match="stray: ground-truth mask missing"):
        run_evaluate(pred, gt, missing="skip")


@pytest.mark.parametrize("value", [0, 1, 2, float("nan"), float("inf"), -0.1, True])
def test_one_mask_threshold_bound_for_every_verb(value, tmp_path):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        check_mask_threshold(value)
    with pytest.raises(ConfigError, match="data.mask_threshold must be"):
        config_from_dict({"data": {"mask_threshold": value}})
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        prepare_folders(tmp_path, tmp_path, tmp_path / "out", mask_suffix="_m", mask_threshold=value)
    assert check_mask_threshold(0.5) == 0.5 and check_mask_threshold(None) is None


def test_prepare_refuses_a_threshold_that_empties_the_masks(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(images.mkdir(exist_ok=True) or images / f"{i}.png")
        mask_png(masks / f"{i}.png", box(1))  # 0/1 masks: 1 of 255 is below any threshold
    with pytest.raises(DataError, match="empties 4 of 4 masks"):
        prepare_folders(images, masks, tmp_path / "out", mask_threshold=0.5)
    assert not (tmp_path / "out").exists()
    report = prepare_folders(images, masks, tmp_path / "ok")  # the mask rule reads them
    assert report.n_pairs == 4 and not any("empty" in note for note in report.notes)
    # variant: masks that are empty in the files themselves are said so in the report
    for i in range(4):
        mask_png(masks / f"{i}.png", np.zeros((16, 16), np.uint8))
    report = prepare_folders(images, masks, tmp_path / "blank")
    assert any("4 of 4 masks are empty" in note for note in report.notes)


def test_unet_config_json_is_range_checked_like_gms(unet_folder, tmp_path):
    config = json.loads((unet_folder / "config.json").read_text())
    folder = tmp_path / "bad"
    folder.mkdir()
    for change, message in [
        ({"threshold": 5}, "threshold must be a probability strictly between 0 and 1, got 5"),
        ({"colour": "red"}, "colour is not a U-Net config key"),
        ({"unet": {**config["unet"], "channels": [-4, 8]}}, "unet.channels must be"),
        ({"unet": {**config["unet"], "dropuot": 0.1}}, "unet.dropuot is not a MONAI UNet argument"),
        ({"image_size": 800000}, "image_size must be an integer in [8, 4096]"),
    ]:
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ConfigError) as error:
            read_model_config(folder)
        assert str(folder / "config.json") in str(error.value) and message in str(error.value)


def test_validation_set_without_foreground_does_not_select_epoch_one(data, tmp_path, capsys):
    from gmseg.training import train

    root = tmp_path / "data"
    for kind in ("images", "masks"):
        (root / kind).mkdir(parents=True)
        for path in (data / kind).iterdir():
            (root / kind / path.name).write_bytes(path.read_bytes())
    names = sorted(p.stem for p in (root / "images").iterdir())
    for name in names[4:6]:
        mask_png(root / "masks" / f"{name}.png", np.zeros((32, 32), np.uint8))
    save_split({"train": names[:4], "val": names[4:6], "test": names[6:]}, root / "split.json")
    run = train(config_from_dict(unet_run_config(root, tmp_path / "runs")), run_dir=tmp_path / "run", progress=False)
    assert "hold no foreground" in capsys.readouterr().err
    from gmseg.training import checkpoint_epoch

    assert checkpoint_epoch(run / "checkpoints" / "best") == 2  # the last epoch, not epoch 1's Dice of 1.0


# --------------------------------------------------------------------------------- D: no tracebacks


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochs=[1", "is not valid YAML"),
        ("train.epochs=!!python/object/apply:os.system [ls]", "tags such as !!python are refused"),
        ("data.root=!!python/name:os.system", "tags such as !!python are refused"),  # variant
    ],
)
def test_set_values_that_are_not_plain_yaml(override, fragment, capsys):
    one_line_error(capsys, ["train", "--config", "busi", "--set", override], fragment, override)


def test_prepare_bad_thresholds_and_out_here_are_one_line(tmp_path, capsys, monkeypatch):
    images, masks = tmp_path / "in" / "images", tmp_path / "in" / "masks"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(images.mkdir(parents=True) or images / "a.png")
    mask_png(masks / "a.png", box())
    base = ["prepare", "folders", "--images", str(images), "--masks", str(masks)]
    for value in ("2", "nan"):
        one_line_error(capsys, [*base, "--out", str(tmp_path / "o"), "--mask-threshold", value], "strictly between")
    monkeypatch.chdir(tmp_path / "in")
    one_line_error(capsys, [*base, "--out", "."], "is the current folder")
    one_line_error(capsys, [*base, "--out", ".."], "a folder above the current one")  # variant
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["images", "masks"]


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda c: c["mapping"].update(ch=-16), "mapping.ch must be a multiple of 16"),
        (lambda c: c["mapping"].update(ch=10**9), "mapping.ch must be a multiple of 16"),
        (lambda c: c["mapping"].update(depth=3), "mapping.depth is not a mapping key"),
        (lambda c: c["mapping"].update(ch_mult=[]), "mapping.ch_mult must be 1 to 8 integers"),
        (lambda c: c.update(_class_name=["GMS"]), "_class_name must be a string"),
        (lambda c: c["first_stage"].update(path=3), "first_stage.path must be a non-empty string"),
        (lambda c: c.update(image_size=800000), "image_size must be a multiple of 8 in [8, 4096]"),
        (lambda c: c["first_stage"].update(kind="zip"), "first_stage.kind must be one of"),  # variant
        (lambda c: c["mapping"].update(in_channels=True), "mapping.in_channels must be an integer"),  # variant
    ],
)
def test_gms_model_folder_config_is_one_line_naming_file_and_key(change, fragment, tmp_path, capsys):
    config = GMSConfig().to_dict()
    change(config)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    argv = ["predict", "--model", str(tmp_path / "model"), "--input", str(image), "--output", str(tmp_path / "p")]
    err = one_line_error(capsys, argv, str(tmp_path / "model" / "config.json"), fragment)
    assert "Hugging Face Hub" not in err


def test_predict_overlay_truth_of_another_size_or_unreadable_is_left_off(unet_folder, tmp_path, capsys):
    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((32, 32, 3), 80, np.uint8)).save(images / f"{name}.png")
    mask_png(gt / "a.png", box(size=20))  # another size
    (gt / "b.png").write_bytes(b"not a png")  # unreadable (variant)
    mask_png(gt / "c.png", box(size=32))
    out = tmp_path / "out"
    argv = ["predict", "--model", str(unet_folder), "--input", str(images), "--output", str(out), "--overlay"]
    assert main([*argv, "--gt", str(gt)]) == 0
    text = capsys.readouterr().out
    assert (
        "Wrote 3 prediction(s)" in text
        and "a.png: 20x20 but its image is 32x32" in text
        and "b.png: unreadable" in text
    )
    assert sorted(p.name for p in out.glob("*.overlay.png")) == ["a.overlay.png", "b.overlay.png", "c.overlay.png"]
    one_line_error(capsys, [*argv[:-1], "--gt", str(tmp_path / "nogt")], "--gt", "is not a folder")
    argv = ["predict", "--model", str(unet_folder), "--input", str(tmp_path / "nodir") + "/", "--output", str(out)]
    one_line_error(capsys, argv, "nodir/: no such file or folder")


def test_import_official_of_a_partial_checkpoint(tmp_path, capsys):
    import torch

    from gmseg.mapping import LatentMappingModel

    state = LatentMappingModel(ch=16, ch_mult=[1, 2]).state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("convds0")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    argv = ["import-official", "--lmm", str(tmp_path / "partial.pth"), "--vae", "no/vae", "--out", str(tmp_path / "m")]
    one_line_error(capsys, argv, "partial.pth holds only some of the GMS mapping model's layers")
    stemless = {k: v for k, v in state.items() if not k.startswith("conv")}  # variant: no block at all
    torch.save({"model": stemless}, tmp_path / "stem.pth")
    argv[2] = str(tmp_path / "stem.pth")
    one_line_error(capsys, argv, "stem.pth")
    assert not (tmp_path / "m").exists()


def test_pickled_weights_refused_or_damaged_are_told_apart(tmp_path):
    import os

    import torch

    from gmseg.first_stage import load_state_dict_safely

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    with (tmp_path / "plain.pth").open("wb") as handle:
        pickle.dump({"model": Payload()}, handle)  # a plain pickle that names code
    with pytest.raises(GmsegError, match="refused") as error:
        load_state_dict_safely(tmp_path / "plain.pth")
    assert "truncated" not in str(error.value)
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "ok.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "ok.pth").read_bytes()[:-40])
    with pytest.raises(GmsegError, match="truncated, corrupt"):
        load_state_dict_safely(tmp_path / "cut.pth")


def test_dataset_json_label_value_above_255(tmp_path, capsys):
    mask_png(tmp_path / "gt" / "masks" / "a.png", box(1))
    mask_png(tmp_path / "pred" / "a.png", box(1))
    labels = {"background": 0, "lesion": 1, "cyst": 300}
    (tmp_path / "gt" / "dataset.json").write_text(json.dumps({"labels": labels}))
    one_line_error(capsys, ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")], "cyst=300")


def test_evaluate_size_has_an_upper_bound(tmp_path, capsys):
    mask_png(tmp_path / "gt" / "a.png", box())
    mask_png(tmp_path / "pred" / "a.png", box())
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    with pytest.raises(ConfigError, match=r"\[1, 4096\]"):  # the listed case, checked without allocating
        parse_size("100000")
    one_line_error(capsys, [*argv, "--size", "8192"], "[1, 4096]")  # (a regression costs 64 MB, not 10 GB)
    one_line_error(capsys, [*argv, "--mask-threshold", "1"], "strictly between 0 and 1")  # variant


def test_non_utf8_config_and_resume(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"train:\n  epochs: \xff\xfe\n")
    one_line_error(capsys, ["train", "--config", str(config)], str(config), "not UTF-8")
    run = tmp_path / "run"  # variant: a run folder whose config.yaml is not text
    run.mkdir()
    (run / "config.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff")
    one_line_error(capsys, ["train", "--resume", str(run)], "not UTF-8")
    (run / "train_log.csv").write_bytes(b"epoch,loss\n1,\xff\xfe\n")
    one_line_error(capsys, ["plot", str(run), "--out", str(tmp_path / "c.png")], "train_log.csv is not a training log")


def test_resume_with_a_non_utf8_run_record_is_one_line(data, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_dump(unet_run_config(data, tmp_path / "runs") | {"name": "r"}))
    run = tmp_path / "run"
    assert (
        main(["train", "--config", str(config), "--run-dir", str(run), "--set", "train.epochs=1", "--no-progress"]) == 0
    )
    (run / "run_info.json").write_bytes(b"[\xff\xfe]")
    argv = ["train", "--resume", str(run), "--set", "train.epochs=2", "--no-progress"]
    one_line_error(capsys, argv, "run_info.json is not the run's JSON record")


# ---------------------------------------------------------------------- E: checks in time, true messages


def test_training_nine_classes_is_refused_before_the_run_folder(data, tmp_path):
    from gmseg.training import train

    root = tmp_path / "data"
    for kind in ("images", "masks"):
        (root / kind).mkdir(parents=True)
        for path in (data / kind).iterdir():
            (root / kind / path.name).write_bytes(path.read_bytes())
    (root / "split.json").write_text((data / "split.json").read_text())
    labels = {"background": 0, **{f"c{i}": i for i in range(1, 9)}}
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    with pytest.raises(GmsegError, match="declares 9 classes.*at most 8"):
        train(config_from_dict(unet_run_config(root, tmp_path / "runs")), run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_test_checks_its_arguments_before_predicting(unet_folder, data, tmp_path):
    for options, message in [
        ({"size": 8192}, "size must be"),
        ({"mask_threshold": 1.0}, "strictly between 0 and 1"),
        ({"empty": "lenient"}, "empty must be one of"),  # variant
    ]:
        with pytest.raises(ConfigError, match=message):
            run_test(unet_folder, data, tmp_path / "out", **options)
        assert not (tmp_path / "out").exists()


def test_generalize_checks_stages_first_and_scores_a_stage_once(unet_folder, data, tmp_path):
    with pytest.raises(GmsegError, match="no stage 'tset'"):
        run_generalize(unet_folder, [("d", data)], tmp_path / "typo", stages=["test", "tset"])
    assert not (tmp_path / "typo").exists()
    result = run_generalize(unet_folder, [("d", data)], tmp_path / "out", stages=["test", "test"])
    assert [row["stage"] for row in result.rows] == ["test"]


def test_messages_name_the_right_path_and_problem(unet_folder, data, tmp_path, capsys):
    # --config a folder
    one_line_error(capsys, ["train", "--config", str(tmp_path)], "is a folder")
    # --data pointing at the images folder itself
    argv = ["test", "--model", str(unet_folder), "--out", str(tmp_path / "o")]
    one_line_error(capsys, [*argv, "--data", str(data / "images")], "has no images/ folder", "pass its parent")
    # an empty test list
    empty = tmp_path / "split.json"
    empty.write_text(json.dumps({"train": ["case_000"], "test": []}))
    one_line_error(capsys, [*argv, "--data", str(data), "--split", str(empty)], "lists no image")
    # variant: --data that does not exist
    one_line_error(capsys, [*argv, "--data", str(tmp_path / "nothing")], "is not a folder")


def test_offline_demo_says_the_hub_is_unreachable_and_nothing_is_cached(tmp_path, capsys, monkeypatch):
    import warnings

    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        err = one_line_error(capsys, ["demo", "--out", str(tmp_path / "demo")], "Hub is unreachable", "local cache")
    assert "does not appear to have a file named" not in err
    assert not [w for w in caught if "local_dir_use_symlinks" in str(w.message)]
    # variant: a model given as a Hub id, offline, says the same instead of a generic Hub failure
    argv = ["predict", "--model", "someone/not-cached", "--input", str(tmp_path), "--output", str(tmp_path / "p")]
    one_line_error(capsys, argv, "Hub is unreachable", "someone/not-cached is not in the local cache")


def test_split_files_damaged_or_malicious_are_told_apart(tmp_path):
    truncated = tmp_path / "t.pkl"
    truncated.write_bytes(pickle.dumps({"train": ["a"], "test": ["b"]})[:-6])
    with pytest.raises(DataError, match="corrupt or truncated") as error:
        load_split(truncated)
    assert "malicious" not in str(error.value)
    evil = tmp_path / "e.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(DataError, match="may be malicious"):
        load_split(evil)


def test_a_backslash_in_a_name_is_named_with_the_file(tmp_path):
    with pytest.raises(DataError) as error:
        save_split({"test": ["a\\b"]}, tmp_path / "tested_names.json")
    assert "tested_names.json" in str(error.value) and "a path separator" in str(error.value)


def test_no_validation_message_says_why(tmp_path, capsys):
    from gmseg.training import train

    root = make_synthetic_dataset(tmp_path / "data", n_train=1, n_test=1, size=32, seed=2)
    train(config_from_dict(unet_run_config(root, tmp_path / "runs")), run_dir=tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert "1 training image(s) are too few to hold out data.val_fraction=0.1" in err
    assert "data.val_fraction=0)" not in err


def test_load_config_reads_a_packaged_name_and_refuses_a_folder(tmp_path):
    assert load_config("busi").data.image_size == 224
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


# ------------------------------------------------------------------------------- G: real-data layouts


def breast_ultrasound_like(folder: Path, n: int = 5) -> tuple[Path, Path]:
    """bus_0001-l.png with mask_0001-l.png, as a public breast-ultrasound dataset names its pairs."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(images / f"bus_{i:04d}-l.png")
        mask_png(masks / f"mask_{i:04d}-l.png", box())
    return images, masks


def test_prepare_folders_pairs_by_prefixes_and_says_how_many(tmp_path, capsys):
    images, masks = breast_ultrasound_like(tmp_path / "raw")
    argv = ["prepare", "folders", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "out")]
    one_line_error(capsys, argv, "no image/mask pair matched", "bus_0000-l.png", "mask_0000-l.png")
    assert main([*argv, "--image-prefix", "bus_", "--mask-prefix", "mask_"]) == 0
    assert "5 image/mask pair(s) matched" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())[0] == "bus_0000-l.png"


def test_prepare_folders_in_one_folder_told_apart_by_a_mask_prefix(tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 50, np.uint8)).save(folder / f"{i:03d}.png")
        mask_png(folder / f"gt_{i:03d}.png", box())
    report = prepare_folders(folder, folder, tmp_path / "out", mask_prefix="gt_")
    assert report.n_pairs == 4 and not report.unmatched
    assert "4 image/mask pair(s) matched" in capsys.readouterr().err


def test_generalize_scores_a_test_split_of_all_images_once(unet_folder, data, tmp_path):
    whole = tmp_path / "whole"
    for kind in ("images", "masks"):
        (whole / kind).mkdir(parents=True)
        for path in (data / kind).iterdir():
            (whole / kind / path.name).write_bytes(path.read_bytes())
    names = sorted(p.stem for p in (whole / "images").iterdir())
    save_split({"test": names}, whole / "split.json")
    result = run_generalize(unet_folder, [("whole", whole)], tmp_path / "out")
    assert [row["stage"] for row in result.rows] == ["test", "all"]
    assert result.rows[1]["same_images_as"] == "test" and result.rows[1]["dice"] == result.rows[0]["dice"]
    assert not (tmp_path / "out" / "whole" / "all").exists()  # predicted once
    with (tmp_path / "out" / "whole" / "test" / "metrics.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(names)
