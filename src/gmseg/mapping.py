"""The latent mapping model (LMM): image latent -> mask latent.

A residual + self-attention CNN that never down-samples: the 28x28 latent is already 8x smaller than the
image, and the paper shows that keeping full latent resolution is what makes a 1.5 M-parameter model enough.
Encoder blocks widen the channels, decoder blocks narrow them again with skip concatenations (a "UNet
without pooling"), and every decoder stage has a deep-supervision head.

Parameter names follow the paper's release exactly (``input_blocks``, ``conv1_0.resblock.conv1.0``,
``conv1_0.attention.q``, ``convds0.2`` ...), so its ``{"model": state_dict}`` checkpoints load with
``strict=True``. Attention on a CPU is the release's arithmetic operation for operation (two batched
matrix products, scale after the product, softmax over keys), so CPU results equal the release's bit for
bit; on a GPU it is ``scaled_dot_product_attention``, the same function with a fused kernel. (On a CPU the
fused kernel is no faster at 28x28 latents and its different rounding, amplified by the decoder, moves
probabilities by ~1e-5; see BENCHMARKS.md.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    # 16 groups and eps 1e-6 as in the release; the checkpoint's numbers depend on both.
    return nn.GroupNorm(num_groups=16, num_channels=channels, eps=1e-6, affine=True)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over all latent positions, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        if x.is_cuda:

            def tokens(t: torch.Tensor) -> torch.Tensor:  # (b, c, h, w) -> (b, 1, h*w, c)
                return t.reshape(b, 1, c, h * w).transpose(-1, -2)

            attended = F.scaled_dot_product_attention(
                tokens(self.q(normed)), tokens(self.k(normed)), tokens(self.v(normed))
            )
            attended = attended.transpose(-1, -2).reshape(b, c, h, w)
        else:
            queries = self.q(normed).reshape(b, c, h * w).permute(0, 2, 1)  # (b, queries, c)
            scores = torch.bmm(queries, self.k(normed).reshape(b, c, h * w)) * (int(c) ** (-0.5))
            weights = torch.softmax(scores, dim=2)  # over keys
            attended = torch.bmm(self.v(normed).reshape(b, c, h * w), weights.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(attended)


class ResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm -> PReLU -> 3x3 conv, twice)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # The release registers the activations both as attributes and inside the Sequentials; keeping
        # the attributes reproduces its state-dict keys (act1.weight, act2.weight) for strict loading.
        self.act1 = nn.PReLU()
        self.act2 = nn.PReLU()
        self.conv1 = nn.Sequential(
            group_norm(in_channels), self.act1, nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.conv2 = nn.Sequential(
            group_norm(out_channels), self.act2, nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_connection(x) + self.conv2(self.conv1(x))


class ResAttBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.resblock = ResBlock(in_channels, out_channels)
        self.attention = SpatialSelfAttention(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(self.resblock(x))


def output_head(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1, bias=False))


def level_name(depth: int) -> str:
    """Deep-supervision output names as in the release: the finest head is ``out``, coarser ``levelK``."""
    return "out" if depth == 0 else f"level{depth}"


class LatentMappingModel(nn.Module):
    """Maps an image latent (B, in_channels, h, w) to mask latents at every deep-supervision level.

    ``forward`` returns a dict ``{"level3": ..., "level2": ..., "level1": ..., "out": ...}`` (for four
    levels), all with the input's spatial size. Block widths are ``ch * ch_mult[i]`` and must be
    divisible by 16, the GroupNorm group count.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        ch: int = 32,
        ch_mult: Sequence[int] = (1, 2, 4, 4),
    ):
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        if len(ch_mult) < 1 or min(ch_mult) < 1:
            raise ValueError(f"ch_mult must be a non-empty list of positive integers, got {ch_mult}")
        for m in (1, *ch_mult):
            if (ch * m) % 16:
                raise ValueError(f"ch * ch_mult must be divisible by 16 (GroupNorm groups); got ch={ch}, mult={m}")
        self.in_channels, self.out_channels, self.ch, self.ch_mult = in_channels, out_channels, ch, ch_mult
        depth = len(ch_mult)
        # widths[0] is the stem, widths[i] the output of encoder block i (release: x0 .. x4).
        widths = [ch] + [ch * m for m in ch_mult]

        self.input_blocks = nn.Conv2d(in_channels, ch, kernel_size=3, padding=1)
        for i in range(1, depth + 1):
            self.add_module(f"conv{i}_0", ResAttBlock(widths[i - 1], widths[i]))
        # Decoder: block conv{i}_{depth-i} fuses encoder feature i with the decoded feature from below.
        for i in range(depth - 1, -1, -1):
            self.add_module(f"conv{i}_{depth - i}", ResAttBlock(widths[i] + widths[i + 1], widths[i]))
        for i in range(depth - 1, -1, -1):
            self.add_module(f"convds{i}", output_head(widths[i], out_channels))
        self._initialise_weights()

    @property
    def level_names(self) -> list[str]:
        """Output names, coarsest first (``level3, level2, level1, out`` for four levels)."""
        return [level_name(i) for i in range(len(self.ch_mult) - 1, -1, -1)]

    def _initialise_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, levels: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Run the model; ``levels`` limits which heads are evaluated (inference needs only ``out``)."""
        depth = len(self.ch_mult)
        features = [self.input_blocks(x)]
        for i in range(1, depth + 1):
            features.append(getattr(self, f"conv{i}_0")(features[-1]))
        wanted = set(self.level_names if levels is None else levels)
        outputs: dict[str, torch.Tensor] = {}
        decoded = features[depth]
        for i in range(depth - 1, -1, -1):
            decoded = getattr(self, f"conv{i}_{depth - i}")(torch.cat([features[i], decoded], dim=1))
            if level_name(i) in wanted:
                outputs[level_name(i)] = getattr(self, f"convds{i}")(decoded)
        return outputs


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
