"""Gather the multi-class BUSI study (bench/multiclass.sh) into one table.

Per model: Dice of each lesion class (benign, malignant) and of the lesion against the background (all
lesion labels merged) on the 130 test images, the binary model's Dice at the same scale beside it (from
bench/cross_domain.sh), best validation Dice, training minutes, and whether each image's majority predicted
lesion label matches its pathology (accuracy and confusion matrix). Writes OUT/table.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from run_logs import log_facts
from study_stats import paired_difference, percent_mean_se

MODELS = {
    "gms-colour": ("GMS-TAESD, colour coding", "gms-busi"),
    "gms-one_vs_rest": ("GMS-TAESD, one-vs-rest", "gms-busi"),
    "unet": ("U-Net (3 outputs)", "unet-busi"),
}
PATHOLOGY = ("benign", "malignant")  # the lesion labels of the 3-class BUSI
PAIRED_KEY = "colour minus one-vs-rest (paired)"  # table.json's entry for the paired encoding difference


def mean_se(stats: dict) -> tuple[float, float]:
    n = int(stats["n"])
    return 100 * float(stats["mean"]), (100 * float(stats["std"]) / math.sqrt(n) if n > 1 else math.nan)


def class_dice(rows: list[dict], name: str) -> tuple[float, float]:
    """Dice of class ``name`` over the images whose truth holds it (mean, SE, %): an image without the class
    would score 1 by the both-empty convention and hide how the class itself is segmented."""
    return percent_mean_se([float(r[f"dice_{name}"]) for r in rows if float(r[f"true_area_{name}"]) > 0])


def paired(a: list[dict], b: list[dict], column: str, holding: str | None = None) -> tuple[float, float]:
    """Mean and SE (%) of the per-image difference a - b in ``column`` (over the images holding class
    ``holding`` when given): the two models saw the same images, so their difference is paired."""
    first = {r["name"]: float(r[column]) for r in a}
    second = {r["name"]: float(r[column]) for r in b if holding is None or float(r[f"true_area_{holding}"]) > 0}
    return paired_difference(first, second)[:2]


def encoding_difference(rows: dict[str, list[dict]]) -> dict | None:
    """Colour coding minus one-vs-rest, paired per image (``rows``: each model's metrics.csv rows by part
    name): lesion, benign and malignant Dice; None until both encodings are tested."""
    if "gms-colour" not in rows or "gms-one_vs_rest" not in rows:
        return None
    a, b = rows["gms-colour"], rows["gms-one_vs_rest"]
    return {
        "lesion": paired(a, b, "any_dice"),
        "benign": paired(a, b, "dice_benign", "benign"),
        "malignant": paired(a, b, "dice_malignant", "malignant"),
    }


def pathology_confusion(rows: list[dict]) -> dict:
    """Truth (the image's lesion label) x prediction (majority lesion label of the predicted pixels, or none),
    from metrics.csv's per-class true and predicted areas: the same pixel counts as the label maps, so the
    table needs neither the predictions nor the prepared data, which the study does not keep."""
    matrix = {t: {p: 0 for p in ("benign", "malignant", "none")} for t in PATHOLOGY}
    for row in rows:
        present = [name for name in PATHOLOGY if float(row[f"true_area_{name}"]) > 0]
        if len(present) != 1:
            continue  # no lesion or both kinds: no single pathology to match
        counts = {name: float(row[f"pred_area_{name}"]) for name in PATHOLOGY}
        guess = "none" if not any(counts.values()) else max(counts, key=counts.get)
        matrix[present[0]][guess] += 1
    total = sum(sum(row.values()) for row in matrix.values())
    correct = sum(matrix[t][t] for t in matrix)
    return {"matrix": matrix, "n": total, "accuracy": correct / total if total else math.nan}


def gather(out: Path, binary: Path) -> tuple[dict, dict[str, list[dict]]]:
    """One row per tested model (by its label), and the models' per-image metrics rows (by part name)."""
    table, rows_by_part = {}, {}
    for key, (label, binary_part) in MODELS.items():
        summary_file = out / key / "test" / "summary.json"
        if not summary_file.is_file():
            continue
        metrics = json.loads(summary_file.read_text())["metrics"]
        with (out / key / "test" / "metrics.csv").open() as handle:
            rows = rows_by_part[key] = list(csv.DictReader(handle))
        row = {
            "benign": class_dice(rows, "benign"),
            "malignant": class_dice(rows, "malignant"),
            "lesion": mean_se(metrics["any_dice"]),
            "pathology": pathology_confusion(rows),
        }
        row["val_best"], row["minutes"] = log_facts(out / key / "run")
        binary_summary = binary / binary_part / "generalization" / "busi" / "test" / "summary.json"
        if binary_summary.is_file():
            row["binary_lesion"] = mean_se(json.loads(binary_summary.read_text())["metrics"]["dice"])
        table[label] = row
    return table, rows_by_part


def cell(pair: tuple[float, float] | None) -> str:
    return "" if pair is None else f"{pair[0]:.2f} ± {pair[1]:.2f}"


def markdown(table: dict, difference: dict | None) -> str:
    lines = [
        "| model | benign Dice | malignant Dice | lesion Dice (3-class) | lesion Dice (binary model) "
        "| pathology accuracy (n) | val best | training min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        p = row["pathology"]
        val = "" if row["val_best"] is None else f"{row['val_best']:.3f}"
        minutes = "" if row["minutes"] is None else f"{row['minutes']:.1f}"
        lines.append(
            f"| {label} | {cell(row['benign'])} | {cell(row['malignant'])} | {cell(row['lesion'])} "
            f"| {cell(row.get('binary_lesion'))} | {100 * p['accuracy']:.1f} % ({p['n']}) | {val} | {minutes} |"
        )
    lines += ["", "Confusion (rows: pathology; columns: majority predicted lesion label):", ""]
    lines += [
        "| model | benign→benign | benign→malignant | benign→none | malignant→benign | malignant→malignant "
        "| malignant→none |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        m = row["pathology"]["matrix"]
        cells = [m[t][p] for t in ("benign", "malignant") for p in ("benign", "malignant", "none")]
        lines.append(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
    if difference is not None:
        lines += [
            "",
            "GMS encodings, colour coding minus one-vs-rest, per-image paired difference ± SE (%): "
            + ", ".join(f"{k} {v[0]:+.2f} ± {v[1]:.2f}" for k, v in difference.items())
            + ".",
        ]
    lines += [
        "",
        "Dice ± standard error (%), per image at its native size; a class's Dice over the test images holding "
        "it; binary models from bench/cross_domain.sh.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--binary", type=Path, required=True, help="the cross-domain study's folder, same scale")
    args = parser.parse_args()
    table, rows = gather(args.out, args.binary)
    difference = encoding_difference(rows)
    stored = table if difference is None else {**table, PAIRED_KEY: difference}
    (args.out / "table.json").write_text(json.dumps(stored, indent=2, default=float) + "\n")
    text = markdown(table, difference)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
