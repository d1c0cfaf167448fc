"""WDSR-A (Yu et al. 2018), the backbone STDO overfits per chunk; written from the description.

    x in [0, 1]  ->  x - 0.5  ->  head 3x3 (3 -> F)  ->  B blocks  ->  tail 3x3 (F -> 3 s^2)  --+--> PixelShuffle(s) + 0.5
                             \\->  skip 5x5 (3 -> 3 s^2) -------------------------------------/
    block: y = x + conv3x3(W F -> F)(ReLU(conv3x3(F -> W F)(x)))        (W = width multiplier)

Every conv is weight-normalised (``torch.nn.utils.parametrizations.weight_norm``) with biases 0 and
the magnitude ``g`` initialised to 1 (head, tail, skip), 2 (each block's first conv) and
``1 / sqrt(B)`` (each block's second conv). Defaults (B = 16, F = 32, W = 4) give 1,190,100
parameters at x2 counting ``g``.

``bicubic_residual=True`` adds a bicubic upsampling of the input to the output instead of the
learned 5x5 skip's job alone: a variant (not in the paper) that reaches useful quality in a few
hundred steps, which the CPU presets need; it is off by default. With it, the tail's and skip's
magnitudes start at 0, so an untrained model is exactly bicubic and training only adds detail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _conv(c_in: int, c_out: int, kernel: int, g: float) -> nn.Conv2d:
    conv = weight_norm(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2))
    with torch.no_grad():
        conv.parametrizations.weight.original0.fill_(g)  # the magnitude g (original1 is the direction v)
        conv.bias.zero_()
    return conv


class ChannelModulation(nn.Module):
    """CaFM's content-aware feature modulation (Liu et al., ICCV 2021), from the description: one
    channel-wise linear map per chunk (a 1x1 depthwise convolution: a scale and a bias per channel),
    starting at the identity. Each sample of a batch takes its own chunk's map."""

    def __init__(self, chunks: int, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(chunks, channels))
        self.bias = nn.Parameter(torch.zeros(chunks, channels))

    def forward(self, x: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        return x * self.scale[chunk, :, None, None] + self.bias[chunk, :, None, None]


class Block(nn.Module):
    def __init__(self, features: int, width_multiplier: int, num_blocks: int, chunks: int = 0):
        super().__init__()
        self.expand = _conv(features, features * width_multiplier, 3, g=2.0)
        self.reduce = _conv(features * width_multiplier, features, 3, g=1.0 / math.sqrt(num_blocks))
        # CaFM: a modulation after each of the block's convolutions
        self.mod_expand = ChannelModulation(chunks, features * width_multiplier) if chunks else None
        self.mod_reduce = ChannelModulation(chunks, features) if chunks else None

    def forward(self, x: torch.Tensor, chunk: torch.Tensor | None = None) -> torch.Tensor:
        h = self.expand(x)
        if self.mod_expand is not None:
            h = self.mod_expand(h, chunk)
        h = self.reduce(F.relu(h))
        if self.mod_reduce is not None:
            h = self.mod_reduce(h, chunk)
        return x + h


class WDSR(nn.Module):
    """``chunks > 0``: CaFM's model, one WDSR shared by every chunk with a ``ChannelModulation`` per
    chunk after the head and after each block convolution; ``forward(x, chunk)`` then names each
    sample's chunk (an int for the whole batch, or a [B] tensor)."""

    def __init__(self, scale: int, num_blocks: int = 16, num_residual_units: int = 32, width_multiplier: int = 4, bicubic_residual: bool = False,
                 chunks: int = 0):
        super().__init__()
        self.scale = scale
        self.bicubic_residual = bicubic_residual
        self.chunks = chunks
        out = 3 * scale * scale
        self.head = _conv(3, num_residual_units, 3, g=1.0)
        self.mod_head = ChannelModulation(chunks, num_residual_units) if chunks else None
        self.body = nn.Sequential(*[Block(num_residual_units, width_multiplier, num_blocks, chunks) for _ in range(num_blocks)])
        self.tail = _conv(num_residual_units, out, 3, g=1.0)
        self.skip = _conv(3, out, 5, g=1.0)
        self.shuffle = nn.PixelShuffle(scale)
        if bicubic_residual:  # start exactly at bicubic: zero magnitude on the two output convs (their g still learns)
            with torch.no_grad():
                self.tail.parametrizations.weight.original0.zero_()
                self.skip.parametrizations.weight.original0.zero_()

    def forward(self, x: torch.Tensor, chunk: int | torch.Tensor | None = None) -> torch.Tensor:
        """[B, 3, h, w] in [0, 1] -> [B, 3, s h, s w] (not clamped; the input is not modified)."""
        if self.chunks and chunk is None:
            raise ValueError("a modulated (CaFM) model needs the chunk of its input")
        if self.chunks:
            chunk = torch.as_tensor(chunk, device=x.device).expand(len(x))
        centred = x - 0.5
        h = self.head(centred)
        if self.mod_head is not None:
            h = self.mod_head(h, chunk)
        for block in self.body:
            h = block(h, chunk)
        y = self.shuffle(self.tail(h) + self.skip(centred)) + 0.5
        if self.bicubic_residual:
            y = y + bicubic_upsample(x, self.scale) - 0.5
        return y


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Per-patch bicubic upsampling (torch's, a = -0.75 as in Pillow's and OpenCV's bicubic), not clamped."""
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(cfg_model, scale: int, chunks: int = 0, num_residual_units: int | None = None) -> WDSR:
    """A WDSR from the ``model`` config group (CaFM's with ``chunks``; another width with ``num_residual_units``)."""
    return WDSR(
        scale,
        num_blocks=cfg_model.num_blocks,
        num_residual_units=num_residual_units or cfg_model.num_residual_units,
        width_multiplier=cfg_model.width_multiplier,
        bicubic_residual=cfg_model.bicubic_residual,
        chunks=chunks,
    )


def equal_parameter_width(cfg_model, scale: int, chunks: int) -> int:
    """The widest CaFM backbone (features) whose parameters, modulations included, stay within those
    of ``chunks`` separate models of the configured width: CaFM at STDO's parameter count."""
    budget = chunks * count_parameters(build(cfg_model, scale))
    width = int(cfg_model.num_residual_units)
    while count_parameters(build(cfg_model, scale, chunks, width + 1)) <= budget:
        width += 1
    return width


class ChunkView(nn.Module):
    """One chunk's upscaler of a CaFM model (the shared weights with that chunk's modulation), so it
    routes like one of STDO's chunk models."""

    def __init__(self, model: WDSR, chunk: int):
        super().__init__()
        self.model, self.chunk = model, chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.chunk)
