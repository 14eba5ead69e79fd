"""Gather the volume study (bench/volumes.sh) into one table: per-class 3D Dice ± SE, HD95 in mm, training
minutes, seconds per volume, for GMS-TAESD and the U-Net, plus their paired per-case difference.

Reads ``OUT/{gms,unet}/test/{metrics.csv,timing.json}``, the run folders' train_log.csv, ``OUT/ceiling/ceiling.json``
and ``OUT/predict/volume_predict.json`` when present; writes ``OUT/table.json`` and ``OUT/table.md`` and
prints the markdown. Parts not yet run are left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from run_logs import epochs_trained, log_facts

MODELS = {"gms": "GMS-TAESD", "unet": "U-Net"}


def mean_se(values: list[float]) -> tuple[float, float, int]:
    """Mean and standard error (ddof=1) over the finite values, and how many there were."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    if not n:
        return math.nan, math.nan, 0
    mean = sum(finite) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1) / n) if n > 1 else math.nan
    return mean, se, n


def read_rows(test: Path) -> dict[str, dict[str, float]]:
    """metrics.csv of a volume test: case name -> its scores."""
    with (test / "metrics.csv").open() as handle:
        return {row["name"]: {k: float(v) for k, v in row.items() if k != "name"} for row in csv.DictReader(handle)}


def classes_of(rows: dict[str, dict[str, float]]) -> list[str]:
    first = next(iter(rows.values()))
    return [key.removeprefix("dice_") for key in first if key.startswith("dice_")]


def model_row(out: Path, model: str) -> dict | None:
    test = out / model / "test"
    if not (test / "metrics.csv").is_file():
        return None
    rows = read_rows(test)
    row: dict = {"model": MODELS[model], "cases": len(rows), "classes": {}}
    for name in classes_of(rows):
        dice = mean_se([r[f"dice_{name}"] for r in rows.values()])
        hd95 = mean_se([r[f"hd95_{name}"] for r in rows.values()])
        row["classes"][name] = {"dice": dice[:2], "hd95": hd95[:2], "hd95_n": hd95[2]}
    row["mean_dice"] = mean_se([r["mean_dice"] for r in rows.values()])[:2]
    _, minutes = log_facts(out / model / "run")
    row["train_minutes"] = minutes
    row["epochs"] = epochs_trained(out / model / "run")
    timing = test / "timing.json"
    row["seconds_per_volume"] = json.loads(timing.read_text())["seconds_per_volume"] if timing.is_file() else None
    return row


def paired(out: Path, key: str) -> tuple[float, float, int] | None:
    """U-Net minus GMS per case on ``key`` (e.g. dice_Anterior): mean, SE, cases."""
    if not all((out / m / "test" / "metrics.csv").is_file() for m in MODELS):
        return None
    gms, unet = read_rows(out / "gms" / "test"), read_rows(out / "unet" / "test")
    both = sorted(set(gms) & set(unet))
    return mean_se([unet[n][key] - gms[n][key] for n in both])


def pct(pair: tuple[float, float]) -> str:
    mean, se = pair
    return "n/a" if not math.isfinite(mean) else f"{100 * mean:.2f} ± {100 * se:.2f}"


def mm(pair: tuple[float, float]) -> str:
    mean, se = pair
    return "n/a" if not math.isfinite(mean) else f"{mean:.2f} ± {se:.2f}"


def build(out: Path) -> tuple[dict, str]:
    rows = [r for r in (model_row(out, m) for m in MODELS) if r is not None]
    table: dict = {"models": rows}
    lines = []
    if rows:
        names = list(rows[0]["classes"])
        head = " | ".join(f"{n} Dice % | {n} HD95 mm" for n in names)
        lines += [f"| model | cases | {head} | mean Dice % | train min (epochs) | s / volume |"]
        lines += ["|---|---:|" + "---:|" * (2 * len(names) + 3)]
        for r in rows:
            cells = " | ".join(f"{pct(r['classes'][n]['dice'])} | {mm(r['classes'][n]['hd95'])}" for n in names)
            done, planned = r["epochs"]
            minutes = "n/a" if r["train_minutes"] is None else f"{r['train_minutes']:.1f}"
            spv = "n/a" if r["seconds_per_volume"] is None else f"{r['seconds_per_volume']:.2f}"
            lines.append(
                f"| {r['model']} | {r['cases']} | {cells} | {pct(r['mean_dice'])} | {minutes} ({done}/{planned}) | {spv} |"
            )
        differences = {n: paired(out, f"dice_{n}") for n in names}
        if all(d is not None for d in differences.values()):
            table["unet_minus_gms"] = differences
            cells = ", ".join(f"{n} {100 * d[0]:+.2f} ± {100 * d[1]:.2f}" for n, d in differences.items())
            lines.append(f"\nU-Net minus GMS-TAESD, paired per case (Dice %, mean ± SE): {cells}")
    ceiling = out / "ceiling" / "ceiling.json"
    if ceiling.is_file():
        data = json.loads(ceiling.read_text())
        table["ceiling"] = data
        lines.append(f"\nTAESD ceiling, decode(encode(true mask)) per class, {data['n_cases']} cases (Dice %):")
        for size, entry in data["sizes"].items():
            cells = ", ".join(
                f"{n} {100 * c['dice_mean']:.2f} ± {100 * c['dice_se']:.2f} (pooled {100 * c['dice_pooled']:.2f})"
                for n, c in entry["classes"].items()
            )
            lines.append(f"- {size} px: {cells}")
    predict = out / "predict" / "volume_predict.json"
    if predict.is_file():
        data = json.loads(predict.read_text())
        table["predict"] = data
        shape = "x".join(map(str, data["shape_zyx"][::-1]))
        lines.append(f"\n`gmseg predict` on a {shape} volume at {data['input_size']} px:")
        for name, m in data["models"].items():
            lines.append(f"- {name}: {m['seconds']:.1f} s, peak RSS {m['peak_rss_gib']:.2f} GiB")
    return table, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    table, markdown = build(args.out)
    (args.out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (args.out / "table.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
