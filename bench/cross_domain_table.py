"""Gather the cross-domain study (bench/cross_domain.sh) into one table: models x train -> test columns.

Reads ``OUT/{gms,unet}-{busi,bus}/generalization/generalization.json`` and the run folders' training time;
writes ``OUT/table.json`` and ``OUT/table.md`` (with the per-image paired U-Net minus GMS difference of
each column) and prints the markdown. Parts not yet run are left blank.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from run_logs import log_facts
from study_stats import paired_difference, per_image_dice

MODELS = {"gms": "GMS-TAESD", "unet": "U-Net"}
# (train dataset, tested dataset, stage, column title)
COLUMNS = [
    ("busi", "busi", "test", "BUSI→BUSI (130)"),
    ("busi", "bus", "test", "BUSI→BUS (31)"),
    ("busi", "bus", "all", "BUSI→BUS (163)"),
    ("bus", "bus", "test", "BUS→BUS (31)"),
    ("bus", "busi", "test", "BUS→BUSI (130)"),
    ("bus", "busi", "all", "BUS→BUSI (647)"),
    ("kvasir", "kvasir", "test", "Kvasir→Kvasir (118)"),
]
TRAINED_ON = ("busi", "bus", "kvasir")
PAIRED_KEY = "U-Net minus GMS-TAESD (paired)"  # table.json's entry for the per-image model difference
PAPER = {"BUSI→BUSI (130)": 81.43, "BUSI→BUS (31)": 80.31, "BUS→BUS (31)": 88.42, "BUS→BUSI (130)": 61.60}


def training_minutes(part: Path) -> float | None:
    """Sum of the logged epoch times (train_log.csv, either model)."""
    minutes = log_facts(part / "run")[1]
    return None if minutes is None else round(minutes, 1)


def paired(out: Path) -> dict:
    """U-Net minus GMS per image, for each column both models were scored on (the same images)."""
    result = {}
    for train, tested, stage, title in COLUMNS:
        folders = [out / f"{key}-{train}" / "generalization" / tested / stage for key in ("unet", "gms")]
        if all((folder / "metrics.csv").is_file() for folder in folders):
            mean, se, n, better = paired_difference(*(per_image_dice(folder) for folder in folders))
            result[title] = {"mean": mean, "se": se, "n_images": n, "unet_better": better}
    return result


def gather(out: Path) -> dict:
    table: dict = {}
    for key, label in MODELS.items():
        for train in TRAINED_ON:
            path = out / f"{key}-{train}" / "generalization" / "generalization.json"
            if not path.is_file():
                continue
            rows = json.loads(path.read_text())["rows"]
            entry = table.setdefault(label, {"minutes": {}, "cells": {}})
            entry["minutes"][train] = training_minutes(out / f"{key}-{train}")
            for col_train, tested, stage, title in COLUMNS:
                if col_train != train:
                    continue
                for row in rows:
                    if row["dataset"] == tested and row["stage"] == stage:
                        entry["cells"][title] = {k: row[k] for k in ("n_images", "dice", "iou", "hd95")}
    return table


def fmt(value: float, scale: float = 100.0, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{scale * value:.{digits}f}"


def markdown(table: dict, differences: dict) -> str:
    titles = [c[3] for c in COLUMNS]
    head = "| model | " + " | ".join(titles) + " | training min (BUSI / BUS / Kvasir) |"
    lines = [head, "|---|" + "---|" * (len(titles) + 1)]
    for label, entry in table.items():
        cells = []
        for title in titles:
            cell = entry["cells"].get(title)
            if cell is None:
                cells.append("")
                continue
            d, i, h = cell["dice"], cell["iou"], cell["hd95"]
            cells.append(f"{fmt(d['mean'])} ± {fmt(d['se'])} / {fmt(i['mean'])} / {fmt(h['mean'], 1.0, 1)}")
        minutes = " / ".join(str(entry["minutes"].get(t, "")) for t in TRAINED_ON)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {minutes} |")
    if differences:
        cells = [differences.get(t) for t in titles]
        lines.append(
            "| U-Net minus GMS-TAESD, paired per image (U-Net better on) | "
            + " | ".join(
                "" if c is None else f"{c['mean']:+.2f} ± {c['se']:.2f} ({c['unet_better']} of {c['n_images']})"
                for c in cells
            )
            + " | |"
        )
    lines.append(
        "| GMS, SD-2 VAE (paper) | " + " | ".join(f"{PAPER[t]:.2f}" if t in PAPER else "" for t in titles) + " | |"
    )
    lines += ["", "Cells: Dice ± standard error / IoU (both %) / HD95 (px), at each image's native size."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="the study's folder (bench/cross_domain.sh's OUT)")
    args = parser.parse_args()
    out = Path(args.out)
    table, differences = gather(out), paired(out)
    (out / "table.json").write_text(json.dumps({**table, PAIRED_KEY: differences}, indent=2) + "\n")
    text = markdown(table, differences)
    (out / "table.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
