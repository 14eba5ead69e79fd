"""Shared pieces of the benchmarks: models, the release-style loops, worker processes, tables, JSON.

The *release-style* loops reproduce the work the paper's published code does per image and per step
(written from its description, not copied):

- validation/inference (its ``valid.py``): batch 1; the image AND the mask are encoded, each in its own
  autoencoder call; the mapping model evaluates all four heads with einsum attention; only ``out`` is
  decoded;
- a training step (its ``train.py``): image and mask encoded in two calls every step; latent noise; all
  four heads; latent MSE over level2/level1/out; the three levels decoded one after another, each with
  gradients; MONAI ``DiceLoss``; AdamW;
- validation inside training: every epoch, every validation batch is encoded again (image and mask),
  mapped, and ``out`` decoded.

gmseg's counterparts are its own code paths: :func:`gmseg.predict.make_predictor` (what ``gmseg predict``
runs), and :func:`gmseg_losses` / :func:`gmseg_validate`, which make the same calls as
``gmseg.training.Trainer.full_epoch`` / ``Trainer.validate`` (one batched encode of image + mask, the
supervised levels decoded in one batch, validation latents encoded once per run).

Each benchmark variant runs in its own process (:class:`Worker`), so its peak memory is its own, and the
coordinator runs the variants one at a time, round-robin, so slow drifts of a shared machine hit them
all alike.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
SHARED = Path(os.environ.get("GMSEG_SHARED", REPO.parent / "shared"))
TAESD_DIR = SHARED / "weights" / "taesd"

try:  # the installed package, else this checkout's src/
    import gmseg  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(REPO / "src"))

from gmseg.first_stage import FirstStage, load_first_stage  # noqa: E402
from gmseg.mapping import LatentMappingModel, SpatialSelfAttention  # noqa: E402
from gmseg.models.gms import GMS, GMSConfig, mask_to_image  # noqa: E402

#: The Stable Diffusion VAE architecture (SD 1.x/2.x): random weights cost exactly what the real ones do.
SD_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)
#: A tiny KL autoencoder for tests (seconds on a CPU).
TINY_KL_CONFIG = dict(SD_VAE_CONFIG, block_out_channels=(16, 16, 16, 16), layers_per_block=1, norm_num_groups=8)

RELEASE_LEVELS = ("level2", "level1", "out")


# ---------------------------------------------------------------------------------------------- models

#: Options of each compared variant ("release" is the release-style loop, the rest gmseg's own path).
VARIANTS: dict[str, dict] = {
    "release": {},
    "gmseg": {},
    "gmseg+channels_last": {"channels_last": True},
    "gmseg+bf16": {"precision": "bf16"},
    "gmseg+channels_last+bf16": {"channels_last": True, "precision": "bf16"},
}


def build_first_stage(name: str, seed: int = 0) -> tuple[FirstStage, str]:
    """``sd-vae`` (random SD-VAE architecture), ``taesd`` (real weights when present), ``tiny-kl``."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    torch.manual_seed(seed)
    if name == "sd-vae":
        return FirstStage(AutoencoderKL(**SD_VAE_CONFIG), 0.18215), "SD-VAE architecture, random weights"
    if name == "tiny-kl":
        return FirstStage(AutoencoderKL(**TINY_KL_CONFIG), 0.18215), "tiny KL autoencoder, random weights"
    if name == "taesd":
        if (TAESD_DIR / "taesd_encoder.safetensors").is_file() or (TAESD_DIR / "taesd_encoder.pth").is_file():
            return load_first_stage(TAESD_DIR), f"TAESD, real weights ({TAESD_DIR})"
        autoencoder = AutoencoderTiny()
        return FirstStage(autoencoder, autoencoder.config.scaling_factor), "TAESD architecture, random weights"
    raise ValueError(f"unknown first stage {name!r}; use sd-vae, taesd or tiny-kl")


def build_model(first_stage: str | FirstStage, size: int = 224, seed: int = 0, **config: Any) -> tuple[GMS, str]:
    """A GMS model in the paper's configuration with seeded random mapping weights."""
    if isinstance(first_stage, FirstStage):
        stage, note = first_stage, "given"
    else:
        stage, note = build_first_stage(first_stage, seed)
    torch.manual_seed(seed + 1)
    model = GMS(GMSConfig(image_size=size, **config), first_stage_module=stage)
    return model.eval(), note


