"""Prediction across the processes of a launch: `accelerate launch --num_processes 2 -m gmseg.cli predict`
on two CPU processes over gloo (as training is tested) writes byte for byte the files one process writes,
for images and volumes; the output folder stays one run's; a failure on any rank fails the launch. Also
the pieces in one process: shares, manifest parts, the launch id of a claim, reading and writing ahead."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from gmseg.data.normalization import VolumeInput
from gmseg.distributed import Launch
from gmseg.models import load_model
from gmseg.models.unet import UNet, unet_arguments
from gmseg.outputs import (
    LOCK,
    MANIFEST,
    FolderBusyError,
    OutputGuard,
    gmseg_files,
    is_empty_folder,
    manifest_part,
    merge_manifest_parts,
)
from gmseg.predict import predict_files
from gmseg.prediction import BackgroundWriter, PredictionReport, read_ahead

SIZES = [(40, 30), (32, 32), (25, 47), (64, 48), (33, 20), (50, 50), (29, 31), (45, 38), (36, 60), (41, 27), (30, 44)]


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory) -> Path:
    """A seeded tiny U-Net model folder (fast to load twice per launch), with a volume-input record."""
    torch.manual_seed(0)
    model = UNet(unet_arguments((4, 8), 32, 0))
    model.record_volume_input(VolumeInput(scheme="zscore", modality="MRI"))
    folder = tmp_path_factory.mktemp("unet") / "model"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    """11 RGB images of different sizes: an odd count, so the two ranks' shares differ in length."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("pngs")
    for index, (width, height) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"img{index:02d}.png")
    return folder


