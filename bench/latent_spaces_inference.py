"""Inference time per image of every model of the latent-space study, measured side by side.

    python bench/latent_spaces_inference.py                  # every part with a run folder
    python bench/latent_spaces_inference.py --images 8 --rounds 2

Each part's model is rebuilt from its run's ``config.yaml`` (the real first stage of ``model.vae``, the
mapping or U-Net at its trained width; seeded random weights, which cost what the trained ones do), then all
of them predict the same 224 px images in one process, one model at a time, round-robin, through
:func:`gmseg.predict.make_predictor` (what ``gmseg predict`` runs); the best round counts. The table's
inference column comes from here rather than from each part's scoring run, whose times depend on what else
the machine was doing then. Writes OUT/inference.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/inference.py

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from gmseg.config import load_config  # noqa: E402
from gmseg.models import build_model, model_options  # noqa: E402
from gmseg.predict import make_predictor  # noqa: E402
from latent_spaces_table import PARTS  # noqa: E402


def build(run: Path, seed: int) -> Any:
    """The run's architecture, seeded. A first stage recorded under another machine's path is looked for
    under ../shared/weights by its folder name."""
    config = load_config(run / "config.yaml")
    options = model_options(config)
    vae = Path(str(getattr(options, "vae", "")))
    if options.name == "gms" and not vae.exists() and (common.SHARED / "weights" / vae.name).is_dir():
        config = load_config(run / "config.yaml", [f"model.vae={common.SHARED / 'weights' / vae.name}"])
    torch.manual_seed(seed)
    return build_model(config).eval()


def measure(out: Path, images: int, rounds: int, seed: int) -> list[dict[str, Any]]:
    parts = [p for p in PARTS if (out / p / "run" / "config.yaml").is_file()]
    if not parts:
        raise SystemExit(f"error: no run folder under {out}: run bench/latent_spaces.sh first")
    batch, _ = common.synthetic_batch(images, 224, seed=seed)  # in [-1, 1], as the models take them
    device = torch.device("cpu")
    predictors = {}
    for part in parts:
        print(f"building {part} ...", flush=True)
        predictors[part] = make_predictor(build(out / part / "run", seed), device)
        with torch.inference_mode():
            predictors[part](batch[:1])  # warm-up: first-call allocations are not the model's cost
    best: dict[str, tuple[float, float]] = {}
    for round_ in range(rounds):
        for part, predict in predictors.items():
            with torch.inference_mode():
                _, seconds, cpu_seconds = common.timed(lambda: predict(batch), device)
            previous = best.get(part, (float("inf"), float("inf")))
            best[part] = (min(previous[0], seconds), min(previous[1], cpu_seconds))
            print(f"round {round_ + 1}: {part} {seconds / images:.3f} s/image", flush=True)
    return [
        {
            "part": part,
            "seconds_per_image": round(best[part][0] / images, 4),
            "cpu_seconds_per_image": round(best[part][1] / images, 4),
        }
        for part in parts
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=common.RESULTS / "latent_spaces")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    payload = common.header("cpu")
    payload.update(
        {
            "benchmark": "latent_spaces_inference",
            "images": args.images,
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
            "rows": measure(args.out, args.images, args.rounds, args.seed),
        }
    )
    path = common.write_result("inference", payload, args.out / "inference.json")
    print(
        common.format_table(
            payload["rows"],
            [("part", "part"), ("seconds_per_image", "s/image"), ("cpu_seconds_per_image", "CPU s/image")],
        )
    )
    print(f"\nWrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
