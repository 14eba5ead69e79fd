"""Inference throughput and peak memory of ``gmseg predict`` against the release's validation loop.

    python bench/inference.py                      # CPU defaults: sd-vae (4 images) and taesd (16 images)
    python bench/inference.py --device cuda --compile --images 64

For each first stage (the SD-VAE architecture with random weights, whose cost equals the real one's, and
TAESD with its real weights when ../shared/weights/taesd exists) and each batch size, it times:

- ``release``: the release's ``valid.py`` loop (batch 1; image and mask encoded; all four heads with einsum
  attention; ``out`` decoded); batch size does not apply to it;
- ``gmseg``: :func:`gmseg.predict.make_predictor` with defaults, i.e. ``GMS.predict_proba`` (no mask encode,
  only the ``out`` head, SDPA attention, batched);
- ``gmseg+channels_last``, ``gmseg+bf16`` (and ``gmseg+compile`` with ``--compile``): the
  ``gmseg predict --channels-last / --precision bf16 / --compile`` options.

Every variant lives in its own process (peak memory is its own) built from the same seed (weights are
checked equal) and gets the same images; variants run one at a time, round-robin, ``--rounds`` times, and
the best round counts. A batch-B variant runs ``max(images, B)`` images, the release loop the most of any.
``max_dprob`` is the largest |probability difference| to the release loop on the same images.
Writes bench/results/inference.json.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that busy-wait at barriers while another job holds the core can make
# a step 10-100x slower (measured here: 0.05 s -> 6 s); passive waiting keeps every variant honest.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEFAULT_IMAGES = {"sd-vae": 4, "taesd": 16, "tiny-kl": 8}
DEFAULT_ROUNDS = {"sd-vae": 1, "taesd": 3, "tiny-kl": 2}
VARIANTS = {
    **common.VARIANTS,
    "gmseg+compile": {"compile": True},
    "gmseg+compile+channels_last": {"compile": True, "channels_last": True},
}


class InferenceWorker:
    """One (first stage, variant, batch size) in a worker process."""

    def __init__(self, first_stage: str, variant: str, batch: int, size: int, device: str, seed: int = 0):
        from gmseg.predict import make_predictor

        self.device = torch.device(device)
        self.variant, self.batch = variant, batch
        self.model, self.note = common.build_model(first_stage, size=size, seed=seed)
        self.checksum = common.parameter_checksum(self.model)
        if variant == "release":
            self.model.to(self.device)
            self.mapping = common.ReleaseMappingModel.from_gmseg(self.model.mapping).eval()
        else:
            self.predict = make_predictor(self.model, self.device, **VARIANTS[variant])
        self.memory = common.MemoryMeter(self.device)

    def info(self) -> dict[str, Any]:
        return {"checksum": self.checksum, "first_stage": self.note}

    def run(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, Any]:
        images, masks = images.to(self.device), masks.to(self.device)
        self.memory.reset()

        def work() -> torch.Tensor:
            if self.variant == "release":
                return common.release_predict(self.model.first_stage, self.mapping, images, masks)
            return torch.cat([self.predict(images[s : s + self.batch]) for s in range(0, len(images), self.batch)])

        probabilities, seconds, cpu_seconds = common.timed(work, self.device)
        return {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "probabilities": probabilities.float().cpu(),
            **self.memory.peak(),
        }


def run_first_stage(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    images_count = args.images or DEFAULT_IMAGES.get(name, 8)
    rounds = args.rounds or DEFAULT_ROUNDS.get(name, 1)
    variants = [v for v in args.variants if v != "release"]
    jobs = [("release", 1)] + [(v, b) for b in args.batch_sizes for v in variants]
    counts = {job: max(images_count, job[1]) for job in jobs}
    counts[("release", 1)] = max(counts.values())
    images, masks = common.synthetic_batch(counts[("release", 1)], args.size, seed=args.seed)
    print(f"[{name}] starting {len(jobs)} workers ...", flush=True)
    workers = {}
    try:
        for variant, batch in jobs:
            workers[(variant, batch)] = common.Worker(
                "inference:InferenceWorker",
                f"{name}/{variant}/b{batch}",
                first_stage=name,
                variant=variant,
                batch=batch,
                size=args.size,
                device=args.device,
                seed=args.seed,
            )
        infos = {job: worker.wait_ready().call("info") for job, worker in workers.items()}
        checksums = {info["checksum"] for info in infos.values()}
        if len(checksums) != 1:
            raise RuntimeError(f"workers built different weights: {checksums}")
        note = next(iter(infos.values()))["first_stage"]
        # Warm-up: one image per worker (weights paged in, kernels chosen; compile compiles here for
        # batch 1, and again on its first full batch, which is why --compile wants --rounds >= 2).
        for worker in workers.values():
            worker.call("run", images=images[:1], masks=masks[:1])
        results: dict[tuple[str, int], list[dict[str, Any]]] = {job: [] for job in jobs}
        for round_index in range(rounds):
            for job, worker in workers.items():
                count = counts[job]
                result = worker.call("run", images=images[:count], masks=masks[:count])
                results[job].append(result)
                print(
                    f"[{name}] round {round_index + 1}/{rounds} {job[0]:<28} b{job[1]}: "
                    f"{count / result['seconds']:.3f} img/s",
                    flush=True,
                )
    finally:
        for worker in workers.values():
            worker.close()

    release_best = min(results[("release", 1)], key=lambda r: r["seconds"])
    release_rate = counts[("release", 1)] / release_best["seconds"]
    rows = []
    for job in jobs:
        best = min(results[job], key=lambda r: r["seconds"])
        count = counts[job]
        rate = count / best["seconds"]
        reference = release_best["probabilities"][:count]
        rows.append(
            {
                "first_stage": name,
                "first_stage_weights": note,
                "variant": job[0],
                "batch": job[1],
                "images": count,
                "rounds": rounds,
                "seconds": round(best["seconds"], 3),
                "seconds_all_rounds": [round(r["seconds"], 3) for r in results[job]],
                "cpu_seconds": round(best["cpu_seconds"], 3),
                "images_per_s": rate,
                "speedup_vs_release": rate / release_rate,
                "cpu_time_speedup_vs_release": None
                if args.device.startswith("cuda")
                else (release_best["cpu_seconds"] / counts[("release", 1)]) / (best["cpu_seconds"] / count),
                "peak_mb": best["peak_mb"],
                "peak_over_model_mb": best["peak_over_model_mb"],
                "memory_kind": best["memory_kind"],
                "max_dprob": common.max_abs_diff(best["probabilities"], reference),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--first-stages", nargs="+", default=["sd-vae", "taesd"], choices=["sd-vae", "taesd", "tiny-kl"]
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument(
        "--images", type=int, default=None, help=f"images per variant (default per first stage: {DEFAULT_IMAGES})"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"timed round-robin rounds, best counts (default: {DEFAULT_ROUNDS})"
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["release", "gmseg", "gmseg+channels_last", "gmseg+bf16"],
        choices=list(VARIANTS),
    )
    parser.add_argument("--compile", action="store_true", help="add gmseg+compile (slow warm-up on a CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/inference.json)")
    args = parser.parse_args(argv)
    if args.compile and "gmseg+compile" not in args.variants:
        args.variants.append("gmseg+compile")
    started = time.perf_counter()
    payload = common.header(args.device)
    rows = []
    for name in args.first_stages:
        rows += run_first_stage(name, args)
    payload.update(
        {
            "benchmark": "inference",
            "size": args.size,
            "seconds_total": round(time.perf_counter() - started, 1),
            "notes": "release = the release's valid.py loop (batch 1, mask encoded, all heads, einsum attention); "
            "images_per_s from the best of the round-robin rounds; max_dprob against the release loop's "
            "probabilities on the same images and weights.",
            "rows": rows,
        }
    )
    path = common.write_result("inference", payload, args.out)
    print()
    print(
        f"Inference at {args.size}x{args.size} on {args.device} ({payload['machine']['cpu']}, torch {torch.__version__})"
    )
    print(
        common.format_table(
            rows,
            [
                ("first_stage", "first stage"),
                ("variant", "variant"),
                ("batch", "batch"),
                ("images", "images"),
                ("images_per_s", "images/s"),
                ("speedup_vs_release", "x release"),
                ("cpu_time_speedup_vs_release", "x release (CPU time)"),
                ("peak_mb", "peak MB"),
                ("peak_over_model_mb", "peak over model MB"),
                ("max_dprob", "max abs Δprob vs release"),
            ],
        )
    )
    print(f"\nWrote {path} ({payload['seconds_total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
