"""The file rule on every verb (issue 41, parts A and F; part B's planned-name collisions).

For each class a case the issue lists and a variant of our own, through the command line as a user meets
them. The two-process cases of part B are in test_concurrency.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import tiny_gms_config
from gmseg.cli import main
from gmseg.first_stage import load_first_stage
from gmseg.generalize import GeneralizationResult
from gmseg.models import GMS, GMSConfig
from gmseg.outputs import MANIFEST
from gmseg.training.logs import EpochLog

S = 32
LOG = "epoch,lr,loss,loss_rec,loss_dice,val_dice,val_iou,seconds\r\n1,0.001,0.5,0.4,0.1,0.6,0.5,1.0\r\n"


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (S, S, 3), dtype=np.uint8)).save(path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """The PID of a process that has ended (what a SIGKILLed run leaves in its temporary names)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def mapping_config() -> GMSConfig:
    return tiny_gms_config(S)


@pytest.fixture
def dataset(tmp_path) -> Path:
    for i in range(4):
        write_image(tmp_path / "D" / "images" / f"c{i}.png", seed=i)
        mask = np.zeros((S, S), np.uint8)
        mask[8:24, 8:24] = 255
        (tmp_path / "D" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "D" / "masks" / f"c{i}.png")
    return tmp_path / "D"


def predict(model_dir: Path, inputs: list[Path], output: Path, *extra: str) -> int:
    return main(["predict", "--model", str(model_dir), "--input", *map(str, inputs), "--output", str(output), *extra])


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.csv").write_bytes(LOG.encode())
    return run


# ------------------------------------------------------------------------ A: never over an input


def test_plot_never_writes_over_the_log_it_reads(run_dir, tmp_path, capsys):
    log = run_dir / "train_log.csv"
    for extra in ([], ["--overwrite"]):
        assert main(["plot", str(run_dir), "--out", str(log), *extra]) == 2
        assert "is the input" in capsys.readouterr().err
    assert log.read_bytes() == LOG.encode()


def test_variant_plot_never_writes_over_a_hard_link_to_the_log(run_dir, capsys):
    """Files compared, not paths: a hard link to the log under a picture's name is the log."""
    log = run_dir / "train_log.csv"
    os.link(log, run_dir / "log.png")
    assert main(["plot", str(run_dir), "--out", str(run_dir / "log.png"), "--overwrite"]) == 2
    assert "same file, by a link" in capsys.readouterr().err
    assert log.read_bytes() == LOG.encode()


def test_plot_writes_the_format_its_ending_names(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "c.jpg")]) == 0
    assert (tmp_path / "c.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under .jpg


def test_variant_plot_pdf_by_its_ending_and_no_picture_format_refused(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "c.pdf")]) == 0
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "c.txt")]) == 2
    assert "cannot draw a figure as .txt" in capsys.readouterr().err and not (tmp_path / "c.txt").exists()


def test_predict_compares_files_not_paths(model_dir, dataset, tmp_path, capsys):
    links = tmp_path / "L"
    links.mkdir()
    for image in (dataset / "images").iterdir():
        (links / image.name).symlink_to(image)
    before = snapshot(dataset)
    for extra in ([], ["--overwrite"]):
        assert predict(model_dir, [links], links, *extra) == 2
        err = capsys.readouterr().err
        assert "input image" in err and "output file" not in err  # the inputs are called inputs
    assert snapshot(dataset) == before
    assert sorted(p.is_symlink() for p in links.iterdir()) == [True] * 4  # the links are still links


def test_variant_predict_refuses_a_hard_link_to_an_input_even_with_overwrite(model_dir, dataset, tmp_path, capsys):
    before = snapshot(dataset)
    out = tmp_path / "out"
    out.mkdir()
    os.link(dataset / "images" / "c0.png", out / "c0.png")
    assert predict(model_dir, [dataset / "images"], out, "--overwrite") == 2
    assert "is the input" in capsys.readouterr().err
    assert snapshot(dataset) == before