def parameter_checksum(module: torch.nn.Module) -> float:
    """Identical weights across worker processes (float64 sum of |w|, order-independent enough)."""
    with torch.no_grad():
        return float(sum(p.detach().double().abs().sum() for p in module.parameters()))


class EinsumSelfAttention(SpatialSelfAttention):
    """The release's attention arithmetic: two batched einsums with an explicit softmax over keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        queries = self.q(normed).reshape(b, c, h * w).permute(0, 2, 1)  # b, hw, c
        keys = self.k(normed).reshape(b, c, h * w)  # b, c, hw
        scores = torch.einsum("bij,bjk->bik", queries, keys) * (int(c) ** (-0.5))  # b, hw (queries), hw (keys)
        scores = torch.softmax(scores, dim=2)
        values = self.v(normed).reshape(b, c, h * w)  # b, c, hw (keys)
        attended = torch.einsum("bij,bjk->bik", values, scores.permute(0, 2, 1))  # b, c, hw (queries)
        return x + self.proj_out(attended.reshape(b, c, h, w))


class ReleaseMappingModel(LatentMappingModel):
    """gmseg's mapping model computing what the release computes: einsum attention, every head always."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        for module in self.modules():
            if type(module) is SpatialSelfAttention:
                module.__class__ = EinsumSelfAttention  # same parameters, release arithmetic

    def forward(self, x: torch.Tensor, levels: Any = None) -> dict[str, torch.Tensor]:
        return super().forward(x, levels=None)

    @classmethod
    def from_gmseg(cls, mapping: LatentMappingModel) -> ReleaseMappingModel:
        release = cls(
            in_channels=mapping.in_channels, out_channels=mapping.out_channels, ch=mapping.ch, ch_mult=mapping.ch_mult
        )
        release.load_state_dict(mapping.state_dict(), strict=True)
        return release.to(next(mapping.parameters()).device)


