"""Seconds and peak memory of ``gmseg predict`` on a CT-sized volume, for GMS-TAESD and the U-Net.

A synthetic int16 volume of 512 x 512 x 300 voxels (CT's usual grid: 157 MB on disk unpacked) is written as
NIfTI; each model folder (seeded random weights, which cost what trained ones cost; GMS on the real TAESD
first stage when ``--vae`` is given) records a CT normalisation; then ``gmseg predict --input VOLUME`` runs in
a fresh process per model, which reports its wall time and its peak resident memory (``ru_maxrss``):

    python bench/volume_predict.py --vae ../shared/weights/taesd --out bench/results/volumes/predict

The issue's target: under 4 GiB (a volume is not held in memory in several copies). ``--shape`` and
``--size`` (the models' input size) make it small enough for a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401  (the installed package, else this checkout's src/)


def write_volume_file(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A CT-like int16 (Z, Y, X) volume: a body ellipse of soft tissue, a brighter organ, noise."""
    from gmseg.data.readers import Geometry, write_volume

    depth, height, width = shape
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:height, :width]
    body = ((y - height / 2) / (height * 0.42)) ** 2 + ((x - width / 2) / (width * 0.45)) ** 2 < 1
    organ = ((y - height * 0.45) / (height * 0.1)) ** 2 + ((x - width * 0.6) / (width * 0.08)) ** 2 < 1
    plane = np.where(body, 40, -1000).astype(np.int16) + np.where(organ, 60, 0).astype(np.int16)
    volume = np.empty(shape, np.int16)
    for z in range(depth):  # one slice at a time: the benchmark's own process stays small too
        volume[z] = plane + rng.normal(0, 15, (height, width)).astype(np.int16)
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    write_volume(path, volume, Geometry((2.5, 0.7, 0.7), (0.0, 0.0, 0.0), identity))
    return path


def make_models(out: Path, size: int, vae: str | None) -> dict[str, Path]:
    """Model folders with a recorded CT normalisation: the U-Net (gmseg's default widths) and, with ``vae``,
    GMS (the release's mapping widths on that first stage)."""
    import torch

    from gmseg.data.normalization import VolumeInput
    from gmseg.models import GMS, GMSConfig, UNet
    from gmseg.models.unet import DEFAULT_CHANNELS, unet_arguments

    record = VolumeInput(scheme="ct", modality="CT", clip=(-1000.0, 400.0), mean=40.0, std=60.0)
    torch.manual_seed(0)
    folders = {}
    unet = UNet(unet_arguments(DEFAULT_CHANNELS, size))
    unet.record_volume_input(record)
    folders["unet"] = out / "models" / "unet"
    unet.save_pretrained(folders["unet"])
    if vae:
        from gmseg.first_stage import load_first_stage

        first_stage = load_first_stage(vae)
        width = first_stage.latent_channels
        mapping = {**GMSConfig().mapping, "in_channels": width, "out_channels": width}
        gms = GMS(GMSConfig(image_size=size, mapping=mapping), first_stage_module=first_stage)
        gms.record_volume_input(record)
        folders["gms-taesd"] = out / "models" / "gms-taesd"
        gms.save_pretrained(folders["gms-taesd"])
    return folders


def worker(model: str, volume: str, output: str, batch_size: int) -> None:
    """One ``gmseg predict`` in this process; prints its seconds and peak RSS as JSON."""
    from gmseg.cli import main as cli

    started = time.perf_counter()
    code = cli(
        ["predict", "--model", model, "--input", volume, "--output", output, "--device", "cpu",
         "--batch-size", str(batch_size), "--overwrite"]
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    print(json.dumps({"code": code, "seconds": seconds, "peak_rss_gib": peak_kib / 2**20}))


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:5], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", help="first stage of GMS (e.g. ../shared/weights/taesd); without it, the U-Net only")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], help="Z Y X")
    parser.add_argument("--size", type=int, default=224, help="the models' input size (slices resized to it)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    volume = write_volume_file(args.out / "ct.nii.gz", tuple(args.shape))
    folders = make_models(args.out, args.size, args.vae)
    results = {"shape_zyx": args.shape, "input_size": args.size, "threads": os.cpu_count(), "models": {}}
    for name, folder in folders.items():
        output = args.out / "predictions" / name
        command = [sys.executable, __file__, "--worker", str(folder), str(volume), str(output), str(args.batch_size)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name}: gmseg predict failed:\n{done.stderr[-3000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        if measured["code"] != 0:
            raise SystemExit(f"{name}: gmseg predict exited {measured['code']}:\n{done.stdout[-2000:]}")
        results["models"][name] = measured
        print(
            f"{name}: {measured['seconds']:.1f} s for a {'x'.join(map(str, args.shape[::-1]))} volume "
            f"at {args.size} px ({measured['seconds'] / args.shape[0]:.3f} s per slice), "
            f"peak RSS {measured['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    (args.out / "volume_predict.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
