"""How more than two classes pass through a frozen autoencoder made for RGB images (GMS's mask encodings).

A binary mask enters the autoencoder as the release does it (three equal channels in [-1, 1]); that path
lives in :mod:`gmseg.models.gms` and is not touched by anything here. With K > 2 classes a target is a map
of class indices (:meth:`gmseg.labels.LabelSet.to_target`) and one of these encodings turns it into mask
latents and decoded latents back into K class probabilities:

* ``colour``: each class a fixed colour (:data:`gmseg.labels.CLASS_COLOURS`, background black), the
  mask becomes one RGB image and one latent, as wide as an image's; a decoded pixel's class probabilities
  are a softmax over its negative squared distances to the colours (the colour-coding workaround of the
  release's authors, made exact).
* ``one_vs_rest``: one binary mask per foreground class, each encoded as the release encodes a binary
  mask; the K - 1 latents are stacked on the channel axis (the mapping's output is K - 1 times wider) and
  each is decoded to that class's probability p_k; class probabilities are ``[1 - max p, p_1 .. p_K-1]``
  normalised, so background wins exactly when every p_k is under one half (the binary threshold).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..labels import LabelSet

ENCODINGS = ("colour", "one_vs_rest")
"""The names of ``model.mask_encoding``."""

COLOUR_TEMPERATURE = 1.0
"""Softmax temperature over squared colour distances: class colours lie at least 4 apart (squared), so a
pixel decoded onto its colour gets its class with probability above 0.98."""


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    """{0,1} mask (B,1,H,W) -> the 3-channel [-1,1] image the autoencoder expects (the release's encoding)."""
    return (2.0 * mask - 1.0).expand(-1, 3, -1, -1)


def image_to_probability(decoded: torch.Tensor) -> torch.Tensor:
    """A decoded mask image (B,3,H,W) -> foreground probability (B,1,H,W): mean over RGB, mapped to [0, 1]."""
    return torch.clamp((decoded.mean(dim=1, keepdim=True) + 1.0) / 2.0, 0.0, 1.0)


class MaskEncoding:
    """K classes <-> mask latents through one frozen first stage."""

    name = ""

    def __init__(self, labels: LabelSet):
        if labels.is_binary:
            raise ConfigError("binary masks use the release's encoding; a mask encoding needs 3 or more classes")
        self.labels = labels

    def latent_channels(self, width: int) -> int:
        """The mapping's output width for a first stage with ``width`` latent channels."""
        return width

    def encode(self, first_stage: torch.nn.Module, target: torch.Tensor) -> torch.Tensor:
        """Class-index target (B, 1, H, W) -> mask latent (B, latent_channels, h, w)."""
        raise NotImplementedError

    def probabilities(self, first_stage: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
        """Mask latent -> class probabilities (B, K, H, W), summing to 1 over K."""
        raise NotImplementedError


class ColourEncoding(MaskEncoding):
    name = "colour"

    def palette(self, like: torch.Tensor) -> torch.Tensor:
        """(K, 3) class colours in [-1, 1], on ``like``'s device and dtype."""
        return torch.as_tensor(self.labels.colours, device=like.device).to(like.dtype) / 127.5 - 1.0

    def to_image(self, target: torch.Tensor) -> torch.Tensor:
        """Class indices (B, 1, H, W) -> the colour-coded image (B, 3, H, W) in [-1, 1]."""
        return self.palette(target)[target[:, 0].long()].permute(0, 3, 1, 2).contiguous()

    def encode(self, first_stage: torch.nn.Module, target: torch.Tensor) -> torch.Tensor:
        return first_stage.encode(self.to_image(target))[0]

    def probabilities(self, first_stage: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
        return self.from_decoded(first_stage.decode(latent))

    def from_decoded(self, decoded: torch.Tensor) -> torch.Tensor:
        """Decoded image (B, 3, H, W) -> softmax over negative squared distances to the K colours."""
        decoded = decoded.clamp(-1.0, 1.0)
        palette = self.palette(decoded)[None, :, :, None, None]  # (1, K, 3, 1, 1)
        distance = ((decoded[:, None] - palette) ** 2).sum(dim=2)  # (B, K, H, W)
        return torch.softmax(-distance / COLOUR_TEMPERATURE, dim=1)


class OneVsRestEncoding(MaskEncoding):
    name = "one_vs_rest"

    @property
    def classes(self) -> int:
        return self.labels.num_classes - 1

    def latent_channels(self, width: int) -> int:
        return width * self.classes

    def encode(self, first_stage: torch.nn.Module, target: torch.Tensor) -> torch.Tensor:
        b, _, h, w = target.shape
        index = target.round().long()
        masks = torch.cat([(index == k) for k in range(1, self.classes + 1)], dim=1).to(target.dtype)
        latent = first_stage.encode(mask_to_image(masks.reshape(b * self.classes, 1, h, w)))[0]
        return latent.reshape(b, self.classes * latent.shape[1], *latent.shape[2:])

    def probabilities(self, first_stage: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
        b, c = latent.shape[:2]
        width = c // self.classes
        decoded = first_stage.decode(latent.reshape(b * self.classes, width, *latent.shape[2:]))
        foreground = image_to_probability(decoded).reshape(b, self.classes, *decoded.shape[2:])
        scores = torch.cat([1.0 - foreground.amax(dim=1, keepdim=True), foreground], dim=1)
        return scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-6)


def make_encoding(name: str, labels: LabelSet) -> MaskEncoding:
    """The encoding called ``name`` (``model.mask_encoding``) for ``labels``."""
    classes = {cls.name: cls for cls in (ColourEncoding, OneVsRestEncoding)}
    if name not in classes:
        raise ConfigError(f"model.mask_encoding {name!r} is unknown; choose one of {', '.join(ENCODINGS)}")
    return classes[name](labels)