# ---------------------------------------------------------------------------------------------- release loops
def release_encode(first_stage: FirstStage, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The release's encode: one autoencoder call for the whole batch; s * posterior mean, log-variance."""
    if first_stage.is_tiny:
        return first_stage.scaling_factor * first_stage.autoencoder.encode(image).latents, None
    posterior = first_stage.autoencoder.encode(image).latent_dist
    return first_stage.scaling_factor * posterior.mean, posterior.logvar


def release_decode(first_stage: FirstStage, latent: torch.Tensor) -> torch.Tensor:
    """The release's decode: z = latent / s, decode, mean over RGB, (x + 1) / 2 clamped to [0, 1]."""
    decoded = first_stage.autoencoder.decode((1.0 / first_stage.scaling_factor) * latent).sample
    return torch.clamp((decoded.mean(dim=1, keepdim=True) + 1.0) / 2.0, 0.0, 1.0)


@torch.no_grad()
def release_predict(
    first_stage: FirstStage, mapping: ReleaseMappingModel, images: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """The release's validation loop (``valid.py``): batch 1, mask encoded too, all heads, ``out`` decoded."""
    probabilities = []
    for index in range(images.shape[0]):
        image, mask = images[index : index + 1], masks[index : index + 1]
        image_latent, _ = release_encode(first_stage, image)
        mask_latent, _ = release_encode(first_stage, mask_to_image(mask))
        outputs = mapping(image_latent)
        F.mse_loss(outputs["out"], mask_latent).item()  # its validation loss, logged per image
        probability = release_decode(first_stage, outputs["out"])
        (probability > 0.5).cpu()  # written as a PNG by the release
        probabilities.append(probability)
    return torch.cat(probabilities)


def release_losses(
    model: GMS,
    mapping: ReleaseMappingModel,
    image: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The release's training loss: two encoder calls, all heads, three decoder calls with gradients."""
    first_stage, config = model.first_stage, model.gms_config
    image_mean, image_logvar = release_encode(first_stage, image)  # frozen weights: no graph is recorded
    mask_latent, _ = release_encode(first_stage, mask_to_image(mask))
    latent = model.noisy_latent(image_mean, image_logvar, generator)
    outputs = mapping(latent)
    loss_rec = config.rec_weight * sum(F.mse_loss(outputs[name], mask_latent) for name in RELEASE_LEVELS)
    probabilities = {name: release_decode(first_stage, outputs[name]) for name in RELEASE_LEVELS}
    loss_dice = config.dice_weight * sum(model.dice_loss(probabilities[name], mask) for name in RELEASE_LEVELS)
    return {"loss": loss_rec + loss_dice, "loss_rec": loss_rec, "loss_dice": loss_dice}


@torch.no_grad()
def release_validate(
    model: GMS, mapping: ReleaseMappingModel, images: torch.Tensor, masks: torch.Tensor, batch_size: int
) -> float:
    """Validation inside the release's training epoch: everything re-encoded; soft Dice per batch."""
    first_stage, config = model.first_stage, model.gms_config
    mapping.eval()
    dices = []
    for start in range(0, images.shape[0], batch_size):
        image, mask = images[start : start + batch_size], masks[start : start + batch_size]
        image_latent, _ = release_encode(first_stage, image)
        mask_latent, _ = release_encode(first_stage, mask_to_image(mask))
        outputs = mapping(image_latent)
        probability = release_decode(first_stage, outputs["out"])
        loss = config.rec_weight * F.mse_loss(outputs["out"], mask_latent) + config.dice_weight * model.dice_loss(
            probability, mask
        )
        loss.item()
        intersection = (mask * probability).sum(dim=(1, 2, 3))
        dices.append((2.0 * intersection / (mask.sum(dim=(1, 2, 3)) + probability.sum(dim=(1, 2, 3)))).mean().item())
    mapping.train()
    return float(np.mean(dices))


# ---------------------------------------------------------------------------------------------- gmseg loops
def autocast_context(device: torch.device | str, precision: str = "fp32") -> Any:
    """A fresh autocast context for ``precision`` (``fp32``: none), like ``accelerator.autocast()``."""
    from contextlib import nullcontext

    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def gmseg_losses(
    model: GMS,
    mapping: torch.nn.Module,
    image: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """gmseg's training loss, with the calls of ``Trainer.full_epoch``: one encoder call for image + mask,
    only the supervised heads, the supervised levels decoded as one batch (``GMS.loss_from_latents``)."""
    levels = model.gms_config.supervised_levels
    image_mean, image_logvar, mask_latent = model.encode_pair(image, mask)
    latent = model.noisy_latent(image_mean, image_logvar, generator)
    with autocast_context(image.device, precision):
        outputs = mapping(latent, levels=levels)
        return model.loss_from_latents(latent, mask_latent, mask, outputs=outputs)


@torch.no_grad()
def gmseg_encode_validation(
    model: GMS, images: torch.Tensor, masks: torch.Tensor, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``Trainer.encode_validation``: validation latents, encoded once per run."""
    return [
        (model.first_stage.encode(images[start : start + batch_size])[0], masks[start : start + batch_size])
        for start in range(0, images.shape[0], batch_size)
    ]


@torch.no_grad()
def gmseg_validate(
    model: GMS, mapping: torch.nn.Module, cache: list[tuple[torch.Tensor, torch.Tensor]], precision: str = "fp32"
) -> float:
    """``Trainer.validate``: cached latents, the ``out`` head only, decoded, thresholded Dice and IoU."""
    from monai.metrics import compute_dice, compute_iou

    mapping.eval()
    dices = []
    for latent, mask in cache:
        with autocast_context(latent.device, precision):
            out = mapping(latent, levels=["out"])["out"]
        prediction = (model.latent_to_probability(out.float()) > model.gms_config.threshold).float()
        dices += compute_dice(prediction, mask, include_background=True, ignore_empty=False).view(-1).tolist()
        compute_iou(prediction, mask, include_background=True, ignore_empty=False)
    mapping.train()
    return float(np.mean(dices))


# ---------------------------------------------------------------------------------------------- inputs
def synthetic_batch(count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ultrasound-like images in [-1, 1] (count, 3, size, size) and {0,1} masks (count, 1, size, size)."""
    from gmseg.synthetic import synthetic_pair

    rng = np.random.default_rng(seed)
    pairs = [synthetic_pair(rng, max(32, size)) for _ in range(count)]
    # Contiguous NCHW, as a DataLoader batch: a permuted (NHWC-strided) tensor would make the convolutions
    # of whoever receives it run channels-last.
    images = (torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 127.5 - 1.0).contiguous()
    masks = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].float()
    if size < 32:
        images, masks = images[..., :size, :size].contiguous(), masks[..., :size, :size].contiguous()
    return images, masks


def add_first_stage_data_arguments(parser: Any, stage: str) -> None:
    """The options of the scripts that run a first stage over a dataset's split: which autoencoder, which
    images, at what size (bench/first_stage_ceiling.py, bench/latent_equivariance.py)."""
    parser.add_argument("--vae", required=True, help="first stage, as for gmseg train (model.vae)")
    parser.add_argument("--vae-config", default=None, help="LDM yaml when --vae is a checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with images/ and masks/")
    parser.add_argument("--split", help="split file; default: every case of --data")
    parser.add_argument("--stage", default=stage, help=f"which split list to use (default: {stage})")
    parser.add_argument("--size", type=int, default=224, help="the model's input size (default 224)")


# ---------------------------------------------------------------------------------------------- measuring
def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class MemoryMeter:
    """Peak memory of this process: CUDA allocator peak on a GPU, peak RSS (``ru_maxrss``) on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline = self.current()

    def current(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        return current_rss_mb()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> dict[str, float]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            kind = "cuda max_memory_allocated"
        else:
            peak = peak_rss_mb()
            kind = "process peak RSS"
        return {"peak_mb": round(peak, 1), "peak_over_model_mb": round(peak - self.baseline, 1), "memory_kind": kind}


def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_result(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def header(device: str) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(device),
    }


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A GitHub-markdown table of ``rows`` with (key, title) ``columns``."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            if value == 0:
                return "0"
            if abs(value) < 1e-3:
                return f"{value:.1e}"
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- workers
def _worker_main(connection: Any, factory: str, kwargs: dict[str, Any], threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    try:
        module_name, _, name = factory.partition(":")
        obj = getattr(__import__(module_name), name)(**kwargs)
        connection.send(("ok", None))
    except BaseException:  # report construction errors to the coordinator
        connection.send(("error", traceback.format_exc()))
        return
    while True:
        message = connection.recv()
        if message is None:
            break
        method, arguments = message
        try:
            connection.send(("ok", getattr(obj, method)(**arguments)))
        except BaseException:
            connection.send(("error", traceback.format_exc()))


class Worker:
    """One benchmark variant in its own process; ``call`` runs one of its methods and waits for it."""

    def __init__(self, factory: str, label: str, **kwargs: Any):
        context = multiprocessing.get_context("spawn")
        self.label = label
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child, factory, kwargs, torch.get_num_threads()), daemon=True
        )
        self.process.start()
        self.started = False

    def wait_ready(self) -> Worker:
        """Wait for the worker to have built its model (workers are started together, then waited for)."""
        if not self.started:
            self._receive()
            self.started = True
        return self

    def _receive(self) -> Any:
        status, value = self.connection.recv()
        if status != "ok":
            raise RuntimeError(f"benchmark worker {self.label!r} failed:\n{value}")
        return value

    def call(self, method: str, **arguments: Any) -> Any:
        self.wait_ready()
        self.connection.send((method, arguments))
        return self._receive()

    def close(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


def timed(function: Any, device: torch.device) -> tuple[Any, float, float]:
    """``(value, wall seconds, CPU seconds of this process)``: on a shared CPU, the CPU time of the
    process (all its threads, user + system) is far less disturbed by other jobs than wall time."""
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    value = function()
    synchronize(device)
    return value, time.perf_counter() - started, time.process_time() - cpu_started


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def gradient_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max|a - b| / max|b| over all tensors of two gradient dicts (same keys; None-gradients excluded)."""
    if set(a) != set(b):
        raise ValueError(f"different parameters have gradients: {sorted(set(a) ^ set(b))}")
    scale = max(float(t.abs().max()) for t in b.values())
    return max(float((a[n].double() - b[n].double()).abs().max()) for n in b) / scale
