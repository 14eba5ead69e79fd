"""Gather bench/generalization_levers.sh: each lever's best BUSI validation Dice and its Dice on BUS's
training names, with the paired difference to the baseline and its standard error; prints markdown."""

from __future__ import annotations

import argparse
from pathlib import Path

from run_logs import log_facts
from study_stats import paired_difference, per_image_dice, percent_mean_se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    base = per_image_dice(args.out / "baseline" / "bus-train")
    base_val = log_facts(args.out / "baseline" / "run")[0]
    print("| lever | BUSI val Dice (best) | BUS train-names Dice | paired difference ± SE | recommended |")
    print("|---|---:|---|---|---|")
    for part in sorted(p for p in args.out.iterdir() if (p / "bus-train" / "metrics.csv").is_file()):
        scores, val = per_image_dice(part / "bus-train"), log_facts(part / "run")[0]
        mean, se = percent_mean_se(list(scores.values()))
        diff, diff_se = paired_difference(scores, base)[:2]
        verdict = (
            "baseline"
            if part.name == "baseline"
            else ("yes" if diff > 2 * diff_se and val >= base_val - 0.01 else "no")
        )
        print(f"| {part.name} | {val:.3f} | {mean:.2f} ± {se:.2f} | {diff:+.2f} ± {diff_se:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
