"""The first stage's ceiling on volume labels: each class's mask, slice by slice, through encode -> decode,
scored in 3D, at each input size considered.

GMS predicts mask latents and decodes them, so it can score at most what decode(encode(true mask)) scores.
The structures of a task such as MSD Hippocampus are small (a slice is ~35 x 50 voxels, a class a few
hundred voxels), so the input size the slices are resized to matters. For every case (of ``--split``'s
stage, else every labelled case of ``--data``, an MSD / nnU-Net folder) and every class, the binary mask is
sliced along the axis of gmseg's rule, each slice resized to SIZE x SIZE as training resizes masks (nearest),
encoded and decoded as GMS encodes masks, resized back (bilinear probability, threshold 0.5, as prediction
does) and restacked; the per-case 3D Dice (mean ± SE over cases) and the pooled Dice (all cases' voxels
together) are printed per class and size, and written to OUT/ceiling.json:

    python bench/volume_ceiling.py --vae ../shared/weights/taesd --data ../shared/data/msd-hippocampus \
        --sizes 64 96 128 --out bench/results/volumes/ceiling
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import common  # noqa: F401  (the installed package, else this checkout's src/)


def reconstruct(model, mask: np.ndarray, axis: int, size: int, batch: int = 64) -> np.ndarray:
    """A binary (Z, Y, X) mask through the first stage slice by slice along ``axis``, back at its shape."""
    from gmseg.data.slicing import put_slice, take_slice
    from gmseg.data.transforms import build_transform

    resize = build_transform(size)
    out = np.zeros(mask.shape, bool)
    count = mask.shape[axis]
    for start in range(0, count, batch):
        indices = range(start, min(start + batch, count))
        pieces = [take_slice(mask, axis, i).astype(np.uint8) for i in indices]
        height, width = pieces[0].shape
        dummy = np.zeros((height, width, 3), np.float32)
        resized = torch.stack([resize(image=dummy, mask=p)["mask"].float().reshape(1, size, size) for p in pieces])
        with torch.no_grad():
            probability = model.latent_to_probability(model.encode_mask(resized))
        probability = F.interpolate(probability, size=(height, width), mode="bilinear", align_corners=False)
        for offset, index in enumerate(indices):
            put_slice(out, axis, index, probability[offset, 0].numpy() > 0.5)
    return out


def dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, int, int]:
    """(Dice, 2|P and G|, |P| + |G|): both empty scores 1, as gmseg's standard convention."""
    overlap, total = 2 * int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred) + np.count_nonzero(gt))
    return (overlap / total if total else 1.0), overlap, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", required=True, help="first stage (e.g. ../shared/weights/taesd)")
    parser.add_argument("--data", type=Path, required=True, help="an MSD task or nnU-Net raw dataset folder")
    parser.add_argument("--split", type=Path, help="split file (by case); default: every labelled case")
    parser.add_argument("--stage", default="test")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--cases", type=int, default=0, help="only the first N cases (0: all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from gmseg.data.layouts import open_layout
    from gmseg.data.slicing import slice_axis
    from gmseg.data.splits import load_split
    from gmseg.first_stage import load_first_stage
    from gmseg.models import GMS, GMSConfig

    layout = open_layout(args.data)
    cases = layout.cases()
    if args.split:
        wanted = set(load_split(args.split)[args.stage])
        cases = [c for c in cases if c.name in wanted]
    cases = cases[: args.cases] if args.cases else cases
    first_stage = load_first_stage(args.vae)
    width = first_stage.latent_channels
    mapping = {**GMSConfig().mapping, "in_channels": width, "out_channels": width}
    classes = list(zip(layout.labels.foreground, layout.labels.values[1:]))
    results = {"vae": str(args.vae), "data": str(args.data), "n_cases": len(cases), "sizes": {}}
    volumes = [layout.load_case(case)[1] for case in cases]
    for size in args.sizes:
        model = GMS(GMSConfig(image_size=size, mapping=mapping), first_stage_module=first_stage).eval()
        started = time.perf_counter()
        per_class = {}
        for name, value in classes:
            scores, overlap, total = [], 0, 0
            for label in volumes:
                truth = label.array == value
                axis = slice_axis(label.geometry.spacing)
                score, o, t = dice(reconstruct(model, truth, axis, size), truth)
                scores.append(score)
                overlap, total = overlap + o, total + t
            values = np.asarray(scores)
            se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
            per_class[name] = {"dice_mean": float(values.mean()), "dice_se": se, "dice_pooled": overlap / max(total, 1)}
        seconds = time.perf_counter() - started
        results["sizes"][str(size)] = {"classes": per_class, "seconds": seconds}
        cells = ", ".join(
            f"{n} {c['dice_mean']:.4f} ± {c['dice_se']:.4f} (pooled {c['dice_pooled']:.4f})"
            for n, c in per_class.items()
        )
        print(f"{size} px: per-case 3D Dice {cells}; {len(cases)} cases in {seconds:.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
