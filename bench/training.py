"""Training-step throughput, peak memory, time per component and epoch time, against the release's loop.

    python bench/training.py                        # CPU defaults: taesd b8 at 224, sd-vae b2 at 64
    python bench/training.py --device cuda --first-stages sd-vae --batch 8 --size 224 --variants \\
        release gmseg gmseg+channels_last gmseg+bf16

Variants (each in its own process, same seed, weights checked equal, run one at a time, round-robin):

- ``release``: the release's ``train.py`` step (image and mask encoded in two calls every step; latent
  noise; all four heads with einsum attention; MSE over level2/level1/out; the three levels decoded one after
  another with gradients; MONAI DiceLoss; AdamW) and its validation, which encodes image and mask of every
  validation batch again every epoch;
- ``gmseg``: the calls of ``gmseg.training.Trainer`` in the paper configuration (one batched encode of image +
  mask, the supervised heads only, the supervised levels decoded in one batch, validation latents encoded
  once per run and only the ``out`` head decoded per epoch);
- ``gmseg+channels_last`` (``train.channels_last``), ``gmseg+bf16`` (``train.mixed_precision=bf16``).

Per variant: ``--steps`` training steps on the same batches (the first one from identical weights, whose
losses and mapping gradients are compared with the release's; the step time is the median of the others),
a validation pass over ``--val-images`` images, and one step cut into components (encode, mapping forward,
decoder forward + Dice, decoder backward, mapping backward, optimizer), each timed on its own.
The epoch model (a BUSI-sized epoch: 465 training / 52 validation images) is *extrapolated* from these
per-step and per-image costs; the measured small epoch is the ``--steps`` steps plus the validation pass.
Writes bench/results/training.json.
"""

from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that busy-wait at barriers while another job holds the core can make
# a step 10-100x slower (measured here: 0.05 s -> 6 s); passive waiting keeps every variant honest.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from gmseg.models.gms import mask_to_image  # noqa: E402

DEFAULTS = {  # per first stage: (batch, size); chosen so the default run fits ~8 minutes on 2 CPU cores
    "taesd": (8, 224),
    "sd-vae": (2, 64),
    "tiny-kl": (2, 32),
}
VARIANTS = {**common.VARIANTS, "gmseg+compile": {"compile": True}}  # train.compile: the mapping compiled
BUSI_TRAIN, BUSI_VAL = 465, 52
COMPONENTS = ["encode", "mapping_forward", "decode_forward", "decode_backward", "mapping_backward", "optimizer"]


