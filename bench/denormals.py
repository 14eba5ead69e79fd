"""What subnormal floats cost a GMS mapping's fp32 training step on this CPU, and what flushing them saves.

    python bench/denormals.py --model RUN/checkpoints/periodic-0028

(BENCHMARKS.md, "Time to Dice", says how that model is made: 28 epochs of the fp32 config from seed 2334.)

A trained mapping's attention is sharp: softmax weights below float32's smallest normal number (1.2e-38)
make x86 arithmetic several times slower. ``--model`` is a GMS model folder (its ``config.json`` and
``model.safetensors``; only the latent mapping is used, so the first stage need not be at hand). Each mode
runs in its own fresh process, round-robin, ``--rounds`` times, the best round counting:

- ``off``: PyTorch's default;
- ``set late``: ``torch.set_flush_denormal(True)`` after the process's first torch operations;
- ``set first``: the same before them (``gmseg train``'s ``train.flush_denormals``, on by default).

Times one forward and backward of the mapping on a batch of ``--batch`` random latents (the training step's
mapping part), and reports the share of subnormal attention weights in that forward.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODES = ("off", "set late", "set first")


def child(mode: str, model: Path, batch: int, threads: int, repeats: int) -> dict:
    """One mode in this (fresh) process: the best of ``repeats`` forward + backward passes."""
    import torch

    if mode == "set first":
        torch.set_flush_denormal(True)
    torch.set_num_threads(threads)
    from gmseg.mapping import LatentMappingModel
    from gmseg.models.base import load_weights

    config = json.loads((model / "config.json").read_text())
    mapping = LatentMappingModel(**config["mapping"])
    load_weights(mapping, model / "model.safetensors")
    latents = torch.randn(batch, mapping.in_channels, 28, 28, generator=torch.Generator().manual_seed(0))
    counts = [0, 0]
    softmax = torch.softmax

    def counting(scores, dim):
        weights = softmax(scores, dim=dim)
        counts[0] += int(((weights != 0) & (weights.abs() < torch.finfo(torch.float32).tiny)).sum())
        counts[1] += weights.numel()
        return weights

    torch.softmax = counting
    with torch.no_grad():
        mapping(latents)  # the process's first torch work; also counts the attention's subnormals
    torch.softmax = softmax
    if mode == "set late":
        torch.set_flush_denormal(True)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        sum(level.mean() for level in mapping(latents).values()).backward()
        seconds.append(time.perf_counter() - start)
    return {"seconds": min(seconds), "subnormal_share": counts[0] / max(counts[1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.batch, args.threads, args.repeats)))
        return
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for mode in MODES:
            command = [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--model",
                str(args.model),
                "--batch",
                str(args.batch),
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{mode}: {done.stderr.strip()}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if mode not in best or result["seconds"] < best[mode]["seconds"]:
                best[mode] = result
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
