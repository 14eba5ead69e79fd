"""The :class:`FirstStage` wrapper: a frozen autoencoder with GMS's conventions, whichever adapter built it.

Images are in [-1, 1]; latents are the autoencoder's posterior mean moved into its *scaled* space,
``z = (mean - shift_factor) * scaling_factor``, and ``decode`` undoes that (``z / scaling_factor +
shift_factor``) before the decoder. Scaling lives here, not in the mapping model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from .sources import FirstStageSource

#: On a CPU, encode/decode split a batch so that one full-resolution activation stays below this size
#: (glibc's largest mmap threshold): larger buffers are mmapped fresh and page-faulted in on every call,
#: which made a batched training step twice as slow as the same images in small chunks (BENCHMARKS.md).
CPU_CHUNK_BYTES = 32 * 2**20


class FirstStage(nn.Module):
    """A frozen autoencoder with GMS's conventions: images in [-1, 1], latents already scaled and shifted."""

    def __init__(
        self,
        autoencoder: nn.Module,
        scaling_factor: float,
        source: FirstStageSource | None = None,
        *,
        shift_factor: float | None = 0.0,
        latent_channels: int | None = None,
    ):
        super().__init__()
        self.autoencoder = autoencoder
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor or 0.0)
        if latent_channels is None:
            latent_channels = autoencoder.config["latent_channels"]
        self.latent_channels = int(latent_channels)
        self.source = source
        self.autoencoder.eval()
        self.autoencoder.requires_grad_(False)

    @property
    def has_variance(self) -> bool:
        """TAESD is deterministic: no posterior variance, so no latent-noise augmentation."""
        return not self.is_tiny

    @property
    def is_tiny(self) -> bool:
        from diffusers import AutoencoderTiny

        return isinstance(self.autoencoder, AutoencoderTiny)

    @property
    def kind(self) -> str:
        """The adapter that built it: ``kl`` (diffusers AutoencoderKL), ``tiny`` (AutoencoderTiny) or ``ldm``."""
        if self.is_tiny:
            return "tiny"
        return "ldm" if self.source is not None and self.source.kind == "ldm" else "kl"

    def describe(self) -> dict[str, Any]:
        """What a model folder records to check its first stage later: kind, width, scale and shift."""
        return {
            "kind": self.kind,
            "latent_channels": self.latent_channels,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
        }

    def train(self, mode: bool = True) -> FirstStage:
        # Frozen means frozen: dropout/normalisation stay in eval mode even inside a training model.
        super().train(mode)
        self.autoencoder.eval()
        return self

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image (B,3,H,W) in [-1,1] -> ((mean - shift) * scale, posterior log-variance or None)."""
        chunks = self.cpu_chunks(image, image.shape[-2] * image.shape[-1])
        if len(chunks) > 1:
            means, logvars = zip(*(self.encode(chunk) for chunk in chunks))
            return torch.cat(means), None if logvars[0] is None else torch.cat(logvars)
        if self.is_tiny:
            return self.to_latent(self.autoencoder.encode(image).latents), None
        posterior = self.autoencoder.encode(image).latent_dist
        return self.to_latent(posterior.mean), posterior.logvar

    def to_latent(self, mean: torch.Tensor) -> torch.Tensor:
        """The autoencoder's own latent -> GMS's: ``(mean - shift) * scale`` (no subtraction when shift is 0)."""
        if self.shift_factor:
            mean = mean - self.shift_factor
        return mean * self.scaling_factor

    def from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """GMS's latent -> the decoder's input: ``latent / scale + shift``."""
        # (1 / s) * latent, as the release computes it: bit for bit its decoder input.
        latent = (1.0 / self.scaling_factor) * latent
        return latent + self.shift_factor if self.shift_factor else latent

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled (and shifted) latent -> image in (about) [-1, 1]."""
        chunks = self.cpu_chunks(latent, latent.shape[-2] * latent.shape[-1] * 64)  # the autoencoder's x8
        if len(chunks) > 1:
            return torch.cat([self.decode(chunk) for chunk in chunks])
        return self.autoencoder.decode(self.from_latent(latent)).sample

    def cpu_chunks(self, batch: torch.Tensor, pixels: int) -> list[torch.Tensor]:
        """On a CPU, the batch in chunks whose full-resolution activations stay under ``CPU_CHUNK_BYTES``.

        Every sample is computed independently (convolutions, per-sample GroupNorm), so chunking changes
        no arithmetic; on a GPU the batch stays whole.
        """
        if batch.device.type != "cpu" or batch.shape[0] <= 1:
            return [batch]
        widths = self.autoencoder.config.get("block_out_channels") or (128,)
        per_sample = int(widths[0]) * pixels * 4  # float32 activations at full resolution
        size = max(1, CPU_CHUNK_BYTES // per_sample)
        return list(batch.split(size)) if size < batch.shape[0] else [batch]

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the autoencoder as a diffusers folder, so a model folder can carry it for offline use.

        The folder's config gets this wrapper's scale and shift (an LDM yaml's ``scale_factor`` may differ
        from the converted autoencoder's default), so loading it back gives the same latents.
        """
        config = self.autoencoder.config
        if float(config.get("scaling_factor") or 0.0) != self.scaling_factor:
            self.autoencoder.register_to_config(scaling_factor=self.scaling_factor)
        if float(config.get("shift_factor") or 0.0) != self.shift_factor:
            self.autoencoder.register_to_config(shift_factor=self.shift_factor)
        self.autoencoder.save_pretrained(str(directory))
