"""SEANet encoder and decoder: Mimi's convolutional front and back ends, all causal and streamable.

Encoder: waveform [B, 1, T] -> latent [B, D, T / hop] (hop = prod(ratios) = 960 for Mimi, i.e. 25 Hz).
Decoder: latent [B, D, L] -> waveform [B, 1, L * hop].
Each stage is a residual block (ELU, conv k=3 to half width, ELU, conv k=1 back, identity skip) and a strided
(transposed) conv of kernel 2 * stride that doubles (halves) the channels. Weight norm is folded in the
released weights, so these are plain convolutions. `init_weights()` re-initialises every conv (meta-device builds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from openmoshi.nn.conv import CausalConvBase, StreamingConv1d, StreamingConvTranspose1d


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, CausalConvBase):
            m.init_weights()


@dataclass
class SEANetConfig:
    channels: int = 1  # audio channels
    dimension: int = 512  # latent channels
    n_filters: int = 64  # width after the first conv; doubles at every encoder stage
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder order; the encoder applies them reversed
    kernel_size: int = 7  # first conv
    residual_kernel_size: int = 3
    last_kernel_size: int = 3

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @classmethod
    def mimi(cls) -> SEANetConfig:
        return cls()

    @classmethod
    def tiny(cls) -> SEANetConfig:
        return cls(dimension=32, n_filters=4, ratios=(4, 3, 2))


class ResidualBlock(nn.Module):
    """x + conv2(elu(conv1(elu(x)))): [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        hidden = channels // 2
        self.conv1 = StreamingConv1d(channels, hidden, kernel_size)
        self.conv2 = StreamingConv1d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # In-place ELU on the conv's fresh output saves an allocation per call (the skip keeps x intact).
        return x + self.conv2(F.elu(self.conv1(F.elu(x)), inplace=True))


class EncoderStage(nn.Module):
    """Residual block at width C, then ELU and a strided conv to 2C: [B, C, T] -> [B, 2C, T / stride]."""

    def __init__(self, channels: int, stride: int, residual_kernel: int) -> None:
        super().__init__()
        self.residual = ResidualBlock(channels, residual_kernel)
        self.down = StreamingConv1d(channels, 2 * channels, 2 * stride, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.elu(self.residual(x), inplace=True))


class DecoderStage(nn.Module):
    """ELU, a transposed conv from C to C/2, then a residual block: [B, C, T] -> [B, C/2, T * stride]."""

    def __init__(self, channels: int, stride: int, residual_kernel: int) -> None:
        super().__init__()
        self.up = StreamingConvTranspose1d(channels, channels // 2, 2 * stride, stride=stride)
        self.residual = ResidualBlock(channels // 2, residual_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(self.up(F.elu(x, inplace=True)))  # x: the previous layer's fresh output


class SEANetEncoder(nn.Module):
    """[B, channels, T] -> [B, dimension, T / hop_length] (T a multiple of hop_length)."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        width = cfg.n_filters
        self.conv_in = StreamingConv1d(cfg.channels, width, cfg.kernel_size)
        stages = []
        for stride in reversed(cfg.ratios):
            stages.append(EncoderStage(width, stride, cfg.residual_kernel_size))
            width *= 2
        self.stages = nn.ModuleList(stages)
        self.conv_out = StreamingConv1d(width, cfg.dimension, cfg.last_kernel_size)

    def init_weights(self) -> None:
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(F.elu(x))


class SEANetDecoder(nn.Module):
    """[B, dimension, L] -> [B, channels, L * hop_length]. No final activation."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        self.conv_in = StreamingConv1d(cfg.dimension, width, cfg.kernel_size)
        stages = []
        for stride in cfg.ratios:
            stages.append(DecoderStage(width, stride, cfg.residual_kernel_size))
            width //= 2
        self.stages = nn.ModuleList(stages)
        self.conv_out = StreamingConv1d(width, cfg.channels, cfg.last_kernel_size)

    def init_weights(self) -> None:
        _init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(F.elu(x))
