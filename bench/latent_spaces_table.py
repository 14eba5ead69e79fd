"""Gather the latent-space study (bench/latent_spaces.sh) into one table: one row per first stage and mapping.

Reads OUT/<part>/run (train_log.csv, run_info.json), OUT/<part>/generalization (its per-image metrics.csv) and
OUT/ceiling/<autoencoder>/ceiling.json; writes OUT/table.json and OUT/table.md and prints the markdown.
Parts not yet run are left out; the U-Net (part ``unet``, no first stage) is the reference row.
``--wider`` prints instead which 16-channel space gets the wider mapping (see ``wider_part``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from run_logs import epochs_trained, log_facts
from study_stats import paired_difference, per_image_dice

PARTS = {
    "taesd": ("taesd", 32),
    "taesdxl": ("taesdxl", 32),
    "taesd3": ("taesd3", 32),
    "taef1": ("taef1", 32),
    "taesd3-ch64": ("taesd3", 64),
    "taef1-ch64": ("taef1", 64),
    "unet": (None, None),
}
WIDENED = ("taesd3", "taef1")  # the 16-channel spaces, candidates for a wider mapping


def cell(row: dict | None, key: str = "dice") -> str:
    if row is None:
        return ""
    return f"{100 * row[key]['mean']:.2f} ± {100 * row[key]['se']:.2f}"


def trainable_parameters(run: Path) -> int | None:
    """Parameters of the trained model, as the run recorded them (run_info.json outlives the checkpoints)."""
    info = run / "run_info.json"
    if not info.is_file():
        return None
    return json.loads(info.read_text())[-1].get("trainable_parameters")


def versus_taesd(out: Path, part: str, scored: str) -> dict | None:
    """The part minus TAESD per image on the same images (``scored``: a folder under generalization/): the
    paired difference says whether a first stage's lead is beyond the noise, which two means with SEs cannot."""
    pair = [out / name / "generalization" / scored for name in (part, "taesd")]
    if part == "taesd" or not all((f / "metrics.csv").is_file() for f in pair):
        return None
    mean, se, n, better = paired_difference(*(per_image_dice(f) for f in pair))
    return {"mean": mean, "se": se, "n_images": n, "better": better}


def paired_cell(diff: dict | None) -> str:
    if diff is None:
        return ""
    return f"{diff['mean']:+.2f} ± {diff['se']:.2f} ({diff['better']} of {diff['n_images']})"


def wider_part(out: Path) -> str:
    """The one wider-mapping part to train: ``<space>-ch64`` for the 16-channel space with the higher best
    validation Dice at the default width (a rule fixed before either ran; test scores play no part)."""
    best = {p: log_facts(out / p / "run")[0] for p in WIDENED}
    missing = [p for p, value in best.items() if value is None]
    if missing:
        raise SystemExit(
            f'error: train {" and ".join(missing)} first (PARTS="{" ".join(missing)}"): the '
            f"wider mapping goes to the 16-channel space that validates better, under {out}"
        )
    return max(WIDENED, key=best.__getitem__) + "-ch64"


def inference_times(out: Path) -> dict[str, float] | None:
    """s/image by part from bench/latent_spaces_inference.py (all models timed side by side), if it ran."""
    path = out / "inference.json"
    if not path.is_file():
        return None
    return {row["part"]: row["seconds_per_image"] for row in json.loads(path.read_text())["rows"]}


def gather(out: Path) -> list[dict]:
    rows = []
    side_by_side = inference_times(out)
    for part, (autoencoder, ch) in PARTS.items():
        folder = out / part
        result = folder / "generalization" / "generalization.json"
        if not result.is_file():
            continue
        cells = {(r["dataset"], r["stage"]): r for r in json.loads(result.read_text())["rows"]}
        val_best, minutes = log_facts(folder / "run")
        ceiling_file = out / "ceiling" / str(autoencoder) / "ceiling.json"
        ceiling = json.loads(ceiling_file.read_text()) if ceiling_file.is_file() else {}
        if side_by_side is None:  # the scoring run's own time, which depends on the machine's load then
            timing = json.loads((folder / "generalization" / "busi" / "test" / "timing.json").read_text())
            seconds = timing["seconds_per_image"]
        else:
            seconds = side_by_side.get(part)
        rows.append(
            {
                "part": part,
                "autoencoder": autoencoder,
                "channels": ceiling.get("latent_channels"),
                "ch": ch,
                "parameters": trainable_parameters(folder / "run"),
                "mask_ceiling": ceiling.get("mask_dice"),
                "psnr": ceiling.get("psnr_mean"),
                "val_best": val_best,
                "epochs": epochs_trained(folder / "run"),
                "busi": cells.get(("busi", "test")),
                "busi_vs_taesd": versus_taesd(out, part, "busi/test"),
                "bus31": cells.get(("bus", "test")),
                "bus163": cells.get(("bus", "all")),
                "bus163_vs_taesd": versus_taesd(out, part, "bus/all"),
                "minutes": minutes,
                "seconds_per_image": seconds,
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| first stage | latent ch | mapping ch (params) | mask ceiling Dice | image PSNR dB | val Dice (best) "
        "| BUSI test Dice | BUSI − TAESD, paired | BUS Dice (31) | BUS Dice (163) | BUS (163) − TAESD, paired "
        "| training min | inference s/image |",
        "|---|---:|---|---:|---:|---:|---|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        params = "" if r["parameters"] is None else f" ({r['parameters'] / 1e6:.2f} M)"
        ceiling = "" if r["mask_ceiling"] is None else f"{r['mask_ceiling']:.4f}"
        psnr = "" if r["psnr"] is None else f"{r['psnr']:.2f}"
        stage = r["autoencoder"] or "none (U-Net, reference)"
        mapping = "U-Net" if r["ch"] is None else r["ch"]
        seconds = "" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.3f}"
        done, scheduled = r["epochs"]
        short = f" ({done} of {scheduled} epochs)" if done is not None and done < scheduled else ""
        lines.append(
            f"| {stage} | {r['channels'] or ''} | {mapping}{params} | {ceiling} | {psnr} "
            f"| {r['val_best']:.3f}{short} | {cell(r['busi'])} | {paired_cell(r['busi_vs_taesd'])} | {cell(r['bus31'])} "
            f"| {cell(r['bus163'])} | {paired_cell(r['bus163_vs_taesd'])} "
            f"| {r['minutes']:.1f} | {seconds} |"
        )
    lines += [
        "",
        "Dice ± standard error (%), per image at its native size; ceilings on the 130 BUSI test masks. Paired: "
        "this row minus TAESD per image on the same images (on how many this row is better). Inference: "
        "bench/latent_spaces_inference.py (every model side by side in one process, 224 px, one image at a "
        "time) when it has run, else each scoring run's own time. A run scored before the end of its schedule "
        "says so beside its validation Dice.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wider", action="store_true", help="print the wider-mapping part to train, and stop")
    args = parser.parse_args()
    if args.wider:
        print(wider_part(args.out))
        return
    rows = gather(args.out)
    (args.out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = markdown(rows)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