class TrainWorker:
    """One training variant in a worker process."""

    def __init__(self, first_stage: str, variant: str, size: int, device: str, seed: int = 0, lr: float = 1e-4):
        self.device = torch.device(device)
        self.variant = variant
        options = VARIANTS[variant]
        self.precision = options.get("precision", "fp32")
        self.model, self.note = common.build_model(first_stage, size=size, seed=seed)
        self.checksum = common.parameter_checksum(self.model)
        self.model.to(self.device).train()
        self.release = variant == "release"
        if self.release:
            self.mapping = common.ReleaseMappingModel.from_gmseg(self.model.mapping).train()
        else:
            self.mapping = self.model.mapping
            if options.get("channels_last"):
                self.model.to(memory_format=torch.channels_last)  # as Trainer does with train.channels_last
        self.optimizer = torch.optim.AdamW(self.mapping.parameters(), lr=lr)
        # What the steps call (the Trainer compiles its net the same way); gradients are read from self.mapping.
        self.net = torch.compile(self.mapping) if options.get("compile") else self.mapping
        self.memory = common.MemoryMeter(self.device)

    def info(self) -> dict[str, Any]:
        return {"checksum": self.checksum, "first_stage": self.note}

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def losses(self, image: torch.Tensor, mask: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        if self.release:
            return common.release_losses(self.model, self.mapping, image, mask, self.generator(seed))
        return common.gmseg_losses(self.model, self.net, image, mask, self.generator(seed), self.precision)

    def step(self, image: torch.Tensor, mask: torch.Tensor, seed: int, keep: bool = False) -> tuple[dict, dict]:
        losses = self.losses(image, mask, seed)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        gradients = {}
        if keep:
            gradients = {
                n: p.grad.detach().float().cpu().clone()
                for n, p in self.mapping.named_parameters()
                if p.grad is not None
            }
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}, gradients

    def epoch(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        val_images: torch.Tensor,
        val_masks: torch.Tensor,
        batch: int,
        steps: int,
        seed: int,
    ) -> dict[str, Any]:
        images, masks = images.to(self.device), masks.to(self.device)
        val_images, val_masks = val_images.to(self.device), val_masks.to(self.device)
        self.memory.reset()
        walls, cpus, first = [], [], None
        for index in range(steps):
            part = slice(index * batch, (index + 1) * batch)
            result, wall, cpu = common.timed(
                lambda: self.step(images[part], masks[part], seed + index, keep=index == 0), self.device
            )
            walls.append(wall)
            cpus.append(cpu)
            if index == 0:
                first = result
        out: dict[str, Any] = {
            "step_seconds": walls,
            "step_cpu_seconds": cpus,
            "losses": first[0],
            "gradients": first[1],
            "cache_seconds": 0.0,
            "cache_cpu_seconds": 0.0,
        }
        if self.release:
            dice, wall, cpu = common.timed(
                lambda: common.release_validate(self.model, self.mapping, val_images, val_masks, batch), self.device
            )
        else:
            cache, cache_wall, cache_cpu = common.timed(
                lambda: common.gmseg_encode_validation(self.model, val_images, val_masks, batch), self.device
            )
            out.update(cache_seconds=cache_wall, cache_cpu_seconds=cache_cpu)
            dice, wall, cpu = common.timed(
                lambda: common.gmseg_validate(self.model, self.net, cache, self.precision), self.device
            )
        out.update(val_seconds=wall, val_cpu_seconds=cpu, val_dice=dice, **self.memory.peak())
        return out

    def split(self, image: torch.Tensor, mask: torch.Tensor, seed: int) -> dict[str, Any]:
        """One training step cut into components, each timed on its own; the same arithmetic as a step."""
        image, mask = image.to(self.device), mask.to(self.device)
        model, stage, config = self.model, self.model.first_stage, self.model.gms_config
        levels = list(common.RELEASE_LEVELS) if self.release else list(config.supervised_levels)
        walls: dict[str, float] = {}
        cpus: dict[str, float] = {}

        def measure(name: str, function: Any) -> Any:
            value, walls[name], cpus[name] = common.timed(function, self.device)
            return value

        def encode() -> tuple[torch.Tensor, torch.Tensor]:
            if self.release:
                mean, logvar = common.release_encode(stage, image)
                mask_latent, _ = common.release_encode(stage, mask_to_image(mask))
            else:
                with torch.no_grad():
                    means, logvars = stage.encode(torch.cat([image, mask_to_image(mask)]))
                mean, mask_latent = means.chunk(2)
                logvar = None if logvars is None else logvars.chunk(2)[0]
            return model.noisy_latent(mean, logvar, self.generator(seed)), mask_latent

        latent, mask_latent = measure("encode", encode)

        def mapping_forward() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            with common.autocast_context(self.device, self.precision):
                outputs = self.mapping(latent, levels=levels)
                return outputs, config.rec_weight * sum(F.mse_loss(outputs[n], mask_latent) for n in levels)

        outputs, loss_rec = measure("mapping_forward", mapping_forward)
        leaves = {n: outputs[n].detach().requires_grad_() for n in levels}

        def decode_forward() -> torch.Tensor:
            with common.autocast_context(self.device, self.precision):
                if self.release:
                    probabilities = [common.release_decode(stage, leaves[n]) for n in levels]
                else:
                    probabilities = model.latent_to_probability(torch.cat([leaves[n] for n in levels])).chunk(
                        len(levels)
                    )
                return config.dice_weight * sum(model.dice_loss(p, mask) for p in probabilities)

        loss_dice = measure("decode_forward", decode_forward)
        measure("decode_backward", loss_dice.backward)
        self.optimizer.zero_grad(set_to_none=True)
        measure(
            "mapping_backward",
            lambda: torch.autograd.backward(
                [loss_rec] + [outputs[n] for n in levels], [None] + [leaves[n].grad for n in levels]
            ),
        )
        measure("optimizer", self.optimizer.step)
        return {"seconds": walls, "cpu_seconds": cpus}


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max|a - b| / max|b| over the whole gradient (all mapping parameters together).

    Per tensor would be meaningless for gradients that are zero in exact arithmetic (the attention key
    biases: softmax ignores a shift shared by all keys), where both sides hold only rounding noise."""
    return common.gradient_difference(a, b)


def run_first_stage(name: str, args: argparse.Namespace) -> dict[str, Any]:
    batch, size = DEFAULTS.get(name, (8, 224))
    batch, size = args.batch or batch, args.size or size
    steps = args.steps
    images, masks = common.synthetic_batch(batch * steps, size, seed=args.seed)
    val_images, val_masks = common.synthetic_batch(args.val_images, size, seed=args.seed + 1)
    print(f"[{name}] batch {batch}, {size}x{size}: starting {len(args.variants)} workers ...", flush=True)
    workers = {}
    try:
        for variant in args.variants:
            workers[variant] = common.Worker(
                "training:TrainWorker",
                f"{name}/{variant}",
                first_stage=name,
                variant=variant,
                size=size,
                device=args.device,
                seed=args.seed,
                lr=args.lr,
            )
        infos = {variant: worker.wait_ready().call("info") for variant, worker in workers.items()}
        if len({info["checksum"] for info in infos.values()}) != 1:
            raise RuntimeError(f"workers built different weights: {infos}")
        epochs, splits = {}, {}
        for variant, worker in workers.items():  # round 1: steps + validation, one variant after another
            epochs[variant] = worker.call(
                "epoch",
                images=images,
                masks=masks,
                val_images=val_images,
                val_masks=val_masks,
                batch=batch,
                steps=steps,
                seed=args.seed,
            )
            print(
                f"[{name}] {variant:<26} steps {[round(s, 2) for s in epochs[variant]['step_seconds']]} s, "
                f"validation {epochs[variant]['val_seconds']:.2f} s",
                flush=True,
            )
        for variant, worker in workers.items():  # round 2: the component split
            splits[variant] = worker.call("split", image=images[:batch], mask=masks[:batch], seed=args.seed)
            print(
                f"[{name}] {variant:<26} split { {k: round(v, 2) for k, v in splits[variant]['seconds'].items()} }",
                flush=True,
            )
    finally:
        for worker in workers.values():
            worker.close()

    def step_time(result: dict[str, Any], key: str = "step_seconds") -> float:
        values = result[key][1:] if len(result[key]) > 1 else result[key]
        return statistics.median(values)

    reference = epochs.get("release")
    busi_steps = BUSI_TRAIN // batch  # the release drops the last incomplete batch
    rows = []
    for variant in args.variants:
        result = epochs[variant]
        step_s, step_cpu = step_time(result), step_time(result, "step_cpu_seconds")
        val_per_image = result["val_seconds"] / args.val_images
        cache_per_image = result["cache_seconds"] / args.val_images
        busi_epoch = busi_steps * step_s + BUSI_VAL * val_per_image
        row = {
            "first_stage": name,
            "first_stage_weights": infos[variant]["first_stage"],
            "variant": variant,
            "batch": batch,
            "size": size,
            "steps": steps,
            "step_seconds": step_s,
            "step_seconds_all": [round(s, 3) for s in result["step_seconds"]],
            "step_cpu_seconds": step_cpu,
            "samples_per_s": batch / step_s,
            "peak_mb": result["peak_mb"],
            "peak_over_model_mb": result["peak_over_model_mb"],
            "memory_kind": result["memory_kind"],
            "val_images": args.val_images,
            "val_seconds": result["val_seconds"],
            "val_cpu_seconds": result["val_cpu_seconds"],
            "val_cache_seconds_once_per_run": result["cache_seconds"],
            "small_epoch_seconds_measured": sum(result["step_seconds"]) + result["val_seconds"],
            "busi_epoch_seconds_extrapolated": busi_epoch,
            "busi_val_cache_seconds_once_per_run_extrapolated": BUSI_VAL * cache_per_image,
            "losses": result["losses"],
            "split_seconds": splits[variant]["seconds"],
            "split_cpu_seconds": splits[variant]["cpu_seconds"],
            "split_sum_seconds": sum(splits[variant]["seconds"].values()),
        }
        if reference is not None:
            ref_step = step_time(reference)
            ref_busi = busi_steps * ref_step + BUSI_VAL * reference["val_seconds"] / args.val_images
            ref_small = sum(reference["step_seconds"]) + reference["val_seconds"]
            row.update(
                {
                    "step_speedup_vs_release": ref_step / step_s,
                    "step_cpu_time_speedup_vs_release": step_time(reference, "step_cpu_seconds") / step_cpu,
                    "val_speedup_vs_release": reference["val_seconds"] / result["val_seconds"],
                    "small_epoch_speedup_vs_release_measured": ref_small / row["small_epoch_seconds_measured"],
                    "busi_epoch_speedup_vs_release_extrapolated": ref_busi / busi_epoch,
                    "loss_rel_diff_vs_release": max(
                        abs(result["losses"][k] - reference["losses"][k]) / max(abs(reference["losses"][k]), 1e-12)
                        for k in reference["losses"]
                    ),
                    "grad_rel_diff_vs_release": relative_difference(result["gradients"], reference["gradients"]),
                }
            )
        rows.append(row)
    return {"first_stage": name, "batch": batch, "size": size, "busi_steps_per_epoch": busi_steps, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--first-stages", nargs="+", default=["taesd", "sd-vae"], choices=["sd-vae", "taesd", "tiny-kl"]
    )
    parser.add_argument("--batch", type=int, default=None, help=f"default per first stage (batch, size): {DEFAULTS}")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant (the first is warm-up)")
    parser.add_argument("--val-images", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--variants", nargs="+", default=["release", "gmseg", "gmseg+channels_last"], choices=list(VARIANTS)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/training.json)")
    args = parser.parse_args(argv)
    if "release" in args.variants:  # the reference runs first in every round
        args.variants = ["release"] + [v for v in args.variants if v != "release"]
    started = time.perf_counter()
    payload = common.header(args.device)
    results = [run_first_stage(name, args) for name in args.first_stages]
    payload.update(
        {
            "benchmark": "training",
            "seconds_total": round(time.perf_counter() - started, 1),
            "busi_epoch_model": f"{BUSI_TRAIN} training images (steps = {BUSI_TRAIN} // batch, last batch dropped) + "
            f"{BUSI_VAL} validation images; extrapolated from the measured per-step and "
            "per-validation-image costs; gmseg's one-off validation encode is listed separately",
            "results": results,
        }
    )
    path = common.write_result("training", payload, args.out)
    rows = [row for result in results for row in result["rows"]]
    print()
    print(f"Training on {args.device} ({payload['machine']['cpu']}, torch {torch.__version__})")
    print(
        common.format_table(
            rows,
            [
                ("first_stage", "first stage"),
                ("variant", "variant"),
                ("batch", "batch"),
                ("size", "size"),
                ("step_seconds", "step s"),
                ("samples_per_s", "samples/s"),
                ("step_speedup_vs_release", "step x release"),
                ("step_cpu_time_speedup_vs_release", "step x release (CPU time)"),
                ("peak_mb", "peak MB"),
                ("loss_rel_diff_vs_release", "loss rel. diff"),
                ("grad_rel_diff_vs_release", "grad rel. diff"),
            ],
        )
    )
    print()
    print(
        common.format_table(
            rows,
            [
                ("first_stage", "first stage"),
                ("variant", "variant"),
                ("val_images", "val images"),
                ("val_seconds", "validation s"),
                ("val_cache_seconds_once_per_run", "one-off val encode s"),
                ("small_epoch_seconds_measured", "small epoch s (measured)"),
                ("small_epoch_speedup_vs_release_measured", "x release"),
                ("busi_epoch_seconds_extrapolated", "BUSI epoch s (extrapolated)"),
                ("busi_epoch_speedup_vs_release_extrapolated", "x release"),
            ],
        )
    )
    print()
    split_rows = [
        {"first_stage": r["first_stage"], "variant": r["variant"], **r["split_seconds"], "sum": r["split_sum_seconds"]}
        for r in rows
    ]
    print(
        common.format_table(
            split_rows,
            [("first_stage", "first stage"), ("variant", "variant")]
            + [(c, c.replace("_", " ") + " s") for c in COMPONENTS]
            + [("sum", "sum s")],
        )
    )
    print(f"\nWrote {path} ({payload['seconds_total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
