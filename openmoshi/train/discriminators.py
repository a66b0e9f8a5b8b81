"""The multi-scale STFT discriminator (Mimi's only adversary): one 2-D conv net per STFT resolution.

Each sub-discriminator takes the complex STFT of the waveform (real and imaginary parts as 2 channels, so it sees
phase too) laid out [B, 2, frames, bins], and applies: a (3, 9) conv, `len(dilations)` (3, 9) convs strided 2 on
the frequency axis and dilated on the time axis, a (3, 3) conv, then a (3, 3) conv to one logit channel. LeakyReLU
0.2 between, weight norm on every conv (a stable adversary). Several window sizes see both fine time structure
and fine frequency structure.

Output: `DiscriminatorOutput(logits, features)`: logits a list (one [B, 1, frames, bins'] per scale), features a
list per scale of the hidden maps (for the feature-matching loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass
class DiscriminatorConfig:
    filters: int = 32
    n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128)  # window = n_fft, hop = n_fft // 4
    dilations: tuple[int, ...] = (1, 2, 4)
    negative_slope: float = 0.2
    use_weight_norm: bool = True

    def __post_init__(self) -> None:
        if self.filters < 1 or not self.n_ffts or any(n < 4 for n in self.n_ffts):
            raise ValueError(f"bad discriminator config: filters {self.filters}, n_ffts {self.n_ffts}")

    @classmethod
    def mimi(cls) -> DiscriminatorConfig:
        return cls()

    @classmethod
    def tiny(cls) -> DiscriminatorConfig:
        return cls(filters=4, n_ffts=(256, 128, 64), dilations=(1, 2))


@dataclass
class DiscriminatorOutput:
    logits: list[Tensor]  # per scale [B, 1, frames, bins']
    features: list[list[Tensor]]  # per scale, the hidden maps


class STFTDiscriminator(nn.Module):
    """One resolution: wav [B, 1, T] -> (logits [B, 1, frames, bins'], hidden maps)."""

    def __init__(self, n_fft: int, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = cfg.filters
        wrap = weight_norm if cfg.use_weight_norm else (lambda m: m)
        layers = [nn.Conv2d(2, c, (3, 9), padding=(1, 4))]
        for d in cfg.dilations:
            layers.append(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        layers.append(nn.Conv2d(c, c, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(wrap(m) for m in layers)
        self.out = wrap(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))
        self.act = nn.LeakyReLU(cfg.negative_slope)

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = wav.reshape(-1, wav.shape[-1]).float()
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window.to(x.device), center=True,
                          pad_mode="constant", normalized=True, return_complex=True)  # [B, bins, frames]
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, bins]
        h = h.to(self.out.weight.dtype)
        features = []
        for conv in self.convs:
            h = self.act(conv(h))
            features.append(h)
        return self.out(h), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Sub-discriminators at each `n_ffts` size: wav [B, 1, T] -> DiscriminatorOutput."""

    def __init__(self, cfg: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DiscriminatorConfig()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, self.cfg) for n in self.cfg.n_ffts)

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"discriminator input must be [B, 1, T], got {tuple(wav.shape)}")
        logits, features = [], []
        for d in self.discriminators:
            lo, fe = d(wav)
            logits.append(lo)
            features.append(fe)
        return DiscriminatorOutput(logits, features)