@pytest.fixture(scope="module")
def niftis(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("niftis")
    for index, shape in enumerate([(5, 22, 27), (4, 19, 23), (6, 16, 20)]):
        image = sitk.GetImageFromArray(rng.normal(300, 50, shape).astype(np.float32))
        image.SetSpacing((0.8, 0.9, 3.0))
        sitk.WriteImage(image, str(folder / f"case{index}.nii.gz"))
    return folder


@pytest.fixture
def one_thread():
    """The one-process reference runs on the launch's per-rank thread count (OMP_NUM_THREADS=1): on some CPUs
    (an AMD EPYC host) convolutions round differently on 1 and 2 threads, by one float32 ulp."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def launch(port: int, *args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` of two CPU processes (`--multi_gpu` starts torchrun; without GPUs, gloo)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        "-m", "gmseg.cli", "predict", "--device", "cpu", *args,
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, env=env
    )


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in (MANIFEST, LOCK)}


def test_two_ranks_write_the_images_one_process_writes(unet_dir, pngs, tmp_path, one_thread):
    one, two = tmp_path / "one", tmp_path / "two"
    report = predict_files(
        load_model(unet_dir), pngs, one, batch_size=3, save_prob=True, overlay=True, device="cpu", progress=False
    )
    assert report.ok and len(report.written) == 11
    done = launch(29531, "--model", str(unet_dir), "--input", str(pngs), "--output", str(two), "--batch-size", "3",
                  "--save-prob", "--overlay")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Wrote 11 prediction(s).") == 1, done.stdout  # the launch's summary, once
    expected, written = outputs(one), outputs(two)
    assert len(expected) == 33 and sorted(written) == sorted(expected)
    assert all(written[name] == expected[name] for name in expected)  # byte for byte
    # Both ranks' names in the one manifest (rank 1's part merged and removed); the folder released.
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(".")) == [MANIFEST]
    assert gmseg_files(two) == set(expected)


def test_two_ranks_write_the_volumes_one_process_writes(unet_dir, niftis, tmp_path, one_thread):
    one, two = tmp_path / "one", tmp_path / "two"
    report = predict_files(load_model(unet_dir), niftis, one, save_prob=True, device="cpu", progress=False)
    assert report.ok and report.written == ["case0", "case1", "case2"]
    done = launch(29532, "--model", str(unet_dir), "--input", str(niftis), "--output", str(two), "--save-prob")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Wrote 3 prediction(s).") == 1, done.stdout
    expected = outputs(one)
    assert len(expected) == 6 and outputs(two) == expected
    assert gmseg_files(two) == set(expected) and not (two / manifest_part(1)).exists()


def test_a_second_launch_into_a_held_folder_is_refused(unet_dir, pngs, tmp_path):
    out = tmp_path / "out"
    with OutputGuard("predict") as guard:  # another run (this process) holds the folder
        guard.claim(out)
        done = launch(29533, "--model", str(unet_dir), "--input", str(pngs), "--output", str(out))
        assert done.returncode != 0
        assert f"in use by gmseg predict (PID {os.getpid()}" in done.stderr, done.stderr[-3000:]
        assert "rank 1 stopped: rank 0 of this launch failed (FolderBusyError" in done.stderr
        assert is_empty_folder(out)  # not one file written by either rank


def test_a_failure_on_one_rank_fails_the_launch(unet_dir, pngs, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for png in sorted(pngs.iterdir())[:5]:
        (inputs / png.name).write_bytes(png.read_bytes())
    (inputs / "img01.png").write_bytes(b"not a png")  # batch size 1: the second file is rank 1's
    out = tmp_path / "out"
    done = launch(29534, "--model", str(unet_dir), "--input", str(inputs), "--output", str(out), "--batch-size", "1")
    assert done.returncode != 0, done.stdout
    assert done.stdout.count("Wrote 4 prediction(s).") == 1 and "  - img01.png: " in done.stdout, done.stdout
    assert sorted(p.name for p in out.glob("*.png")) == ["img00.png", "img02.png", "img03.png", "img04.png"]


# ------------------------------------------------------------------------------------ in one process


def test_shares_take_every_input_once_in_whole_batches():
    items = list(range(23))
    for world in (1, 2, 3, 5):
        for block in (1, 4, 8):
            shares = [Launch(rank, world).share(items, block) for rank in range(world)]
            assert sorted(sum(shares, [])) == items
            batches = [share[i : i + block] for share in shares for i in range(0, len(share), block)]
            assert sorted(batches) == [items[i : i + block] for i in range(0, 23, block)]  # one process's batches
    assert Launch(1, 2).share(items, 4) == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22]


def test_a_launch_report_merges_the_ranks_in_input_order():
    first = PredictionReport(written=["a", "c"], skipped=["z"], seconds=2.0)
    second = PredictionReport(written=["b"], failed={"d.png": "unreadable"}, notes=["n"], seconds=3.0)
    merged = PredictionReport.merge([first, second], ["a", "b", "c", "d", "z"])
    assert merged.written == ["a", "b", "c"] and merged.failed == {"d.png": "unreadable"} and not merged.ok
    assert merged.skipped == ["z"] and merged.notes == ["n"] and merged.seconds == 3.0
    merged.printed = False  # a rank > 0: rank 0 prints the launch's summary
    assert merged.summary() == ""


def test_ranks_join_only_their_launchs_claim_and_keep_their_own_manifest_part(tmp_path):
    out = tmp_path / "out"
    with OutputGuard("predict") as rank0:
        rank0.claim(out, launch="L1")
        rank0.write_text(out / "a.png", "a")
        joined = OutputGuard("predict")
        with pytest.raises(FolderBusyError, match="storage every machine of the launch shares"):
            joined.join(out, "another launch", 1)
        joined.join(out, "L1", 1)
        joined.write_text(out / "b.png", "b")
        assert (out / manifest_part(1)).read_text() == "b.png\n" and "b.png" not in (out / MANIFEST).read_text()
        assert gmseg_files(out) == {"a.png", "b.png"} and OutputGuard("x").foreign_entries(out) == []
        merge_manifest_parts(out)
        assert not (out / manifest_part(1)).exists() and gmseg_files(out) == {"a.png", "b.png"}
    assert not (out / LOCK).exists()


def test_a_claim_merges_the_parts_a_dead_launch_left(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / manifest_part(3)).write_text("x.png\n")
    assert is_empty_folder(out)  # bookkeeping only
    with OutputGuard("predict") as guard:
        guard.claim(out)
    assert (out / MANIFEST).read_text() == "x.png\n" and not (out / manifest_part(3)).exists()


def test_reading_ahead_and_writing_behind_keep_order_and_errors():
    seen = []
    with BackgroundWriter(enabled=True, depth=2) as writer:
        for item in read_ahead(iter(range(20)), enabled=True):
            writer.submit(
                lambda value: (time.sleep(0.001), seen.append((value, threading.current_thread().name))), item
            )
    assert [value for value, _ in seen] == list(range(20)) and all("gmseg-write" in name for _, name in seen)

    def fail(value):
        raise OSError(f"disk full at {value}")

    with pytest.raises(OSError, match="disk full at 0"), BackgroundWriter(enabled=True) as writer:
        writer.submit(fail, 0)

    def broken():
        yield 1
        raise OSError("unreadable")

    with pytest.raises(OSError, match="unreadable"):
        list(read_ahead(broken(), enabled=True))


def test_reader_processes_and_the_writer_thread_write_the_same_files(unet_dir, pngs, niftis, tmp_path):
    model = load_model(unet_dir)
    plain = predict_files(model, pngs, tmp_path / "a", batch_size=2, save_prob=True, workers=0, progress=False)
    ahead = predict_files(model, pngs, tmp_path / "b", batch_size=2, save_prob=True, workers=2, progress=False)
    assert plain.written == ahead.written and outputs(tmp_path / "a") == outputs(tmp_path / "b")
    plain = predict_files(model, niftis, tmp_path / "c", workers=0, progress=False)
    ahead = predict_files(model, niftis, tmp_path / "d", workers=1, progress=False)
    assert plain.written == ahead.written and outputs(tmp_path / "c") == outputs(tmp_path / "d")


def test_the_cli_takes_workers_and_refuses_a_negative_count(unet_dir, pngs, tmp_path, capsys):
    from gmseg.cli import main

    args = ["predict", "--model", str(unet_dir), "--input", str(pngs), "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "bad"), "--workers", "-1"]) == 2
    assert "--workers must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before the folder was claimed
    assert main([*args, "--output", str(tmp_path / "turns"), "--workers", "0"]) == 0
    assert main([*args, "--output", str(tmp_path / "ahead"), "--workers", "2"]) == 0
    assert outputs(tmp_path / "turns") == outputs(tmp_path / "ahead") and len(outputs(tmp_path / "turns")) == 11
