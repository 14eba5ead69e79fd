"""What subnormal floats cost a GMS mapping's fp32 training step on this CPU, and what flushing them saves.

    python bench/denormals.py --model RUN/checkpoints/periodic-0028

(BENCHMARKS.md, "Time to Dice", says how that model is made: 28 epochs of the fp32 config from seed 2334.)

A trained mapping's attention is sharp: softmax weights below float32's smallest normal number (1.2e-38)
make x86 arithmetic several times slower. ``--model`` is a GMS model folder (its ``config.json`` and
``model.safetensors``; only the latent mapping is used, so the first stage need not be at hand). Each mode
runs in its own process (``common.Worker``), round-robin, ``--rounds`` times, the best round counting:

- ``off``: PyTorch's default;
- ``set late``: ``torch.set_flush_denormal(True)`` after the process's first torch operations;
- ``set first``: the same before them (``gmseg train``'s ``train.flush_denormals``, on by default).

Times one forward and backward of the mapping on a batch of ``--batch`` random latents (the training step's
mapping part), and reports the share of subnormal attention weights in that forward.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the workers take the parent's thread count
    workers = {
        mode: common.Worker("denormals:MappingWorker", mode, mode=mode, model=str(args.model), batch=args.batch)
        for mode in MODES
    }
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
    share = best["off"]["subnormal_share"]
    print(
        f"{args.model}: {share:.1%} of the attention's softmax weights are subnormal "
        f"(batch {args.batch} of random latents, {args.threads} threads, best of {args.rounds} rounds)\n"
    )
    print("| flush-denormal mode | mapping forward + backward, s | x off |")
    print("|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {best[mode]['seconds']:.3f} | {best['off']['seconds'] / best[mode]['seconds']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "modes": best}, indent=2) + "\n")


if __name__ == "__main__":
    main()