# ------------------------------------------------------------- A: not over files gmseg did not write


def test_evaluate_and_test_keep_existing_reports(model_dir, dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    assert predict(model_dir, [dataset / "images"], pred) == 0
    out = tmp_path / "scores"
    out.mkdir()
    (out / "metrics.csv").write_text("my own numbers\n")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(dataset / "masks"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "metrics.csv").read_text() == "my own numbers\n"
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(dataset / "masks"), "--out", str(out), "--overwrite"]) == 0
    )
    assert (out / "metrics.csv").read_text().startswith("name,")
    tested = tmp_path / "tested"
    tested.mkdir()
    (tested / "report.png").write_bytes(b"a picture of mine")
    args = ["test", "--model", str(model_dir), "--data", str(dataset), "--out", str(tested), "--stage", "all"]
    assert main(args) == 2
    assert (tested / "report.png").read_bytes() == b"a picture of mine"
    assert not (tested / "predictions").exists()  # refused before predicting anything
    assert main([*args, "--overwrite"]) == 0 and (tested / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_variant_evaluate_never_writes_among_the_ground_truth(model_dir, dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    assert predict(model_dir, [dataset / "images"], pred) == 0
    masks = snapshot(dataset / "masks")
    masks_dir = str(dataset / "masks")
    assert main(["evaluate", "--pred", str(pred), "--gt", masks_dir, "--out", masks_dir, "--overwrite"]) == 2
    assert "reads its inputs from" in capsys.readouterr().err and snapshot(dataset / "masks") == masks


def release_checkpoint(tiny_vae_dir: Path, config: GMSConfig, path: Path) -> Path:
    model = GMS(config, first_stage_module=load_first_stage(tiny_vae_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.mapping.state_dict()}, path)
    return path


def test_import_official_never_replaces_its_input_or_a_folder_silently(tiny_vae_dir, mapping_config, tmp_path, capsys):
    folder = tmp_path / "d"
    lmm = release_checkpoint(tiny_vae_dir, mapping_config, folder / "model.pth")
    args = ["import-official", "--lmm", str(lmm), "--vae", str(tiny_vae_dir), "--image-size", str(S)]
    for extra in ([], ["--overwrite"]):
        assert main([*args, "--out", str(folder), *extra]) == 2
        assert "holds the input" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["model.pth"]
    out = tmp_path / "model"
    assert main([*args, "--out", str(out)]) == 0
    (out / "stray.txt").write_text("from before")
    assert main([*args, "--out", str(out)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stray.txt").exists() and (out / "model.safetensors").is_file()  # replaced whole


def test_variant_import_official_out_through_a_symlink_to_the_inputs_folder(tiny_vae_dir, mapping_config, tmp_path):
    folder = tmp_path / "d"
    lmm = release_checkpoint(tiny_vae_dir, mapping_config, folder / "model.pth")
    args = ["import-official", "--lmm", str(lmm), "--vae", str(tiny_vae_dir), "--image-size", str(S)]
    (tmp_path / "alias").symlink_to(folder)
    assert main([*args, "--out", str(tmp_path / "alias"), "--overwrite"]) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["model.pth"]


def test_demo_never_writes_over_a_users_files(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out), "--vae", str(tmp_path / "no-vae"), "--quick"]) == 2
    assert "did not write" in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep me"


def test_variant_demo_refuses_a_users_folder_named_like_its_own(tmp_path, capsys):
    other = tmp_path / "other"
    write_image(other / "data" / "x.png")
    assert main(["demo", "--out", str(other), "--vae", str(tmp_path / "no-vae"), "--quick"]) == 2
    assert "did not write" in capsys.readouterr().err and (other / "data" / "x.png").is_file()


# ------------------------------------------------------------------------ A: whole or not at all


def test_a_failed_draw_leaves_the_previous_picture_whole(run_dir, monkeypatch, capsys):
    from matplotlib.figure import Figure

    assert main(["plot", str(run_dir)]) == 0  # gmseg's own curves.png: a later plot may replace it
    before = (run_dir / "curves.png").read_bytes()

    def torn(self, handle, **kwargs):
        handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", torn)
    assert main(["plot", str(run_dir)]) == 1
    assert (run_dir / "curves.png").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_variant_resume_rewrites_the_log_whole_and_drops_a_torn_line(tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_bytes((LOG + "2,0.001,0.4,0.3,0.1,0.7,0.6,1.0\r\n3,0.0").encode())  # a kill mid-append
    inode = log.stat().st_ino
    EpochLog(log, keep_epochs=5).append({"epoch": 3, "lr": 0.001, "loss": 0.3})
    rows = log.read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2", "3"] and rows[-1].startswith("3,0.001,0.3")
    assert log.stat().st_ino != inode  # a new file renamed into place, never truncated in place


# --------------------------------------------------------------- B: planned names checked together


def test_predict_refuses_outputs_that_collide_by_name(model_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    write_image(inputs / "x.png")
    write_image(inputs / "x.overlay.png", seed=1)
    out = tmp_path / "out"
    assert predict(model_dir, [inputs], out, "--overlay") == 2
    err = capsys.readouterr().err
    assert "the overlay of" in err and "the mask of" in err and "x.overlay.png" in err and not out.exists()


def test_variant_collision_with_an_input_of_another_ending(model_dir, tmp_path):
    inputs = tmp_path / "in"
    write_image(inputs / "x.png")
    Image.open(inputs / "x.png").save(inputs / "x.overlay.bmp")
    out = tmp_path / "out"
    assert predict(model_dir, [inputs], out, "--overlay") == 2 and not out.exists()


# ---------------------------------------------------------------------------- F: leftovers and lies


def test_duplicate_inputs_are_predicted_and_counted_once(model_dir, dataset, tmp_path, capsys):
    images = dataset / "images"
    assert predict(model_dir, [images, images / "c0.png", images / "c0.png"], tmp_path / "a") == 0
    assert "Wrote 4 prediction(s)" in capsys.readouterr().out


def test_variant_a_link_to_an_input_is_that_input(model_dir, dataset, tmp_path, capsys):
    images = dataset / "images"
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "again.png").symlink_to(images / "c1.png")
    assert predict(model_dir, [images, tmp_path / "links"], tmp_path / "b") == 0
    assert "Wrote 4 prediction(s)" in capsys.readouterr().out


def test_an_interrupted_predict_continues(model_dir, dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict(model_dir, [dataset / "images"], out, "--save-prob") == 0
    (out / "c1.png").unlink()  # where a kill would have stopped it: c1 incomplete, c3 not started
    (out / "c3.png").unlink()
    (out / "c3.prob.npy").unlink()
    kept = {name: (out / name).stat().st_mtime_ns for name in ("c0.png", "c2.png", "c2.prob.npy")}
    assert predict(model_dir, [dataset / "images"], out, "--save-prob") == 2  # without --continue: refused
    capsys.readouterr()
    assert predict(model_dir, [dataset / "images"], out, "--save-prob", "--continue") == 0
    assert "Wrote 2 prediction(s). Kept 2 complete" in capsys.readouterr().out
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert all((out / f"c{i}.png").is_file() and (out / f"c{i}.prob.npy").is_file() for i in range(4))


def test_variant_continue_never_keeps_or_replaces_a_users_file(model_dir, dataset, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "c0.png").write_bytes(b"my mask")
    assert predict(model_dir, [dataset / "images"], mine, "--continue") == 2
    assert (mine / "c0.png").read_bytes() == b"my mask"


def test_the_next_run_cleans_what_a_killed_run_left(model_dir, dataset, tmp_path):
    from gmseg.data.prepare import prepare_folders

    dead = dead_pid()
    staging = tmp_path / f".prepared.{dead}.0123abcd.tmp"  # prepare's staging copy, from a killed run
    write_image(staging / "images" / "c0.png")
    old_style = tmp_path / f".prepared.prepare-{dead}"
    old_style.mkdir()
    prepare_folders(dataset / "images", dataset / "masks", tmp_path / "prepared")
    assert not staging.exists() and not old_style.exists()


def test_variant_stale_temporaries_in_an_output_folder_go_a_live_writers_stay(model_dir, dataset, tmp_path):
    dead = dead_pid()
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".c0.png.{dead}.89abcdef.tmp"
    stale.write_bytes(b"half a png")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out / f".c1.png.{alive.pid}.89abcdef.tmp"
        live.write_bytes(b"being written")
        assert predict(model_dir, [dataset / "images"], out) == 0
        assert not stale.exists() and live.exists()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("override", ["name=../../../x", "train.output_dir=/", "name=sub/run"])
def test_a_run_folder_stays_inside_output_dir(override, tiny_vae_dir, tmp_path, capsys):
    config = {
        "name": "tiny",
        "data": {"root": str(tmp_path / "data"), "image_size": S},
        "model": {"vae": str(tiny_vae_dir), "ch": 16, "ch_mult": [1, 2, 2]},
        "train": {"epochs": 1, "output_dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--set", override]) == 2
    err = capsys.readouterr().err
    assert ("plain folder name" in err) or ("file system root" in err)


def test_the_generalization_table_never_prints_nan():
    def stats(mean: float, se: float, n: int) -> dict:
        return {"mean": mean, "se": se, "n": n}

    result = GeneralizationResult(
        rows=[
            {
                "dataset": "one",
                "stage": "all",
                "n_images": 1,
                "dice": stats(0.5, float("nan"), 1),
                "iou": stats(0.25, float("nan"), 1),
                "hd95": stats(float("nan"), float("nan"), 0),  # no image defines HD95
            }
        ]
    )
    table = result.to_markdown("m")
    assert "nan" not in table.replace("n/a", "")
    assert "50.00 (1 case)" in table and "| n/a |" in table


def test_variant_a_table_from_json_nulls_says_n_a():
    """summary.json writes undefined values as null: a table rebuilt from it must not crash or print nan."""
    null = {"mean": None, "se": None, "n": 0}
    row = {"dataset": "x", "stage": "test", "n_images": 3, "dice": null, "iou": null, "hd95": null}
    table = GeneralizationResult(rows=[row]).to_markdown("m")
    assert table.count("| n/a") == 3


def test_manifest_lists_what_gmseg_wrote(model_dir, dataset, tmp_path):
    out = tmp_path / "out"
    assert predict(model_dir, [dataset / "images"], out, "--overlay") == 0
    listed = set((out / MANIFEST).read_text().split())
    assert listed == {f"c{i}{suffix}" for i in range(4) for suffix in (".png", ".overlay.png")}


def test_variant_demo_reruns_over_its_own_folder_only(tmp_path, monkeypatch):
    """The demo replaces what an earlier demo wrote there (the folder's manifest), and nothing else."""
    from gmseg import demo
    from gmseg.outputs import OutputError

    def stages(guard, out, vae, vae_config, quick, progress):  # the five stages' writes, without the training
        guard.write_folder(out / "data", lambda folder: write_image(folder / "images" / "case_000.png"))
        guard.make_folder(out / "runs")
        guard.write_text(out / "demo_summary.json", "{}\n")
        return {}

    monkeypatch.setattr(demo, "_run_demo", stages)
    out = tmp_path / "demo"
    demo.run_demo(out)
    demo.run_demo(out)  # a second demo into the first one's folder
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["data", "demo_summary.json", "runs"]
    (out / "runs" / "mine.txt").write_text("inside a folder gmseg made: the demo never empties it")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        demo.run_demo(out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "runs" / "mine.txt").is_file()
