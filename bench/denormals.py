"""What subnormal floats cost a GMS mapping's fp32 training step and gmseg's prediction on this CPU, and what
flushing them saves.

    python bench/denormals.py --model RUN/checkpoints/periodic-0028
    python bench/denormals.py --model RUN/checkpoints/best --predict ../shared/data/busi/images --limit 32

(BENCHMARKS.md, "Time to Dice", says how that model is made: 28 epochs of the fp32 config from seed 2334.)

Arithmetic that produces numbers below float32's smallest normal number (1.2e-38) runs several times slower
on x86; a trained mapping's sharp attention is one place they occur (the share reported below), though not
every host is slowed by them (BENCHMARKS.md). ``--model`` is a GMS model folder (its ``config.json`` and
``model.safetensors``; only the latent mapping is used, so the first stage need not be at hand). Each mode
runs in its own process (``common.Worker``), round-robin, ``--rounds`` times, the best round counting:

- ``off``: PyTorch's default;
- ``set late``: ``torch.set_flush_denormal(True)`` after the process's first torch operations;
- ``set first``: the same before them (``gmseg train``'s ``train.flush_denormals``, on by default).

Times one forward and backward of the mapping on a batch of ``--batch`` random latents (the training step's
mapping part), and reports the share of subnormal attention weights in that forward. With ``--predict FOLDER``
it times instead gmseg's default predictor (``gmseg predict``'s: the release's batch-1 loop, fp32) on the
folder's first ``--limit`` images (sorted by name; the model's first stage must be at hand), and compares each
mode's probabilities with ``off``'s: the largest difference and the mask pixels that change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from gmseg.numerics import flushing_denormals  # noqa: E402

MODES = ("off", "set late", "set first")


class MappingWorker:
    """One mode in its own process (built by ``common.Worker`` before the process's first torch operation)."""

    def __init__(self, mode: str, model: str, batch: int):
        if mode == "set first":
            torch.set_flush_denormal(True)
        from gmseg.mapping import LatentMappingModel
        from gmseg.models.base import load_weights

        config = json.loads((Path(model) / "config.json").read_text())
        self.mapping = LatentMappingModel(**config["mapping"])
        load_weights(self.mapping, Path(model) / "model.safetensors")
        generator = torch.Generator().manual_seed(0)
        self.latents = torch.randn(batch, self.mapping.in_channels, 28, 28, generator=generator)
        self.share = self.subnormal_share()  # the process's first torch work
        if mode == "set late":
            torch.set_flush_denormal(True)

    def subnormal_share(self) -> float:
        """The share of the attention's softmax weights that are subnormal, in one forward."""
        counts = [0, 0]
        softmax = torch.softmax

        def counting(scores: torch.Tensor, dim: int) -> torch.Tensor:
            weights = softmax(scores, dim=dim)
            counts[0] += int(((weights != 0) & (weights.abs() < torch.finfo(torch.float32).tiny)).sum())
            counts[1] += weights.numel()
            return weights

        torch.softmax = counting
        try:
            with torch.no_grad():
                self.mapping(self.latents)
        finally:
            torch.softmax = softmax
        return counts[0] / max(counts[1], 1)

    def run(self, repeats: int) -> dict:
        """The best of ``repeats`` forward + backward passes."""
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            sum(level.mean() for level in self.mapping(self.latents).values()).backward()
            seconds.append(time.perf_counter() - start)
        return {"seconds": min(seconds), "subnormal_share": self.share}


class PredictWorker:
    """gmseg's default predictor in one mode, in its own process (as :class:`MappingWorker`)."""

    def __init__(self, mode: str, model: str, images: str, limit: int, batch: int):
        if mode == "set first":
            torch.set_flush_denormal(True)
        from gmseg.inference import make_predictor
        from gmseg.models import load_model
        from gmseg.predict import collect_inputs, image_batches

        self.predict = make_predictor(load_model(model), "cpu")
        files = collect_inputs(images)[:limit]
        spec = self.predict.spec
        self.batches = [batch for _, _, batch, _ in image_batches(files, spec.image_size, batch, spec.intensity)]
        self.threshold = float(spec.threshold)
        self.predict(self.batches[0])  # the process's first model work (and a warm-up)
        if mode == "set late":
            torch.set_flush_denormal(True)

    def run(self, repeats: int) -> dict:
        """The best of ``repeats`` passes over the images, per image, and the last pass's probabilities."""
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            probabilities = torch.cat([self.predict(batch) for batch in self.batches])
            seconds.append(time.perf_counter() - start)
        return {
            "seconds": min(seconds) / len(probabilities),
            "probabilities": probabilities.numpy(),
            "threshold": self.threshold,
            "flushing": flushing_denormals(),
        }


def predict_figures(best: dict[str, dict]) -> dict[str, dict]:
    """Each mode's figures without its probabilities, and those probabilities against ``off``'s: the largest
    difference and the mask pixels (at the model's threshold) that change."""
    reference, threshold = torch.from_numpy(best["off"]["probabilities"]), best["off"]["threshold"]
    figures = {}
    for mode, result in best.items():
        probabilities = torch.from_numpy(result["probabilities"])
        changed = int(((probabilities > threshold) != (reference > threshold)).sum())
        figures[mode] = {k: v for k, v in result.items() if k != "probabilities"}
        figures[mode].update(max_abs_diff=common.max_abs_diff(probabilities, reference), mask_pixels_changed=changed)
    return figures


def print_table(best: dict[str, dict], seconds_title: str, extra: list[tuple[str, str]]) -> None:
    """The modes' seconds and their speed against ``off``, plus the ``extra`` (key, title) columns."""
    rows = [{"mode": mode, **best[mode], "x_off": best["off"]["seconds"] / best[mode]["seconds"]} for mode in MODES]
    columns = [("mode", "flush-denormal mode"), ("seconds", seconds_title), ("x_off", "x off"), *extra]
    print(common.format_table(rows, columns))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predict", type=Path, help="time gmseg's predictor on this folder's images instead")
    parser.add_argument("--limit", type=int, default=32, help="with --predict: how many of its images")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # the workers take the parent's thread count
    if args.predict:
        options = dict(model=str(args.model), images=str(args.predict), limit=args.limit, batch=args.batch)
        workers = {mode: common.Worker("denormals:PredictWorker", mode, mode=mode, **options) for mode in MODES}
    else:
        options = dict(model=str(args.model), batch=args.batch)
        workers = {mode: common.Worker("denormals:MappingWorker", mode, mode=mode, **options) for mode in MODES}
    best: dict[str, dict] = {}
    try:
        for _ in range(args.rounds):
            for mode, worker in workers.items():
                result = worker.call("run", repeats=args.repeats)
                if mode not in best or result["seconds"] < best[mode]["seconds"]:
                    best[mode] = result
    finally:
        for worker in workers.values():
            worker.close()
    if args.predict:
        report_predict(args, best)
        return
    share = best["off"]["subnormal_share"]
    print(
        f"{args.model}: {share:.1%} of the attention's softmax weights are subnormal "
        f"(batch {args.batch} of random latents, {args.threads} threads, best of {args.rounds} rounds)\n"
    )
    print_table(best, "mapping forward + backward, s", [])
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "modes": best}, indent=2) + "\n")


def report_predict(args: argparse.Namespace, best: dict[str, dict]) -> None:
    """Print (and with ``--json`` write) the prediction table."""
    print(
        f"{args.model}: gmseg's default predictor (fp32, the release's batch-1 loop) on the first {args.limit} "
        f"images of {args.predict}, {args.threads} threads, best of {args.rounds} rounds of {args.repeats}\n"
    )
    figures = predict_figures(best)
    changes = [("max_abs_diff", "max abs diff of probabilities vs off"), ("mask_pixels_changed", "mask pixels changed")]
    print_table(figures, "s / image", changes)
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "predict": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
