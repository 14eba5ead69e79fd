"""Throughput of ``gmseg predict`` on a folder of images, with reading and writing overlapping compute or not.

    python bench/predict_throughput.py                          # 500 synthetic 256x256 PNGs, GMS-TAESD, CPU
    python bench/predict_throughput.py --images 64 --first-stage tiny-kl --workers 0 2 --out /tmp/t.json

Each variant is one :func:`gmseg.predict.predict_files` run in this process over the same PNG files into a
fresh folder (masks and overlays written, as ``gmseg predict --overlay`` does): ``--workers 0`` reads,
predicts and writes in turn; ``--workers N`` reads with N DataLoader processes ahead of the model and
writes on a thread behind it. Variants run round-robin ``--rounds`` times; the best round counts.
``images/s`` is the images over the whole call (planning, reading, model, writing); the outputs of every
variant are checked byte-identical to the first's. The model is GMS on TAESD (real weights when
../shared/weights/taesd exists, else the architecture with random weights; ``--first-stage``), seeded:
its speed, not its masks, is measured; or ``--model DIR``, any model folder (a trained GMS or U-Net, or an
exported one, which runs on its own runtime). Writes bench/results/predict_throughput.json (``--out``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/inference.py: honest timings on a shared CPU

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` synthetic ultrasound-like PNGs (:mod:`gmseg.synthetic`), made once per folder."""
    from gmseg.synthetic import make_synthetic_dataset

    images = folder / "images"
    if not images.is_dir() or len(list(images.glob("*.png"))) != count:
        make_synthetic_dataset(folder, n_train=count, n_test=0, size=size, seed=seed)
    return images


def run_variant(model: Any, images: Path, out: Path, workers: int, batch_size: int, device: str) -> dict[str, Any]:
    """One timed predict_files call into the empty folder ``out``."""
    from gmseg.predict import predict_files

    started = time.perf_counter()
    report = predict_files(
        model, images, out, overlay=True, batch_size=batch_size, device=device, progress=False, workers=workers
    )
    seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(report.summary())
    return {"images": len(report.written), "seconds": round(seconds, 3), "images_per_s": len(report.written) / seconds}


def same_outputs(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir() if not p.name.startswith("."))
    return names == sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=256, help="side of the PNGs on disk")
    parser.add_argument("--model-size", type=int, default=224, help="the model's input size")
    parser.add_argument("--first-stage", default="taesd", choices=["taesd", "tiny-kl", "sd-vae"])
    parser.add_argument("--model", help="a model folder to time instead (torch or exported); --model-size is its own")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="reader processes per variant")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", help="folder to keep the generated PNGs in (default: a temporary one)")
    parser.add_argument("--out", help="result JSON (default bench/results/predict_throughput.json)")
    args = parser.parse_args(argv)

    if args.model:
        from gmseg.models import load_model

        model, note = load_model(args.model), f"the model folder {args.model}"
        args.model_size = model.image_size
    else:
        model, note = common.build_model(args.first_stage, size=args.model_size)
    with tempfile.TemporaryDirectory(prefix="gmseg-predict-throughput-") as scratch:
        images = make_images(Path(args.data or scratch) / "data", args.images, args.image_size)
        best: dict[int, dict[str, Any]] = {}
        for round_index in range(args.rounds):
            for workers in args.workers:
                out = Path(scratch) / f"out-{round_index}-{workers}"
                row = run_variant(model, images, out, workers, args.batch_size, args.device)
                print(f"round {round_index + 1}: workers={workers}: {row['images_per_s']:.2f} images/s", flush=True)
                if workers not in best or row["images_per_s"] > best[workers]["images_per_s"]:
                    best[workers] = {"workers": workers, **row}
        first = Path(scratch) / f"out-0-{args.workers[0]}"
        identical = all(same_outputs(first, Path(scratch) / f"out-0-{w}") for w in args.workers[1:])
    rows = [{**best[w], "images_per_s": round(best[w]["images_per_s"], 2)} for w in args.workers]
    print(f"\n{args.images} images of {args.image_size}x{args.image_size}, {note}, batch {args.batch_size}")
    print(common.format_table(rows, [("workers", "workers"), ("seconds", "seconds"), ("images_per_s", "images/s")]))
    print(f"outputs identical across variants: {identical}")
    payload = {**common.header(args.device), "first_stage": note, "settings": vars(args), "rows": rows}
    path = common.write_result("predict_throughput", {**payload, "identical": identical}, args.out)
    print(f"wrote {path}")
    if not identical:
        raise SystemExit("the variants wrote different files")


if __name__ == "__main__":
    main()
