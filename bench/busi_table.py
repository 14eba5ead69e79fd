"""Collects the BUSI quality run (bench/busi_quality.sh) into busi_quality.json and table.md (printed too)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

PAPER = {"dice": 81.43, "iou": 72.58}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def row(name: str, summary: dict, params: int, minutes: float, seconds_per_image: float) -> dict:
    metrics = summary["metrics"]
    return {
        "model": name,
        "dice": 100 * metrics["dice"]["mean"],
        "iou": 100 * metrics["iou"]["mean"],
        "hd95": metrics["hd95"]["mean"],
        "trainable_parameters": params,
        "training_minutes": minutes,
        "inference_seconds_per_image": seconds_per_image,
        "n_test": summary["counts"]["n_images"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True, help="bench/busi_quality.sh's output folder")
    args = parser.parse_args()
    from gmseg.models import count_trainable, load_model

    rows, runs = [], {}
    for part, label in (("gms", "GMS-TAESD"), ("unet", "MONAI U-Net")):
        if not (args.out / f"{part}_run.json").is_file():
            continue
        runs[part] = load(args.out / f"{part}_run.json")  # written by the script's part
        model = load_model(runs[part]["run"])
        rows.append(
            row(
                label,
                load(args.out / part / "summary.json"),
                count_trainable(model.trainable),
                runs[part]["training_minutes"],
                load(args.out / part / "timing.json")["seconds_per_image"],
            )
        )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "command": "bash bench/busi_quality.sh",
        "runs": {part: run["run"] for part, run in runs.items()},
        "rows": rows,
        "paper_gms_sd2": PAPER,
    }
    (args.out / "busi_quality.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| model | Dice | IoU | HD95 (px) | trainable params | training min | inference s/img |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['dice']:.2f} | {r['iou']:.2f} | {r['hd95']:.1f} | {r['trainable_parameters']:,} | "
        f"{r['training_minutes']:.1f} | {r['inference_seconds_per_image']:.3f} |"
        for r in rows
    ]
    lines.append(f"| GMS, SD-2 VAE (paper) | {PAPER['dice']} | {PAPER['iou']} | – | 1,565,000 | – | – |")
    # Written next to the JSON so the Markdown never lags the figures it is made from.
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
