"""The first stage's own ceiling: how well decode(encode(true mask)) reproduces the true masks.

GMS predicts a mask *latent* and decodes it, so even a perfect latent prediction scores only what the
autoencoder's reconstruction of the mask scores. This measures that reconstruction on a dataset's split,
through the same code as training and inference (the release's mask encoding, 224x224 nearest resize,
decoding, threshold 0.5, resize back to native size, ``gmseg evaluate`` metrics), and the image
reconstruction PSNR of the same cases at the model's input size (images in [0, 1]):

    python bench/first_stage_ceiling.py --vae ../shared/weights/taesd --data ../shared/data/busi \
        --split ../shared/data/busi/busi_train_test_names.pkl --out bench/results/busi/taesd-mask-ceiling

A ceiling well above a model's score says the first stage can represent the masks and the limit lies in
mapping image latents to mask latents; a ceiling near the score says the first stage is the limit.
Writes OUT/predictions, OUT/metrics.csv, OUT/summary.json and OUT/ceiling.json (width, mask Dice, PSNR,
seconds); `python bench/first_stage_ceiling.py --table OUT1 OUT2 ...` prints one markdown table of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import common


def psnr(image: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1], computed on [0, 1] (the convention of the adapter tests)."""
    mse = (((reconstruction.clamp(-1, 1) - image) / 2.0) ** 2).double().mean().item()
    return float(10.0 * np.log10(1.0 / mse))


def print_table(folders: list[str]) -> None:
    """One markdown row per OUT folder's ceiling.json."""
    print("| first stage | channels | mask ceiling Dice (n) | image PSNR dB (SE) |")
    print("|---|---:|---:|---:|")
    for folder in folders:
        c = json.loads((Path(folder) / "ceiling.json").read_text())
        print(
            f"| {c['vae']} | {c['latent_channels']} | {c['mask_dice']:.4f} ({c['n']}) "
            f"| {c['psnr_mean']:.2f} ({c['psnr_se']:.2f}) |"
        )


def main() -> None:
    if sys.argv[1:2] == ["--table"]:
        print_table(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_first_stage_data_arguments(parser, stage="test")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from gmseg.data.io import find_file, read_image, read_mask, write_mask_png
    from gmseg.data.splits import load_split
    from gmseg.data.transforms import build_transform
    from gmseg.evaluate import format_summary, run_evaluate
    from gmseg.first_stage import load_first_stage
    from gmseg.models import GMS, GMSConfig
    from gmseg.predict import probability_at_size

    masks_dir = args.data / "masks"
    names = list(load_split(args.split)[args.stage]) if args.split else sorted(p.stem for p in masks_dir.iterdir())
    # Only the first stage and the mask <-> latent conventions are used; the mapping model stays untouched.
    first_stage = load_first_stage(args.vae, args.vae_config)
    width = first_stage.latent_channels  # the (unused) mapping only has to match the first stage's width
    mapping = {**GMSConfig().mapping, "in_channels": width, "out_channels": width}
    model = GMS(GMSConfig(image_size=args.size, mapping=mapping), first_stage_module=first_stage)
    model.eval()
    resize = build_transform(args.size)
    predictions = args.out / "predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    psnrs = []
    for name in names:
        mask_file, image_file = find_file(masks_dir, name), find_file(args.data / "images", name)
        if mask_file is None or image_file is None:
            raise SystemExit(f"No image or mask for {name!r} in {args.data}")
        mask = read_mask(mask_file).astype(np.uint8)
        sample = resize(image=read_image(image_file).astype(np.float32), mask=mask)
        image, resized = sample["image"][None] * 2.0 - 1.0, sample["mask"]
        with torch.no_grad():
            probability = model.latent_to_probability(model.encode_mask(resized[None].float()))[0]
            psnrs.append(psnr(image, model.first_stage.decode(model.encode(image)[0])))
        reconstructed = probability_at_size(probability, *mask.shape) > model.gms_config.threshold
        write_mask_png(predictions / f"{name}.png", reconstructed.astype(np.uint8))
    seconds = time.perf_counter() - started

    split_file = None
    if args.split:
        from gmseg.data.splits import save_split

        split_file = args.out / "names.json"
        save_split({args.stage: names}, split_file)
    result = run_evaluate(predictions, args.data, out_dir=args.out, split=split_file, stage=args.stage)
    dice = result.summary["metrics"]["dice"]
    ceiling = {
        "vae": str(args.vae),
        "latent_channels": model.first_stage.latent_channels,
        "data": str(args.data),
        "stage": args.stage if args.split else "all",  # no split file: every case was scored
        "n": len(names),
        "mask_dice": dice["mean"],
        "mask_dice_se": dice["std"] / np.sqrt(dice["n"]),
        "psnr_mean": float(np.mean(psnrs)),
        "psnr_se": float(np.std(psnrs) / np.sqrt(len(psnrs))),
        "seconds": seconds,
    }
    (args.out / "ceiling.json").write_text(json.dumps(ceiling, indent=2) + "\n")
    print(f"decode(encode(mask)) with {args.vae}: {len(names)} masks of {args.data} ({args.stage}) in {seconds:.1f} s")
    print(f"image PSNR {ceiling['psnr_mean']:.2f} dB (SE {ceiling['psnr_se']:.2f})")
    print(format_summary(result.summary))


if __name__ == "__main__":
    main()
